"""A month of operation: raw files, recompute and restart of a server that ran for weeks,
beside the same rows loaded in bulk.

Usage: python3 bench/month.py [--days 30] [--clicks-per-day 20000] [--speed 1440]
                              [--bin PATH] [--json FILE]

1. Starts `netrev serve` on an empty data root with its default settings, except its clock,
   which runs `--speed` times as fast (`--clock-speed`, a benchmark-only flag: 1440 makes a
   day a minute, so the buffer is flushed at every :00 and :30 of the server's time, 1.25 s
   apart), its scheduled recompute every real second (the default 15 minutes is in real time:
   at 1440x a second is 24 server minutes), and no per-address rate limit (the load comes
   from one address). Each scheduled recompute runs by difference and then compacts the days
   that have closed, as in production.
2. Feeds it `--days` days of trickle and bursts: each server day a quiet night (a tenth of the
   day's clicks), a working day with two bursts at 20 times the quiet rate, and an evening,
   as `netrev generate --replay` postbacks (clicks, conversions, refunds, retried copies).
3. Stops it (the last flush) and counts the raw files of every table and day.
4. Makes the bulk twin: a copy of the root whose every table-day partition is one file
   (`netrev compact` with an unbounded row count): the same rows, as an import would write
   them.
5. On both: `netrev recompute` (median of --repeat runs), and `netrev serve` restarted until
   `/api/stats` answers, with its peak RSS (without the live state's checkpoint, which the
   bulk twin does not have: a full recompute each).
6. From the fed server's log: the time of its scheduled recomputes by difference (median, and
   the largest), against the full recompute of step 5.

Prints a markdown table; every figure is measured in this run.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary(given):
    if given:
        return given
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "netrev")


class Serve:
    """A `netrev serve` on `data`, listening on a port of its own."""

    def __init__(self, bin_path, data, extra=(), log=None):
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [bin_path, "serve", "--data", data, "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, "NETREV_LOG": "warn,netrev_live=info" if log else "warn",
                 "NO_COLOR": "1"},
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        prefix = "netrev listening on "
        if not line.startswith(prefix):
            raise SystemExit(f"netrev serve did not start: {line!r}")
        self.base = line[len(prefix):]

    def serving(self):
        try:
            with urllib.request.urlopen(self.base + "/api/stats", timeout=5) as r:
                return r.status == 200
        except Exception:
            return False

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=600)
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def passes(log):
    """Seconds of each scheduled recompute by difference in a serve log."""
    out = []
    with open(log) as f:
        for line in f:
            if "recompute by difference done" in line:
                m = re.search(r"secs=([0-9.]+)", line)
                if m:
                    out.append(float(m.group(1)))
    return out


def feed(bin_path, base, days, clicks_per_day, speed, seed):
    """Sends `days` server days of trickle and bursts; returns clicks sent and real seconds."""
    day_secs = 86400 / speed
    # (share of the day's time, share of its clicks): night, morning, burst, afternoon,
    # burst, evening. The bursts carry 20 times the night's rate.
    phases = [(0.33, 0.10), (0.17, 0.12), (0.02, 0.13), (0.25, 0.30), (0.02, 0.13), (0.21, 0.22)]
    sent = 0
    started = time.monotonic()
    for day in range(days):
        for i, (time_share, click_share) in enumerate(phases):
            clicks = max(int(clicks_per_day * click_share), 1)
            # Postbacks: a click each, plus about 6% conversions and refunds.
            rate = max(int(clicks * 1.06 / (day_secs * time_share)), 1)
            out = subprocess.run(
                [bin_path, "generate", "--clicks", str(clicks), "--days", "1",
                 "--seed", str(seed + day * 10 + i), "--replay", base,
                 "--rate", str(rate), "--concurrency", "16"],
                capture_output=True, text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"replay failed: {out.stderr}")
            sent += clicks
        print(f"  day {day + 1}/{days}: {sent} clicks sent, "
              f"{time.monotonic() - started:.0f}s", file=sys.stderr)
    return sent, time.monotonic() - started


def files_per_table_day(data):
    counts = {}
    for table in ("clicks", "conversions", "refunds"):
        per_day = Counter()
        top = os.path.join(data, "events", table)
        for part in sorted(os.listdir(top)) if os.path.isdir(top) else []:
            names = os.listdir(os.path.join(top, part))
            per_day[part] = sum(1 for n in names if n.endswith(".parquet"))
        counts[table] = per_day
    return counts


def recompute_secs(bin_path, data, repeat):
    times = []
    for _ in range(repeat):
        t = time.monotonic()
        subprocess.run([bin_path, "recompute", "--data", data], check=True,
                       capture_output=True, env={**os.environ, "NETREV_LOG": "warn"})
        times.append(time.monotonic() - t)
    return statistics.median(times)


def restart(bin_path, data):
    """Seconds from starting serve until /api/stats answers, and its peak RSS then. Without the
    live state's checkpoint (the bulk twin has none): both restarts recompute in full, which is
    what the raw files' number weighs on; a restart from a checkpoint is bench/live's."""
    for name in ("live.checkpoint", "recompute.seen"):
        path = os.path.join(data, "wal", name)
        if os.path.exists(path):
            os.remove(path)
    t = time.monotonic()
    server = Serve(bin_path, data)
    while not server.serving():
        if server.proc.poll() is not None:
            raise SystemExit("serve exited during the restart")
        time.sleep(0.05)
    secs = time.monotonic() - t
    rss = server.peak_rss_mib()
    server.stop()
    return secs, rss


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--clicks-per-day", type=int, default=20000)
    p.add_argument("--speed", type=int, default=1440)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bin")
    p.add_argument("--json")
    p.add_argument("--keep", help="keep the two data roots in this directory")
    a = p.parse_args()
    bin_path = binary(a.bin)
    work = a.keep or tempfile.mkdtemp(prefix="netrev-month-")
    streamed = os.path.join(work, "streamed")
    bulk = os.path.join(work, "bulk")
    for d in (streamed, bulk):
        shutil.rmtree(d, ignore_errors=True)
    try:
        print(f"== feeding {a.days} days at {a.speed}x", file=sys.stderr)
        log = os.path.join(work, "serve.log")
        server = Serve(bin_path, streamed, ["--clock-speed", str(a.speed),
                                            "--recompute-interval-secs", "1",
                                            "--rate-limit-per-ip", "0"], log=log)
        clicks, feed_secs = feed(bin_path, server.base, a.days, a.clicks_per_day, a.speed, 7)
        server.stop()
        files = files_per_table_day(streamed)
        pass_secs = passes(log)

        print("== bulk twin (netrev compact, one file per table-day)", file=sys.stderr)
        shutil.copytree(streamed, bulk, ignore=shutil.ignore_patterns("wal"))
        subprocess.run([bin_path, "compact", "--data", bulk, "--rows-per-file",
                        str(1 << 62)], check=True, capture_output=True)
        bulk_files = files_per_table_day(bulk)

        result = {"days": a.days, "speed": a.speed, "clicks": clicks,
                  "feed_secs": round(feed_secs, 1)}
        for name, counts in (("streamed", files), ("bulk", bulk_files)):
            per_day = [n for table in counts.values() for n in table.values()]
            result[f"{name}_max_files_per_table_day"] = max(per_day, default=0)
            result[f"{name}_mean_files_per_table_day"] = round(
                statistics.mean(per_day), 1) if per_day else 0
            result[f"{name}_files"] = sum(per_day)
        for name, data in (("streamed", streamed), ("bulk", bulk)):
            print(f"== recompute and restart: {name}", file=sys.stderr)
            result[f"{name}_recompute_secs"] = round(recompute_secs(bin_path, data, a.repeat), 2)
            secs, rss = restart(bin_path, data)
            result[f"{name}_restart_secs"] = round(secs, 2)
            result[f"{name}_restart_peak_rss_mib"] = round(rss)
        r = result
        ratio = r["streamed_recompute_secs"] / max(r["bulk_recompute_secs"], 1e-9)
        result["recompute_ratio"] = round(ratio, 2)
        result["passes_by_difference"] = len(pass_secs)
        if pass_secs:
            result["pass_median_secs"] = round(statistics.median(pass_secs), 3)
            result["pass_max_secs"] = round(max(pass_secs), 3)
            result["pass_ratio"] = round(statistics.median(pass_secs) / max(r["streamed_recompute_secs"], 1e-9), 3)
        print(f"\n{clicks} clicks over {a.days} server days, fed in {feed_secs:.0f} s "
              f"(clock {a.speed}x, default flush interval)\n")
        print("| | streamed (serve, default settings) | bulk (one file per table-day) | ratio | target |")
        print("|---|---|---|---|---|")
        print(f"| raw files per table-day, max (mean) | {r['streamed_max_files_per_table_day']} "
              f"({r['streamed_mean_files_per_table_day']}) | {r['bulk_max_files_per_table_day']} "
              f"({r['bulk_mean_files_per_table_day']}) | | <= 48: "
              f"{'met' if r['streamed_max_files_per_table_day'] <= 48 else 'MISSED'} |")
        print(f"| full recompute | {r['streamed_recompute_secs']} s | {r['bulk_recompute_secs']} s "
              f"| {ratio:.2f} | <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'} |")
        print(f"| restart to serving stats | {r['streamed_restart_secs']} s | "
              f"{r['bulk_restart_secs']} s | "
              f"{r['streamed_restart_secs'] / max(r['bulk_restart_secs'], 1e-9):.2f} | |")
        print(f"| peak RSS of that restart | {r['streamed_restart_peak_rss_mib']} MiB | "
              f"{r['bulk_restart_peak_rss_mib']} MiB | | |")
        if pass_secs:
            per = a.days * 1440 / len(pass_secs)
            print(f"| scheduled recompute by difference ({len(pass_secs)} runs, each after about "
                  f"{per:.0f} server minutes of events): median (max) | {r['pass_median_secs']} s "
                  f"({r['pass_max_secs']} s) | full: {r['streamed_recompute_secs']} s | "
                  f"{r['pass_ratio']:.3f} | |")
        else:
            print("| scheduled recompute by difference | no run in the log | | | |")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(result, f, indent=1)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
