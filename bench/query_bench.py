"""/api/stats benchmark: the stats table for 90 days grouped by source, from netrev's live
stats, against DuckDB computing the same table from the raw Parquet files in the same run.

Usage: python3 bench/query_bench.py [--clicks N] [--requests N]   (bench/query runs it)

1. `netrev generate` writes N clicks (10M) over 90 days into bench-data/query-N (kept).
2. `netrev serve` (release) starts on it; once its live stats are built, N requests of
   `/api/stats?from=…&to=…&group_by=source` are timed one after another (p50, p99).
3. DuckDB runs the job files of sql/ (as views, translated like bench/recompute) over the raw
   files and aggregates stats_hourly by source for the same days, five times (p50).
4. Both answers must agree (clicks, gross revenue, refund amount per source).
"""

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import time
from datetime import date, timedelta
from decimal import Decimal

import duckdb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recompute_bench import ROOT, duckdb_jobs, netrev_binary  # noqa: E402


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clicks", type=int, default=10_000_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5, help="DuckDB runs")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--data", help="an existing generated data root (default: bench-data/query-N)")
    ap.add_argument("--bin", help="the netrev binary (default: a release build)")
    args = ap.parse_args()
    netrev = netrev_binary(args.bin)
    data = args.data or os.path.join(ROOT, "bench-data", f"query-{args.clicks}")
    if not args.data and not os.path.exists(os.path.join(data, ".complete")):
        subprocess.run(["rm", "-rf", data], check=True)
        subprocess.run([netrev, "generate", "--data", data, "--clicks", str(args.clicks), "--seed", "3"], check=True)
        open(os.path.join(data, ".complete"), "w").close()
    today = date.today()
    first = today - timedelta(days=89)
    path = f"/api/stats?from={first}&to={today}&group_by=source&columns=clicks,gross_revenue,refund_amount,refund_rate,net_revenue"

    env = dict(os.environ, NETREV_LOG="warn")
    server = subprocess.Popen([netrev, "serve", "--data", data, "--listen", "127.0.0.1:0", "--rate-limit-per-ip", "0",
                               "--recompute-interval-secs", "0"], stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = server.stdout.readline()
        host, port = re.search(r"http://([\d.]+):(\d+)", line).groups()
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        started = time.time()
        while True:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if r.status == 200:
                break
            if time.time() - started > 600:
                raise SystemExit(f"serve not ready: {r.status} {body[:200]!r}")
            time.sleep(0.5)
        ready = time.time() - started
        latencies = []
        for _ in range(args.requests):
            t = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            latencies.append((time.perf_counter() - t) * 1000)
            assert r.status == 200, body
        ours = {row["source"]: (row["clicks"], Decimal(row["gross_revenue"]), Decimal(row["refund_amount"]))
                for row in json.loads(body)["rows"]}
        with open(f"/proc/{server.pid}/status") as f:
            peak_rss = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) // 1024
    finally:
        server.terminate()
        server.wait()

    con = duckdb_jobs(data, materialize=False)
    q = f"""SELECT source, sum(clicks), sum(gross_revenue), sum(refund_amount)
            FROM stats_hourly WHERE date BETWEEN DATE '{first}' AND DATE '{today}'
            GROUP BY source ORDER BY source"""
    duck_times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        rows = con.execute(q).fetchall()
        duck_times.append((time.perf_counter() - t) * 1000)
    theirs = {s: (int(c), Decimal(g), Decimal(r)) for s, c, g, r in rows}

    p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
    duck = pct(duck_times, 0.5)
    print(f"machine: {os.cpu_count()} cores; DuckDB {duckdb.__version__}; {args.clicks:,} clicks over 90 days; "
          f"serve ready after {ready:.0f} s")
    print()
    print("| 90 days of the stats table by source | p50 | p99 |")
    print("|---|---|---|")
    print(f"| netrev `/api/stats` (live stats), {args.requests} requests | {p50:.1f} ms | {p99:.1f} ms |")
    print(f"| DuckDB from the raw Parquet files (the sql/ jobs as views), {args.runs} runs | {duck:.0f} ms | {max(duck_times):.0f} ms |")
    print()
    print(f"p50 target <= 20 ms: {'met' if p50 <= 20 else 'MISSED'}; "
          f"DuckDB / netrev: {duck / p50:.0f}x (target >= 20x: {'met' if duck / p50 >= 20 else 'MISSED'})")
    print(f"same answer: {ours == theirs}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clicks": args.clicks, "netrev_p50_ms": p50, "netrev_p99_ms": p99,
                       "duckdb_p50_ms": duck, "duckdb_max_ms": max(duck_times),
                       "duckdb_version": duckdb.__version__, "ready_s": ready,
                       "peak_rss_mib": peak_rss,
                       "same_answer": ours == theirs}, f)
    sys.exit(0 if ours == theirs else 1)


if __name__ == "__main__":
    main()
