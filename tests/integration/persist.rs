//! Few, large raw files (docs/design.md §12): events wait in the ingest buffer for the flush
//! interval (30 minutes by default) and are read from there meanwhile, by `POST /api/sql` and
//! by `netrev sql` beside the server (from its write-ahead log), each exactly once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Server, Service, client, raw_files};
use crate::jobs::sql;
use netrev_storage::Table;

/// Clicks, a conversion and a refund of one of them, through the postback routes.
async fn events(server: &crate::harness::Endpoint, http: &reqwest::Client, clicks: usize) {
    let mut cids = Vec::new();
    for i in 0..clicks {
        cids.push(server.click(http, &format!("source=s{}", i % 3)).await.0);
    }
    let ok = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    };
    ok(http
        .get(server.url(&format!(
            "/api/conversion?cid={0}&amount=49.99&txid=t{0}",
            cids[0]
        )))
        .send()
        .await
        .unwrap())
    .await;
    ok(http
        .get(server.url(&format!(
            "/api/conversion/refund?cid={0}&amount=49.99&ref=t{0}&txid=r{0}",
            cids[0]
        )))
        .send()
        .await
        .unwrap())
    .await;
}

/// Counts of clicks, conversions and refunds by `netrev sql`, as `a,b,c`.
fn counts_by_cli(data: &std::path::Path) -> String {
    let out = sql(
        data,
        "select (select count(*) from clicks) || ',' || (select count(*) from conversions) \
         || ',' || (select count(*) from refunds) as n",
    );
    let line = out.lines().nth(1).unwrap_or_default();
    line.trim_matches('"').to_string()
}

#[tokio::test]
async fn netrev_sql_reads_what_is_not_flushed_yet_once_also_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = client();
    // The default flush interval: nothing reaches Parquet during the test.
    let server = Server::start(&data, &["--flush-interval-ms", "1800000"]);
    server.wait_serving(&http).await;
    events(&server, &http, 40).await;
    // Within a second of the acknowledgements, with no raw file written.
    let started = Instant::now();
    assert_eq!(counts_by_cli(&data), "40,1,1");
    assert!(started.elapsed() < Duration::from_secs(10));
    for table in Table::ALL {
        assert!(
            raw_files(&data, table).is_empty(),
            "{table:?} flushed early"
        );
    }

    // After kill -9 the log still holds them; a restart flushes them once.
    server.kill9();
    assert_eq!(counts_by_cli(&data), "40,1,1");
    let server = Server::start(&data, &["--flush-interval-ms", "1800000"]);
    server.wait_serving(&http).await;
    server.wait_flushed(&http).await;
    assert!(!raw_files(&data, Table::Clicks).is_empty());
    assert_eq!(counts_by_cli(&data), "40,1,1");
    // New events beside flushed ones, then a clean stop (which flushes).
    events(&server, &http, 5).await;
    assert_eq!(counts_by_cli(&data), "45,2,2");
    server.stop();
    assert_eq!(counts_by_cli(&data), "45,2,2");
}

/// The `n` of the first row of `POST /api/sql` with `q`.
async fn count(service: &Service, http: &reqwest::Client, q: &str) -> String {
    let body: serde_json::Value = http
        .post(service.url("/api/sql"))
        .json(&json!({ "sql": q }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A count is a JSON number or, past 2^53, a string.
    match &body["rows"][0]["n"] {
        serde_json::Value::String(n) => n.clone(),
        n => n.to_string(),
    }
}

#[tokio::test]
async fn api_sql_reads_the_buffer_each_row_once_across_a_flush() {
    let service = Service::start(&["--flush-interval-ms", "1800000"]).await;
    let http = client();
    service.wait_serving(&http).await;
    events(&service, &http, 30).await;
    let q = "select count(*) as n from clicks";
    assert_eq!(count(&service, &http, q).await, "30");
    assert_eq!(
        count(
            &service,
            &http,
            "select count(distinct cid) as n from clicks where source = 's1'"
        )
        .await,
        "10"
    );
    assert_eq!(
        count(&service, &http, "select count(*) as n from refunds").await,
        "1"
    );
    assert!(service.read_table(Table::Clicks).await.is_empty());
    // A restart flushes at stop; then files and the new buffer together.
    let service = service.restart().await;
    service.wait_serving(&http).await;
    assert_eq!(service.read_table(Table::Clicks).await.len(), 30);
    events(&service, &http, 3).await;
    assert_eq!(count(&service, &http, q).await, "33");
    assert_eq!(
        count(&service, &http, "select count(*) as n from conversions").await,
        "2"
    );
    service.stop().await;
}

/// A data root written flush by flush (as earlier versions did every second) is compacted in
/// place by `netrev compact`, with the same rows before and after, also when the command is
/// killed at the worst moments and run again.
#[tokio::test]
async fn compact_rewrites_small_files_in_place_also_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = client();
    let server = Server::start(&data, &[]);
    server.wait_serving(&http).await;
    for _ in 0..6 {
        events(&server, &http, 4).await;
        server.wait_flushed(&http).await;
    }
    server.stop();
    let files_before = raw_files(&data, Table::Clicks).len();
    assert!(files_before >= 6, "{files_before} click files");
    let all = |data: &std::path::Path| {
        ["clicks", "conversions", "refunds"]
            .map(|t| sql(data, &format!("select * from {t} order by cid, ts")))
            .join("\n")
    };
    let before = all(&data);
    let counts = counts_by_cli(&data);

    let compact = |failpoint: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_netrev"));
        cmd.args(["compact", "--data"])
            .arg(&data)
            .env("NETREV_LOG", "warn");
        if let Some(point) = failpoint {
            cmd.env("NETREV_FAILPOINTS", format!("{point}=abort"));
        }
        cmd.output().unwrap()
    };
    // Killed with the new partition assembled, then with it swapped in and the old files
    // not yet removed: either way the tables read the same.
    for point in ["compact-before-swap", "compact-after-swap"] {
        let out = compact(Some(point));
        assert!(!out.status.success(), "{point} did not stop the run");
        assert_eq!(all(&data), before, "after a crash at {point}");
    }
    let out = compact(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(all(&data), before);
    assert_eq!(counts_by_cli(&data), counts);
    assert!(!data.join(".compact").exists());
    // Each day's clicks in at most two files: the merged ones and the newest flush.
    let mut per_day = std::collections::HashMap::new();
    for f in raw_files(&data, Table::Clicks) {
        *per_day
            .entry(f.parent().unwrap().to_path_buf())
            .or_insert(0) += 1;
    }
    assert!(
        per_day.values().all(|&n| n <= 2),
        "{files_before} click files -> {per_day:?}"
    );

    // The server starts on the compacted root, recovers nothing twice and goes on.
    let server = Server::start(&data, &[]);
    server.wait_serving(&http).await;
    events(&server, &http, 2).await;
    server.stop();
    assert_eq!(counts_by_cli(&data), "26,7,7");
}

/// Every derived table but `stats_hourly` as `netrev sql` reads it, in a fixed order.
pub(crate) fn derived_tables(data: &std::path::Path) -> Vec<(&'static str, String)> {
    [
        ("visitors", 10),
        ("refund_links", 14),
        ("cohort_sources", 7),
        ("cohort_ltv", 7),
    ]
    .into_iter()
    .map(|(table, columns)| {
        let order: Vec<String> = (1..=columns).map(|c| c.to_string()).collect();
        let query = format!("SELECT * FROM {table} ORDER BY {}", order.join(", "));
        (table, sql(data, &query))
    })
    .collect()
}

/// A server running for days (its clock 7,200 times as fast: a day in 12 s): the raw files of
/// each closed day are compacted by the server into one per table, the scheduled recomputes
/// after the first run by difference, and the tables they leave equal a full recompute's.
#[tokio::test]
async fn days_of_operation_keep_files_few_and_recompute_by_difference() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let http = client();
    let server = Server::start_logged(
        &data,
        &[
            "--clock-speed",
            "7200",
            "--flush-interval-ms",
            "1800000",
            "--recompute-interval-secs",
            "1",
        ],
        &[("NETREV_LOG", "netrev_live=info,warn")],
        &log,
    );
    server.wait_serving(&http).await;
    let started = Instant::now();
    let mut cids: Vec<(String, String)> = Vec::new();
    let mut i = 0u64;
    let get = |path: String| {
        let http = &http;
        let url = server.url(&path);
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
    };
    // About two and a half server days.
    while started.elapsed() < Duration::from_secs(30) {
        i += 1;
        let returning = cids
            .get((i as usize * 7) % (cids.len() + 1))
            .map(|c| c.1.clone());
        let query = match &returning {
            Some(vid) if i.is_multiple_of(3) => format!("source=s{}&vid={vid}", i % 4),
            _ => format!("source=s{}", i % 4),
        };
        cids.push(server.click(&http, &query).await);
        if i.is_multiple_of(5) {
            let (cid, _) = &cids[(i as usize * 13) % cids.len()];
            get(format!("/api/conversion?cid={cid}&amount=20.50&txid=t{i}")).await;
            if i.is_multiple_of(10) {
                get(format!(
                    "/api/conversion/refund?cid={cid}&amount=5&ref=t{i}"
                ))
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two recomputes after the last event (the first may have started before it); the ones
    // after them find nothing new and write nothing.
    let passes = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("recompute by difference done")
            .count()
    };
    let (before, deadline) = (passes(), Instant::now() + Duration::from_secs(180));
    while passes() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "no recompute after the last event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let by_difference = derived_tables(&data);
    server.stop();

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("recompute by difference done"), "{log}");
    assert!(
        log.contains("compacted the raw files of closed days"),
        "{log}"
    );
    // The first day is closed: one file per table (compacted, unless it had only one).
    for table in Table::ALL {
        let files = raw_files(&data, table);
        let first = files[0].parent().unwrap().to_path_buf();
        let of_first: Vec<_> = files
            .iter()
            .filter(|f| f.parent() == Some(&first))
            .collect();
        assert_eq!(of_first.len(), 1, "{table:?}: {of_first:?}");
    }
    let clicks = raw_files(&data, Table::Clicks);
    assert!(
        clicks
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".c.parquet")),
        "{clicks:?}"
    );
    assert_eq!(
        counts_by_cli(&data),
        format!("{},{},{}", cids.len(), i / 5, i / 10)
    );
    crate::jobs::ok(crate::jobs::netrev(&data, &["recompute"]));
    let full = derived_tables(&data);
    for ((table, ours), (_, theirs)) in by_difference.iter().zip(&full) {
        assert_eq!(ours, theirs, "{table}");
    }
}
