#!/usr/bin/env bash
# The OpenAPI description against the real server: `schemathesis run --checks all` on the
# document the server serves (GET /api/openapi.json), which must report no failure.
#
#   tests/schemathesis/run.sh [path/to/netrev]    # default: ${CARGO_TARGET_DIR:-target}/debug/netrev
#
# Environment: ST_MAX_EXAMPLES (test cases per operation and phase, default 100), ST_SEED (to
# replay a run), ST_REPORT_DIR (where schemathesis writes its JUnit report, default
# ${CARGO_TARGET_DIR:-target}/schemathesis).
#
# The server runs as in production with every feature on, so each route is tested as a client
# meets it: an API key (the query routes need `Authorization: Bearer`), a postback token, a
# secret for each of the four IPN networks (else their routes are 404), and the rate limit
# raised far above what the run sends (the limit itself, 429, is documented and tested in
# tests/integration). The credentials go to schemathesis through its configuration
# (schemathesis.toml, by the name of each security scheme), so its `ignored_auth` check also
# removes or spoils them and expects 401. `hooks.py` says which refusals of schema-valid
# requests are documented rules that JSON Schema cannot express (read it: the list is short).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN="${1:-${CARGO_TARGET_DIR:-target}/debug/netrev}"
REPORT_DIR="${ST_REPORT_DIR:-${CARGO_TARGET_DIR:-target}/schemathesis}"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-100}"
HERE="$PWD/tests/schemathesis"

tmp="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

export ST_API_KEY="st-api-key-$RANDOM$RANDOM"
export ST_POSTBACK_TOKEN="st-postback-token-$RANDOM$RANDOM"
NETREV_LOG=warn "$BIN" serve \
  --data "$tmp/data" \
  --listen 127.0.0.1:0 \
  --api-key "$ST_API_KEY" \
  --postback-token "$ST_POSTBACK_TOKEN" \
  --ipn-clickbank-secret st-clickbank-secret \
  --ipn-jvzoo-secret st-jvzoo-secret \
  --ipn-warriorplus-secret st-warriorplus-secret \
  --ipn-digistore24-secret st-digistore24-secret \
  --rate-limit-per-ip 1000000 --rate-limit-burst 1000000 \
  > "$tmp/stdout" 2> "$tmp/stderr" &
server=$!

# The first line of stdout names the bound port.
base=""
for _ in $(seq 1 300); do
  base="$(sed -n 's#^netrev listening on \(http://[^ ]*\)$#\1#p' "$tmp/stdout" | head -n 1)"
  [ -n "$base" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    echo "netrev serve exited before listening:" >&2
    cat "$tmp/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "netrev serve did not print its address within 30 s" >&2
  exit 1
fi

# /api/stats answers 503 while the live stats are first built: wait for them.
ready=""
for _ in $(seq 1 600); do
  if python3 -c 'import json, sys, urllib.request
sys.exit(0 if json.load(urllib.request.urlopen(sys.argv[1] + "/api/health", timeout=5))["live"]["ready"] else 1)' "$base" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "the live stats were not ready within 60 s" >&2
  exit 1
fi

seed=()
if [ -n "${ST_SEED:-}" ]; then
  seed=(--seed "$ST_SEED")
fi
mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"
status=0
(
  # schemathesis.toml names hooks.py relative to itself.
  cd "$HERE"
  python3 -m schemathesis.cli run "$base/api/openapi.json" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --workers 1 \
    --no-color \
    --report junit --report-junit-path "$REPORT_DIR/junit.xml" \
    "${seed[@]}"
) || status=$?

if ! kill -0 "$server" 2>/dev/null; then
  echo "netrev serve died during the run:" >&2
  tail -n 50 "$tmp/stderr" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "schemathesis reported failures (exit $status); the server's log:" >&2
  tail -n 50 "$tmp/stderr" >&2
fi
exit "$status"
