"""Prints the benchmark suite's results table (bench/run) from the JSON files its parts wrote.

Usage: python3 bench/report.py DIR   (DIR holds ingest.json, redirect.json, recompute.json, live.json,
query.json, month.json)
"""

import json
import os
import platform
import subprocess
import sys


def load(d, name):
    path = os.path.join(d, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def verdict(ok):
    return "met" if ok else "**MISSED**"


def main():
    d = sys.argv[1]
    smoke = "--smoke" in sys.argv[2:]
    ingest, recompute, live, query, month, redirect = (
        load(d, n) for n in ("ingest", "recompute", "live", "query", "month", "redirect"))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    versions = []
    if recompute:
        versions.append(f"DuckDB {recompute['duckdb_version']}")
    pg = (ingest or {}).get("pg_version") or (recompute or {}).get("pg_version")
    if pg:
        versions.append(f"PostgreSQL {pg}")
    print(f"machine: {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.machine()}; "
          f"{', '.join(versions)}; netrev {rev}")
    if smoke:
        print()
        print("**Smoke run** (debug build, tiny sizes): it checks that every part runs and that the engines "
              "agree; its figures say nothing about the targets.")
    print()
    print("| # | measure | netrev | baseline (same run) | ratio | target | |")
    print("|---|---|---|---|---|---|---|")
    if ingest:
        r = ingest["netrev_rps"] / ingest["bare_rps"]
        print(f"| 1 | ingest: durable postbacks/s (p99 ack) | {ingest['netrev_rps']:,.0f} ({ingest['netrev_p99_ms']} ms) "
              f"| bare axum `{{\"ok\":true}}`: {ingest['bare_rps']:,.0f} ({ingest['bare_p99_ms']} ms) | {r:.2f}× | ≥ 0.5× | {verdict(r >= 0.5)} |")
        if ingest.get("pg_rps"):
            r = ingest["netrev_rps"] / ingest["pg_rps"]
            print(f"| 1 | ingest vs PostgreSQL, a row per postback (pgbench, synchronous_commit=on) | {ingest['netrev_rps']:,.0f} "
                  f"| {ingest['pg_rps']:,.0f} ({ingest['pg_p99_ms']} ms) | {r:.1f}× | ≥ 5× | {verdict(r >= 5)} |")
    if redirect:
        r = redirect["netrev_rps"] / redirect["bare_rps"]
        ok = r >= 0.5 and redirect["netrev_p99_ms"] < 5
        print(f"| 1 | tracking-link visits /r/{{slug}}: durable click + 302 per s (p99) | {redirect['netrev_rps']:,.0f} ({redirect['netrev_p99_ms']} ms) "
              f"| bare axum 302: {redirect['bare_rps']:,.0f} ({redirect['bare_p99_ms']} ms) | {r:.2f}× | ≥ 0.5×, p99 < 5 ms | {verdict(ok)} |")
        print(f"| 1 | tracking-link visits, paced below saturation: p50 (p99) | {redirect['paced_rps']:,.0f}/s: {redirect['paced_p50_ms']} ms "
              f"({redirect['paced_p99_ms']} ms) | - | - | p99 < 5 ms | {verdict(redirect['paced_p99_ms'] < 5)} |")
    if recompute:
        n = f"{recompute['clicks']:,} clicks"
        r = recompute["netrev_s"] / recompute["duckdb_s"]
        print(f"| 2 | recompute, {n} (all derived tables) | {recompute['netrev_s']:.1f} s "
              f"| DuckDB, same SQL, same files: {recompute['duckdb_s']:.1f} s | {r:.2f}× the time | ≤ 1.0× | {verdict(r <= 1.0)} |")
        if recompute.get("pg_s"):
            r = recompute["pg_s"] / recompute["netrev_s"]
            print(f"| 2 | recompute vs PostgreSQL (same SQL, loaded and indexed) | {recompute['netrev_s']:.1f} s "
                  f"| {recompute['pg_s']:.1f} s | {r:.1f}× faster | ≥ 10× | {verdict(r >= 10)} |")
        inc = recompute.get("incremental")
        if inc:
            print(f"| 2 | scheduled recompute by difference after the newest day of {n} "
                  f"({inc['rebuilt_click_ids']:,} click IDs, {inc['rebuilt_visitors']:,} visitors rebuilt) "
                  f"| {inc['incremental_secs']:.2f} s | full recompute: {inc['full_secs']:.2f} s "
                  f"| {100 * inc['ratio']:.1f}% | ≤ 10% | {verdict(inc['ratio'] <= 0.10 and inc['equal'])} |")
    if live:
        s, l = live["small"], live["large"]
        print(f"| 3 | incremental: apply {l['batch_events']:,} events, {l['history_clicks']:,} vs {s['history_clicks']:,} clicks of history "
              f"| {l['apply_ms']:.0f} ms | {s['apply_ms']:.0f} ms | {live['ratio']:.2f}× | ≤ 1.5× | {verdict(live['ratio'] <= 1.5)} |")
        if "p50_ms" in live:
            print(f"| 3 | refund to visible in /api/stats under {live['rate']:,.0f} postbacks/s | p50 {live['p50_ms']} ms, p99 {live['p99_ms']} ms "
                  f"| - | - | within 1 s | {verdict(live['p99_ms'] <= 1000 and live['misses'] == 0)} |")
        if "large_restored_s" in live:
            restored, full = live["large_restored_s"], live["large_ready_s"]
            print(f"| 3 | restart to serving stats, {l['history_clicks']:,} clicks: from the checkpoint (peak RSS) "
                  f"| {restored} s ({live['large_restored_peak_rss_mib']:,} MiB) "
                  f"| full recompute: {full} s ({live['large_peak_rss_mib']:,} MiB) | {restored / max(full, 1e-9):.3f} "
                  f"| ≤ 5 s | {verdict(restored <= 5)} |")
        if "unknown_growth_mib" in live:
            g, u, n = live["unknown_growth_mib"], live["unknown_growth_uncapped_mib"], live["unknown_recorded"]
            f, fu = live["unknown_further_mib"], live["unknown_further_uncapped_mib"]
            z = live["unknown_growth_nothing_held_mib"]
            print(f"| 3 | RSS growth from {n:,} conversions of made-up click IDs (each further as many; holding none of them: {z:,} MiB) "
                  f"| {g:,} MiB ({f:.0f} MiB) | without the cap: {u:,} MiB ({fu:.0f} MiB) | {g / max(u, 1):.2f} "
                  f"| ≤ 64 MiB per 100,000 | {verdict(g * 100_000 <= 64 * max(n, 1))} |")
    if query:
        r = query["duckdb_p50_ms"] / query["netrev_p50_ms"]
        ok = query["netrev_p50_ms"] <= 20 and r >= 20 and query["same_answer"]
        print(f"| 4 | /api/stats, 90 days by source, {query['clicks']:,} clicks: p50 (p99) | {query['netrev_p50_ms']:.1f} ms ({query['netrev_p99_ms']:.1f} ms) "
              f"| DuckDB from raw Parquet: {query['duckdb_p50_ms']:,.0f} ms | {r:,.0f}× faster | p50 ≤ 20 ms, ≥ 20× | {verdict(ok)} |")
    if month:
        m = month
        days = f"{m['days']} server days, {m['clicks']:,} clicks streamed at {m['speed']}×"
        print(f"| 5 | month of operation ({days}): raw files per table-day, max (mean) "
              f"| {m['streamed_max_files_per_table_day']} ({m['streamed_mean_files_per_table_day']}) "
              f"| bulk: {m['bulk_max_files_per_table_day']} | - | ≤ 48 | {verdict(m['streamed_max_files_per_table_day'] <= 48)} |")
        print(f"| 5 | month: full recompute, streamed vs the same rows in bulk | {m['streamed_recompute_secs']} s "
              f"| {m['bulk_recompute_secs']} s | {m['recompute_ratio']:.2f}× | ≤ 1.2× | {verdict(m['recompute_ratio'] <= 1.2)} |")
        r = m["streamed_restart_secs"] / max(m["bulk_restart_secs"], 1e-9)
        print(f"| 5 | month: restart to serving stats (peak RSS) | {m['streamed_restart_secs']} s ({m['streamed_restart_peak_rss_mib']} MiB) "
              f"| {m['bulk_restart_secs']} s ({m['bulk_restart_peak_rss_mib']} MiB) | {r:.2f}× | - | |")
        if m.get("passes_by_difference"):
            print(f"| 5 | month: serve's scheduled recomputes by difference ({m['passes_by_difference']} runs), median (max) "
                  f"| {m['pass_median_secs']} s ({m['pass_max_secs']} s) | full recompute: {m['streamed_recompute_secs']} s "
                  f"| {m['pass_ratio']:.3f} | - | |")
    rss = []
    if ingest:
        rss.append(f"ingest {ingest['netrev_peak_rss_mib']:,} MiB")
    if redirect:
        rss.append(f"redirects {redirect['netrev_peak_rss_mib']:,} MiB")
    if live:
        rss.append(f"{live['large']['history_clicks']:,}-click history {live['large_peak_rss_mib']:,} MiB")
        rss.append(f"live load {live['live_peak_rss_mib']:,} MiB")
    if query:
        rss.append(f"query ({query['clicks']:,} clicks) {query['peak_rss_mib']:,} MiB")
    if rss:
        print(f"| 6 | peak RSS of `netrev serve` | {'; '.join(rss)} | - | - | - | |")
    same = all(x is None or x.get(k, True) for x, k in ((recompute, "same_totals"), (query, "same_answer")))
    print()
    print(f"all engines agree on the numbers: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
