# Helpers of the benchmarks that load a server with wrk (bench/ingest, bench/redirect):
# sourced by scripts that set WORK (a scratch directory) and PIDS (servers to kill at exit).

# Starts a server in the background; sets PID and URL (from its "listening on" line).
start() {
  "$@" > "$WORK/out" 2> "$WORK/err" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do
    URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/out" | head -1)
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  echo "server did not start:" >&2; cat "$WORK/err" >&2; exit 1
}

# wrk's report in FILE as "rps p50_ms p99_ms answers_of_400_and_above".
wrk_summary() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*" + label + r"%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
print(f"{rps:.0f} {ms('50'):.2f} {ms('99'):.2f} {bad.group(1) if bad else 0}")
PY
}

peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

# Whether the number $1 is greater than $2.
better() { python3 -c "import sys; sys.exit(0 if $1 > $2 else 1)"; }
