//! Injected faults (`NETREV_FAILPOINTS`, see `storage/src/failpoint.rs`) with the real binary:
//! a write-ahead log that cannot write or fsync refuses postbacks with 503, acknowledges
//! nothing it did not sync and recovers when the disk does; an object store that fails is
//! retried and the rows arrive once; a crash while a derived partition is being replaced
//! leaves the old one readable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netrev_storage::Event;
use netrev_storage::model::Table;

use crate::harness::{Server, client, read_table};
use crate::jobs::{netrev, ok, sql, write};

fn sources(data: &Path) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for e in read_table(data, Table::Clicks) {
        let Event::Click(c) = e else { unreachable!() };
        *n.entry(c.source.unwrap_or_default()).or_default() += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_log_refuses_with_503_keeps_nothing_unsynced_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Two writes fail as on a full disk, then three fsyncs fail; the log recovers after each.
    // A long flush interval keeps everything in the log, so the restart below replays it.
    let s = Server::start_env(
        &data,
        &["--flush-interval-ms", "600000"],
        &[("NETREV_FAILPOINTS", "wal-write=2,wal-fsync=3")],
    );
    let c = client();
    let mut refused = Vec::new();
    let mut accepted = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        assert!(Instant::now() < deadline, "the log never recovered");
        let source = format!("probe{i}");
        let r = c
            .get(s.url(&format!("/api/click?source={source}")))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                let body: serde_json::Value = r.json().await.unwrap();
                accepted = Some((source, body["cid"].as_str().unwrap().to_string()));
                break;
            }
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                // The log's error (which names the server's files) is logged, not sent.
                let body = r.text().await.unwrap();
                assert!(
                    !body.contains(".wal") && !body.contains("injected"),
                    "{body}"
                );
                refused.push(source);
                if refused.len() == 3 {
                    // Broken by the first failed fsync: the health route says why.
                    let h = s.health(&c).await;
                    assert!(
                        h["ingest"]["wal_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("fsync")),
                        "{h}"
                    );
                }
            }
            other => panic!("unexpected status {other}: {}", r.text().await.unwrap()),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let (source, cid) = accepted.unwrap();
    assert!(refused.len() >= 5, "five injected failures: {refused:?}");
    assert_eq!(
        s.health(&c).await["ingest"]["wal_error"],
        serde_json::Value::Null
    );
    let r = c
        .get(s.url(&format!("/api/conversion?cid={cid}&amount=9.99&txid=T1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A crash now: the restart replays the log. The refused clicks were written to it (only
    // their fsync failed), so they are only absent if the log was cut back as it must be.
    s.kill9();
    let s = Server::start(&data, &[]);
    s.wait_flushed(&c).await;
    assert_eq!(sources(&data), HashMap::from([(source, 1)]));
    assert_eq!(read_table(&data, Table::Conversions).len(), 1);
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_object_store_is_retried_and_the_rows_arrive_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start_env(
        &data,
        &["--api-key", "K-faults"],
        &[("NETREV_FAILPOINTS", "raw-put=3")],
    );
    let c = client();
    for i in 0..20 {
        let (cid, _) = s.click(&c, &format!("source=s{i}")).await;
        let r = c
            .get(s.url(&format!("/api/conversion?cid={cid}&amount=1.5&txid=T{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "the object store's trouble never refuses a postback"
        );
    }
    // Three flushes fail (200 ms, then backing off); the health route shows it meanwhile:
    // why to a caller with the API key, only that it fails to anyone else (the text names the
    // server's files).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut told, mut hidden) = (false, false);
    while !(told && hidden) {
        let with_key: serde_json::Value = c
            .get(s.url("/api/health"))
            .bearer_auth("K-faults")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(e) = with_key["ingest"]["flush_error"].as_str() {
            assert!(e.contains("injected failure at raw-put"), "{e}");
            told = true;
        }
        let h = s.health(&c).await;
        if let Some(e) = h["ingest"]["flush_error"].as_str() {
            assert!(!e.contains("raw-put") && !e.contains('/'), "{e}");
            hidden = true;
        }
        assert!(Instant::now() < deadline, "no flush failure seen: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.wait_flushed(&c).await;
    assert_eq!(
        s.health(&c).await["ingest"]["flush_error"],
        serde_json::Value::Null
    );
    let check = |data: &Path| {
        let by_source = sources(data);
        assert_eq!(by_source.len(), 20);
        assert!(by_source.values().all(|&n| n == 1), "{by_source:?}");
        assert_eq!(read_table(data, Table::Conversions).len(), 20);
    };
    check(&data);
    // And once more after a crash and the replay of whatever the log still holds.
    s.kill9();
    let s = Server::start(&data, &[]);
    s.wait_flushed(&c).await;
    check(&data);
    s.stop();
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_crash_while_replacing_a_derived_file_leaves_the_old_one_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let import = |name: &str, table: &str, text: &str| {
        let f = write(tmp.path(), name, text);
        ok(netrev(
            &data,
            &["import", "--table", table, f.to_str().unwrap()],
        ));
    };
    import(
        "clicks.csv",
        "clicks",
        "cid,vid,ts,source\nA-1,v1,2026-11-01T10:00:00Z,fb\nA-2,v2,2026-11-01T11:00:00Z,gg\n",
    );
    import(
        "conversions.csv",
        "conversions",
        "cid,ts,amount,txid\nA-1,2026-11-01T12:00:00Z,10,T1\n",
    );
    ok(netrev(&data, &["recompute"]));
    let totals = "SELECT sum(clicks) AS clicks, sum(gross_revenue) AS gross FROM stats_hourly";
    let before = sql(&data, totals);
    assert_eq!(before, "clicks,gross\n2,10.0000\n");
    let tables = data.join("tables");
    let old_files = files(&tables);

    // New events, then a recompute killed after writing the first new file of a derived
    // table (`visitors`, the first computed) under its temporary name and before renaming it
    // into place.
    import(
        "more.csv",
        "conversions",
        "cid,ts,amount,txid\nA-2,2026-11-01T12:30:00Z,5,T2\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netrev"))
        .args(["recompute", "--data"])
        .arg(&data)
        .env("NETREV_LOG", "warn")
        .env("NETREV_FAILPOINTS", "durable-before-rename=abort")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the recompute was to die");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failpoint durable-before-rename"),
        "{stderr}"
    );

    // The old files (every table's) are there byte for byte and are what readers get; the
    // crash left its temporary file beside them, which no reader takes for data.
    let now = files(&tables);
    let temps: Vec<_> = now
        .iter()
        .filter(|(p, _)| !old_files.iter().any(|(q, _)| q == p))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(temps.len(), 1, "one temporary file: {now:?}");
    assert!(
        temps[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with('.')
    );
    for (p, bytes) in &old_files {
        assert_eq!(std::fs::read(p).unwrap(), *bytes, "{p:?} changed");
    }
    assert_eq!(sql(&data, totals), before);

    // The next recompute completes, its rows replace the old ones, and the leftover goes.
    ok(netrev(&data, &["recompute"]));
    assert_eq!(sql(&data, totals), "clicks,gross\n2,15.0000\n");
    assert!(!temps[0].exists(), "{:?} left behind", temps[0]);
}
