"""Recompute benchmark: netrev's SQL jobs vs DuckDB running the same SQL on the same files.

Usage: python3 bench/recompute_bench.py [--clicks N] [--keep DIR] [--pg] [--json FILE] [--bin PATH]

1. Generates a history with DuckDB straight into a netrev data root (the raw tables' exact
   schema: Decimal(18,4) money, UTC microsecond timestamps, Hive date partitions).
2. Times `netrev recompute` (release build) on it.
3. Times DuckDB running the job files of sql/, translated where the dialects differ, with the
   same intermediate views computed once (as temporary tables) as netrev does, and writing
   the same four derived tables as Parquet.
4. With --pg: loads the same raw tables into PostgreSQL (started here on 127.0.0.1, indexed on
   the click and visitor IDs) and times the same job files there, translated to its dialect,
   computing the same intermediate tables once and the derived tables as tables.
5. Checks all produced the same totals, then prints a markdown table with the ratios.
6. Times serve's scheduled recompute by difference after one day of new events against a full
   recompute of the same history (`netrev bench-incremental`: the newest day of clicks, and
   every event dated then or later, is held back for the first, full run and then read by the
   pass by difference; the two passes' tables must be equal).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

import duckdb

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The job order, and which views a recompute computes once and keeps, as the binary does.
with open(os.path.join(ROOT, "pipeline", "src", "jobs.rs")) as _f:
    _jobs = re.findall(r'include_str!\("\.\./\.\./sql/(\w+)\.sql"\),\s*materialize: (true|false)', _f.read())
JOBS = [name for name, _ in _jobs]
MATERIALIZED = {name for name, m in _jobs if m == "true"}
ORDER = {
    "stats_hourly": "hour, source, campaign, link, country, device",
    "cohort_ltv": "cohort, age",
    "visitors": "vid",
    "refund_links": "cid, ts, txid, amount",
    "cohort_sources": "cohort, source, age",
}


def generate(data, clicks):
    """Deterministic history: clicks over 90 days; every 20th click converts (every 10th of
    those twice), every 10th conversion is refunded (every 5th refund a chargeback)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    start = "TIMESTAMPTZ '2026-08-01 00:00:00+00'"
    span_us = 90 * 86400 * 1_000_000
    con.execute(f"""
        CREATE TABLE c AS
        SELECT i,
               'c' || lpad(CAST(i AS VARCHAR), 10, '0') AS cid,
               'v' || CAST(hash(i) % {max(clicks // 5, 1)} AS VARCHAR) AS vid,
               {start} + to_microseconds(CAST(i * ({span_us} // {clicks}) AS BIGINT)) AS ts,
               ['fb', 'google', 'tiktok', 'native', 'email', 'push', 'bing'][i % 7 + 1] AS source,
               'camp' || CAST(i % 21 AS VARCHAR) AS campaign,
               'link' || CAST(i % 63 AS VARCHAR) AS link,
               ['US', 'DE', 'FR', 'BR', 'IN'][i % 5 + 1] AS country,
               ['mobile', 'desktop', 'tablet'][i % 3 + 1] AS device,
               CAST((i % 100) * 0.001 AS DECIMAL(18, 4)) AS cost
        FROM range({clicks}) t(i)
    """)
    for table, sql in {
        "clicks": """SELECT cid, vid, ts, source, campaign, link, country, device, cost,
                            CAST(NULL AS VARCHAR) AS sub1, CAST(NULL AS VARCHAR) AS sub2,
                            CAST(NULL AS VARCHAR) AS sub3, CAST(NULL AS VARCHAR) AS sub4,
                            CAST(NULL AS VARCHAR) AS sub5, CAST(ts AS DATE) AS date FROM c""",
        "conversions": """SELECT cid, ts + to_hours(CAST(i % 72 AS BIGINT)) AS ts,
                                 CAST(((i % 9000) + 100) / 100 AS DECIMAL(18, 4)) AS amount,
                                 't' || CAST(i AS VARCHAR) AS txid, 'sale' AS type,
                                 CAST(ts + to_hours(CAST(i % 72 AS BIGINT)) AS DATE) AS date
                          FROM c WHERE i % 20 = 0
                          UNION ALL
                          SELECT cid, ts + to_days(CAST(i % 9 + 1 AS INTEGER)) AS ts,
                                 CAST(19.99 AS DECIMAL(18, 4)) AS amount,
                                 'u' || CAST(i AS VARCHAR) AS txid, 'upsell' AS type,
                                 CAST(ts + to_days(CAST(i % 9 + 1 AS INTEGER)) AS DATE) AS date
                          FROM c WHERE i % 200 = 0""",
        "refunds": """SELECT cid, ts + to_days(CAST(i % 30 + 3 AS INTEGER)) AS ts,
                             CAST(((i % 9000) + 100) / 200 AS DECIMAL(18, 4)) AS amount,
                             'r' || CAST(i AS VARCHAR) AS txid,
                             CASE WHEN i % 1000 = 0 THEN 'chargeback' ELSE 'customer_request' END AS type,
                             't' || CAST(i AS VARCHAR) AS ref,
                             CAST(ts + to_days(CAST(i % 30 + 3 AS INTEGER)) AS DATE) AS date
                      FROM c WHERE i % 200 = 0""",
    }.items():
        out = os.path.join(data, "events", table)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        con.execute(f"COPY ({sql}) TO '{out}' (FORMAT PARQUET, PARTITION_BY (date), OVERWRITE_OR_IGNORE)")
    counts = {t: con.execute(f"SELECT count(*) FROM read_parquet('{data}/events/{t}/*/*.parquet')").fetchone()[0]
              for t in ["clicks", "conversions", "refunds"]}
    con.close()
    return counts


def duckdb_sql(text):
    """The job files in DuckDB's dialect: date_bin by a unit as date_trunc, no arrow_cast,
    timestamps to microseconds with epoch_us, integer division with //, exact decimal scaling
    by multiplication, and the ordered aggregate first_value(…) as first(…)."""
    text = re.sub(r"CAST\(((?:min|max)\(ts\)|[a-z]\.ts|(?:[a-z]\.)?first_seen) AS BIGINT\)", r"epoch_us(\1)", text)
    text = re.sub(r"arrow_cast\((\w+), '[^']*'\)", r"\1", text)
    text = re.sub(r"date_bin\(INTERVAL '1 (\w+)', ", r"date_trunc('\1', ", text)
    text = text.replace("/ 86400000000", "// 86400000000")
    text = text.replace("first_value(", "first(")
    text = text.replace("abs(n) / cohort_size", "abs(n) // cohort_size")
    text = text.replace("AS DECIMAL(18, 0)) / 10000", "AS DECIMAL(18, 0)) * 0.0001")
    return text


def netrev_binary(given):
    """The netrev binary to measure: `given` (--bin), else a release build made now."""
    if given:
        return given
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "netrev")


def pg_sql(text):
    """The job files in PostgreSQL's dialect: date_bin by a unit as date_trunc (PostgreSQL's
    date_bin wants an origin), no arrow_cast, timestamps to microseconds with extract(epoch),
    generate_series for range, and sums of counts cast back to bigint (PostgreSQL widens them
    to numeric, which would make the integer division of the LTV rounding exact division)."""
    text = re.sub(r"CAST\(((?:min|max)\(ts\)|[a-z]\.ts|(?:[a-z]\.)?first_seen) AS BIGINT\)",
                  r"CAST(extract(epoch FROM \1) * 1000000 AS BIGINT)", text)
    text = re.sub(r"arrow_cast\((\w+), '[^']*'\)", r"\1", text)
    text = re.sub(r"date_bin\(INTERVAL '1 (\w+)', ", r"date_trunc('\1', ", text)
    text = re.sub(r"unnest\(range\(0, (.*) \+ 1\)\)", r"generate_series(0, \1)", text)
    text = text.replace("sum(cohort_size) AS cohort_size", "CAST(sum(cohort_size) AS BIGINT) AS cohort_size")
    return text


def run_pg(pg, data, scratch):
    """Loads the raw tables of `data` into PostgreSQL (not timed), then times the jobs: returns
    (seconds, totals)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = {
        "clicks": "cid text NOT NULL, vid text NOT NULL, ts timestamptz NOT NULL, source text, "
                  "campaign text, link text, country text, device text, cost numeric(18,4) NOT NULL",
        "conversions": "cid text NOT NULL, ts timestamptz NOT NULL, amount numeric(18,4) NOT NULL, "
                       "txid text, type text",
        "refunds": "cid text NOT NULL, ts timestamptz NOT NULL, amount numeric(18,4) NOT NULL, "
                   "txid text, type text NOT NULL, ref text",
    }
    for t, cols in columns.items():
        names = ", ".join(c.split()[0] for c in cols.split(", "))
        csv = os.path.join(scratch, f"{t}.csv")
        con.execute(f"COPY (SELECT {names} FROM read_parquet('{data}/events/{t}/*/*.parquet', "
                    f"hive_partitioning = true)) TO '{csv}' (HEADER, DELIMITER ',')")
        os.chmod(csv, 0o644)
        pg.psql(f"CREATE TABLE {t} ({cols});")
        pg.psql(f"\\copy {t} FROM '{csv}' CSV HEADER")
        os.remove(csv)
    con.close()
    pg.psql("CREATE INDEX ON clicks (cid); CREATE INDEX ON clicks (vid); "
            "CREATE INDEX ON conversions (cid); CREATE INDEX ON refunds (cid); ANALYZE;")
    script = ["SET TimeZone = 'UTC';"]
    for job in JOBS:
        with open(os.path.join(ROOT, "sql", job + ".sql")) as f:
            text = pg_sql(f.read())
        if job in MATERIALIZED:
            text = text.replace("CREATE OR REPLACE VIEW", "CREATE TEMP TABLE")
            script.append(text)
            script.append(f"ANALYZE {job};")
        else:
            script.append(text)
    for table, order in ORDER.items():
        script.append(f"CREATE TABLE out_{table} AS SELECT * FROM {table} ORDER BY {order};")
    script.append("""SELECT (SELECT sum(clicks) FROM out_stats_hourly), (SELECT sum(gross_revenue) FROM out_stats_hourly),
        (SELECT sum(refund_amount) FROM out_stats_hourly), (SELECT sum(refunded_conversions) FROM out_stats_hourly),
        (SELECT sum(ltv) FROM out_cohort_ltv), (SELECT count(*) FROM out_visitors);""")
    t = time.time()
    out = pg.psql("\n".join(script)).strip().splitlines()[-1]
    secs = time.time() - t
    clicks, gross, refunded, refunded_conv, ltv, visitors = out.split("|")
    return secs, (int(clicks), Decimal(gross), Decimal(refunded), int(refunded_conv), Decimal(ltv), int(visitors))


def duckdb_jobs(data, materialize):
    """A DuckDB connection with the raw tables of `data` and every job of sql/ as a view (with
    `materialize`, the views netrev computes once as temporary tables, as netrev does)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for t in ["clicks", "conversions", "refunds"]:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/events/{t}/*/*.parquet', hive_partitioning = true)")
    for job in JOBS:
        with open(os.path.join(ROOT, "sql", job + ".sql")) as f:
            text = duckdb_sql(f.read())
        if materialize and job in MATERIALIZED:
            text = text.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP TABLE")
        con.execute(text)
    return con


def run_duckdb(data, out):
    con = duckdb_jobs(data, materialize=True)
    os.makedirs(out, exist_ok=True)
    for table, order in ORDER.items():
        target = os.path.join(out, table)
        if table == "stats_hourly":
            con.execute(f"COPY (SELECT * FROM {table} ORDER BY {order}) TO '{target}' (FORMAT PARQUET, PARTITION_BY (date))")
        else:
            os.makedirs(target, exist_ok=True)
            con.execute(f"COPY (SELECT * FROM {table} ORDER BY {order}) TO '{target}/part-0.parquet' (FORMAT PARQUET)")
    con.close()


def totals(stats_glob, ltv_glob, visitors_glob):
    con = duckdb.connect()
    row = con.execute(f"""SELECT
        (SELECT sum(clicks) FROM read_parquet('{stats_glob}')),
        (SELECT sum(gross_revenue) FROM read_parquet('{stats_glob}')),
        (SELECT sum(refund_amount) FROM read_parquet('{stats_glob}')),
        (SELECT sum(refunded_conversions) FROM read_parquet('{stats_glob}')),
        (SELECT sum(ltv) FROM read_parquet('{ltv_glob}')),
        (SELECT count(*) FROM read_parquet('{visitors_glob}'))""").fetchone()
    con.close()
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clicks", type=int, default=10_000_000)
    ap.add_argument("--keep", help="reuse/keep the generated data in this directory")
    ap.add_argument("--pg", action="store_true", help="also time PostgreSQL")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each engine, taking turns; the best counts")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--bin", help="the netrev binary (default: a release build)")
    ap.add_argument("--data", help="an existing data root (e.g. from netrev generate) instead of generating one")
    args = ap.parse_args()
    netrev = netrev_binary(args.bin)

    work = args.keep or tempfile.mkdtemp(prefix="netrev-bench-")
    data = args.data or os.path.join(work, "data")
    if not os.path.isdir(os.path.join(data, "events")):
        t = time.time()
        counts = generate(data, args.clicks)
        print(f"generated {counts} in {time.time() - t:.1f}s", file=sys.stderr)
    else:
        con = duckdb.connect()
        counts = {t: con.execute(f"SELECT count(*) FROM read_parquet('{data}/events/{t}/*/*.parquet')").fetchone()[0]
                  for t in ["clicks", "conversions", "refunds"]}

    # The engines take turns, --repeat times each, and each one's best time counts: on a
    # machine whose memory is ballooned, whichever runs first pays for faulting in fresh pages
    # (the same query can take twice as long), which would favour the other.
    out = os.path.join(work, "duckdb-tables")
    netrev_runs, duck_runs = [], []
    for _ in range(args.repeat):
        shutil.rmtree(os.path.join(data, "tables"), ignore_errors=True)
        t = time.time()
        subprocess.run([netrev, "recompute", "--data", data], check=True, stderr=subprocess.DEVNULL)
        netrev_runs.append(time.time() - t)
        shutil.rmtree(out, ignore_errors=True)
        t = time.time()
        run_duckdb(data, out)
        duck_runs.append(time.time() - t)
    netrev_s, duck_s = min(netrev_runs), min(duck_runs)
    runs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731

    ours = totals(f"{data}/tables/stats_hourly/*/*.parquet", f"{data}/tables/cohort_ltv/*.parquet",
                  f"{data}/tables/visitors/*.parquet")
    theirs = totals(f"{out}/stats_hourly/*/*.parquet", f"{out}/cohort_ltv/*.parquet",
                    f"{out}/visitors/*.parquet")
    same = ours == theirs
    pg_s, pg_version = None, None
    if args.pg:
        from pgserver import PgServer
        with PgServer() as pg:
            pg_version = pg.version
            pg_s, pg_totals = run_pg(pg, data, work)
        if pg_totals != ours:
            print(f"PostgreSQL totals differ: {pg_totals} vs {ours}", file=sys.stderr)
            same = False
    # The scheduled recompute by difference after the newest day (it rewrites the tables from
    # the same raw files, so it runs after the totals are read).
    out_inc = subprocess.run([netrev, "bench-incremental", "--data", data], check=True,
                             capture_output=True, text=True,
                             env={**os.environ, "NETREV_LOG": "warn"})
    incremental = json.loads(out_inc.stdout.strip().splitlines()[-1])
    same = same and incremental["equal"]
    ratio = netrev_s / duck_s
    print(f"machine: {os.cpu_count()} cores; DuckDB {duckdb.__version__}; "
          f"{counts['clicks']:,} clicks, {counts['conversions']:,} conversions, {counts['refunds']:,} refunds")
    print()
    print("| engine | full recompute (all derived tables) |")
    print("|---|---|")
    print(f"| netrev recompute (DataFusion 55) | {netrev_s:.1f} s (runs: {runs(netrev_runs)} s) |")
    print(f"| DuckDB, same SQL on the same files | {duck_s:.1f} s (runs: {runs(duck_runs)} s) |")
    if pg_s is not None:
        print(f"| PostgreSQL {pg_version}, same SQL on the same rows, loaded and indexed | {pg_s:.1f} s |")
    print()
    print(f"netrev / DuckDB time: {ratio:.2f} (target <= 1.0: {'met' if ratio <= 1.0 else 'MISSED'})")
    if pg_s is not None:
        print(f"PostgreSQL / netrev time: {pg_s / netrev_s:.1f} (target >= 10: {'met' if pg_s / netrev_s >= 10 else 'MISSED'})")
    inc = incremental
    print(f"scheduled recompute by difference after the newest day ({inc['touched_click_ids']:,} click IDs "
          f"with new events, {inc['rebuilt_click_ids']:,} click IDs and {inc['rebuilt_visitors']:,} visitors "
          f"rebuilt): {inc['incremental_secs']:.2f} s vs full {inc['full_secs']:.2f} s = "
          f"{100 * inc['ratio']:.1f}% (target <= 10%: {'met' if inc['ratio'] <= 0.10 else 'MISSED'}); "
          f"tables equal: {inc['equal']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clicks": counts["clicks"], "conversions": counts["conversions"],
                       "refunds": counts["refunds"], "netrev_s": netrev_s, "duckdb_s": duck_s,
                       "netrev_runs": netrev_runs, "duckdb_runs": duck_runs,
                       "duckdb_version": duckdb.__version__, "pg_s": pg_s, "pg_version": pg_version,
                       "incremental": incremental, "same_totals": same}, f)
    print(f"same totals in both outputs: {same} {ours if same else (ours, theirs)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
