//! The live stats through the real server: an acknowledged refund is in the next
//! `/api/stats` read, in its click's hour; a kill -9 restart rebuilds the same numbers; a
//! refund for a click old enough to be left out of memory is attributed through that day's
//! Parquet files; and the `stats_hourly` files the live state writes equal a batch recompute.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use netrev_live::click_lookup::ParquetClicks;
use netrev_live::state::{ClickLookup, ClickRow};
use netrev_storage::model::{self, Table};
use netrev_storage::store::layout;
use netrev_storage::{Click, Event, Store, clickid};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::harness::{Endpoint, Server, Service, client};
use crate::jobs::{netrev, ok, sql, write};

/// `/api/stats` once the live state is built (it answers 503 while it is being built).
async fn stats(server: &Endpoint, http: &reqwest::Client, query: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(server.url(&format!("/api/stats?{query}")))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            assert!(Instant::now() < deadline, "live stats never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(r.status(), 200);
        return r.json().await.unwrap();
    }
}

async fn get_ok(http: &reqwest::Client, url: String) {
    let r: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
}

/// The one row of `answer` (grouped by source) for source `fb`.
fn fb(answer: &Value) -> &Value {
    let rows = answer["rows"].as_array().unwrap();
    rows.iter()
        .find(|r| r["source"] == "fb")
        .unwrap_or_else(|| panic!("no fb row in {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_refund_is_in_the_next_read_and_survives_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let http = client();
    let server = Server::start(&data, &["--live-persist-ms", "100"]);
    assert_eq!(
        stats(&server, &http, "").await["rows"],
        Value::Array(vec![])
    );

    let (cid, _) = server.click(&http, "source=fb&campaign=c1&cost=0.50").await;
    server.click(&http, "source=gg&cost=0.25").await;
    get_ok(
        &http,
        server.url(&format!("/api/conversion?cid={cid}&amount=49.99&txid=T1")),
    )
    .await;
    get_ok(
        &http,
        server.url(&format!("/api/conversion?cid={cid}&amount=10&txid=T2")),
    )
    .await;
    let before = stats(&server, &http, "group_by=source").await;
    assert_eq!(fb(&before)["refunds"], 0);
    assert_eq!(fb(&before)["refund_rate"], 0.0);

    get_ok(
        &http,
        server.url(&format!(
            "/api/conversion/refund?cid={cid}&amount=20&ref=T1&txid=R1"
        )),
    )
    .await;
    // The very next read, with no waiting in between.
    let after = stats(&server, &http, "group_by=hour,source").await;
    let row = fb(&after);
    let hour = chrono::Utc::now().format("%Y-%m-%dT%H:00:00Z").to_string();
    assert_eq!(row["hour"], hour, "attributed to the click's hour: {after}");
    assert_eq!(row["conversions"], 2);
    assert_eq!(row["gross_revenue"], "59.99");
    assert_eq!(row["refunds"], 1);
    assert_eq!(row["refund_amount"], "20.00");
    assert_eq!(row["net_revenue"], "39.99");
    assert_eq!(row["refund_rate"], 50.0);
    assert_eq!(row["profit"], "39.49");
    assert_eq!(after["totals"]["clicks"], 2);
    assert_eq!(after["totals"]["cost"], "0.75");
    assert_eq!(after["totals"]["net_revenue"], "39.99");

    // A retried refund changes nothing; a crash and restart keep the numbers.
    get_ok(
        &http,
        server.url(&format!(
            "/api/conversion/refund?cid={cid}&amount=20&ref=T1&txid=R1"
        )),
    )
    .await;
    let settled = stats(&server, &http, "group_by=hour,source").await;
    assert_eq!(settled, after);
    server.kill9();
    let server = Server::start(&data, &["--live-persist-ms", "100"]);
    assert_eq!(stats(&server, &http, "group_by=hour,source").await, after);

    // After the restart: a chargeback of the other conversion, then the persisted files.
    get_ok(
        &http,
        server.url(&format!(
            "/api/conversion/refund?cid={cid}&amount=-10&type=cb&ref=T2"
        )),
    )
    .await;
    let last = stats(&server, &http, "group_by=source").await;
    assert_eq!(fb(&last)["refunds"], 2);
    assert_eq!(fb(&last)["chargeback_amount"], "10.00");
    assert_eq!(fb(&last)["refund_rate"], 100.0);
    assert_eq!(fb(&last)["net_revenue"], "29.99");
    files_equal_batch(&data, server).await;
}

/// Clicks, sales of some and refunds of some of those, from source `fb`.
async fn sales(server: &Endpoint, http: &reqwest::Client, round: usize) {
    for i in 0..6 {
        let (cid, _) = server.click(http, "source=fb&cost=0.10").await;
        let base = format!("cid={cid}&amount=30&txid=T{round}-{i}");
        get_ok(http, server.url(&format!("/api/conversion?{base}"))).await;
        if i % 2 == 0 {
            let q = format!("cid={cid}&amount=12.5&ref=T{round}-{i}&txid=R{round}-{i}");
            get_ok(http, server.url(&format!("/api/conversion/refund?{q}"))).await;
        }
    }
}

/// A restart loads the live state's checkpoint and applies only what the raw files hold
/// beyond it, instead of recomputing: after a stop, after kill -9, from a checkpoint older
/// than the files, and not from a damaged one (a full recompute then). The numbers are those
/// of a batch recompute every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_the_live_state_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let checkpoint = data.join("wal").join(netrev_live::checkpoint::FILE_NAME);
    let http = client();
    let log = tmp.path().join("serve.log");
    let info = [("NETREV_LOG", "info")];
    let args = ["--live-persist-ms", "100"];
    let start = || Server::start_logged(&data, &args, &info, &log);
    let restored = |log: &Path| {
        let text = std::fs::read_to_string(log).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("live stats restored from their checkpoint"))?;
        let applied = line.split("events_applied=").nth(1)?.split(' ').next()?;
        Some(applied.parse::<usize>().unwrap())
    };

    let server = start();
    assert_eq!(restored(&log), None, "no checkpoint yet");
    sales(&server, &http, 0).await;
    let first = stats(&server, &http, "group_by=source").await;
    server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("live state checkpointed"), "{text}");
    let early = std::fs::read(&checkpoint).unwrap();

    // After a stop: nothing to apply, and the derived tables by difference from what the
    // last recompute read.
    let server = start();
    assert_eq!(stats(&server, &http, "group_by=source").await, first);
    assert_eq!(restored(&log), Some(0));
    let by_difference = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(at) = text.rfind("recompute by difference done") {
                assert!(!text.contains("recompute done"), "{text}");
                // The live thread checkpoints after a recompute (when its state changed) on
                // its next turn (at most --live-persist-ms later): before the test sends more,
                // so that the events sent next are all after that checkpoint.
                let turn = Instant::now() + Duration::from_secs(2);
                while Instant::now() < turn
                    && !std::fs::read_to_string(&log).unwrap()[at..]
                        .contains("live state checkpointed")
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no recompute by difference after the restart");
    };
    by_difference();
    sales(&server, &http, 1).await;
    let second = stats(&server, &http, "group_by=source").await;
    assert_ne!(second, first);

    // After kill -9: the checkpoint written after the restore, and the events since.
    server.kill9();
    let server = start();
    assert_eq!(stats(&server, &http, "group_by=source").await, second);
    let applied = restored(&log).expect("restored after kill -9");
    assert!(applied >= 15, "the events since the checkpoint: {applied}");
    by_difference();
    sales(&server, &http, 2).await;
    let third = stats(&server, &http, "group_by=source").await;
    server.stop();

    // An older checkpoint: more to apply, the same numbers.
    std::fs::write(&checkpoint, &early).unwrap();
    let server = start();
    assert_eq!(stats(&server, &http, "group_by=source").await, third);
    assert!(restored(&log).expect("restored from an older one") >= 30);
    server.stop();

    // An import while it was stopped: files it does not cover, whose events it is given.
    let now = chrono::Utc::now().to_rfc3339();
    let csv = format!("cid,vid,ts,source,cost\nimp-1,vi1,{now},fb,0.10\nimp-2,vi2,{now},fb,0.10\n");
    let f = write(tmp.path(), "clicks.csv", &csv);
    ok(netrev(
        &data,
        &["import", "--table", "clicks", f.to_str().unwrap()],
    ));
    let server = start();
    let third = stats(&server, &http, "group_by=source").await;
    assert_eq!(restored(&log), Some(2), "the imported clicks only");
    server.stop();

    // A damaged one: refused, and a full recompute instead.
    let mut damaged = std::fs::read(&checkpoint).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 1;
    std::fs::write(&checkpoint, &damaged).unwrap();
    let server = start();
    assert_eq!(stats(&server, &http, "group_by=source").await, third);
    assert_eq!(restored(&log), None);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("checkpoint cannot be used"), "{text}");
    assert_eq!(fb(&third)["clicks"], 20);
    assert_eq!(fb(&third)["refunds"], 9);
    // Once its recompute is done, the other derived tables are a full recompute's too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("recompute done")
    {
        assert!(Instant::now() < deadline, "no recompute after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop();
    let tables = || {
        let stats = sql(
            &data,
            "SELECT * FROM stats_hourly ORDER BY 1, 2, 3, 4, 5, 6",
        );
        (stats, crate::persist::derived_tables(&data))
    };
    let served = tables();
    ok(netrev(&data, &["recompute"]));
    assert_eq!(served, tables());
}

/// Conversions of click IDs not known yet, past `--live-pending-max-mib`, are left to the raw
/// files; when their clicks arrive by an import, the recompute that brings those clicks has
/// them read back, and the stats count them as a batch recompute does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_pending_cap_are_read_back_when_their_clicks_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let http = client();
    let args = [
        "--live-pending-max-mib",
        "0",
        "--recompute-interval-secs",
        "1",
        "--live-persist-ms",
        "100",
    ];
    let server = Server::start_logged(&data, &args, &[("NETREV_LOG", "info")], &log);
    // Once the live state is built.
    stats(&server, &http, "group_by=source").await;
    for i in 0..20 {
        let q = format!("cid=ext-{i}&amount=10&txid=T{i}");
        get_ok(&http, server.url(&format!("/api/conversion?{q}"))).await;
    }
    get_ok(
        &http,
        server.url("/api/conversion/refund?cid=ext-3&amount=4"),
    )
    .await;
    let health = server.wait_live(&http).await;
    assert_eq!(health["live"]["state"]["spilled_events"], 21, "{health}");
    assert_eq!(health["live"]["state"]["pending_bytes"], 0, "{health}");
    assert_eq!(health["live"]["state"]["click_states"], 0, "{health}");

    let now = chrono::Utc::now().to_rfc3339();
    let mut csv = String::from("cid,vid,ts,source,cost\n");
    for i in 0..20 {
        csv.push_str(&format!("ext-{i},vx{i},{now},imp,0.5\n"));
    }
    let f = write(tmp.path(), "clicks.csv", &csv);
    ok(netrev(
        &data,
        &["import", "--table", "clicks", f.to_str().unwrap()],
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = stats(&server, &http, "group_by=source").await;
        if answer["totals"]["conversions"] == 20 {
            assert_eq!(answer["totals"]["clicks"], 20);
            assert_eq!(answer["totals"]["gross_revenue"], "200.00");
            assert_eq!(answer["totals"]["refund_amount"], "4.00");
            break;
        }
        assert!(Instant::now() < deadline, "not read back: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("events left to the raw files applied"),
        "{text}"
    );
    // Sales whose click never comes.
    for i in 0..5 {
        let q = format!("cid=never-{i}&amount=7&txid=N{i}");
        get_ok(&http, server.url(&format!("/api/conversion?{q}"))).await;
    }
    let served = stats(&server, &http, "group_by=source").await;
    files_equal_batch(&data, server).await;

    // A full recompute at start (no checkpoint) holds none of them either.
    let args = ["--live-pending-max-mib", "0", "--live-checkpoint-secs", "0"];
    let server = Server::start(&data, &args);
    assert_eq!(stats(&server, &http, "group_by=source").await, served);
    let health = server.health(&http).await;
    assert_eq!(health["live"]["state"]["spilled_events"], 5, "{health}");
    assert_eq!(health["live"]["state"]["pending_bytes"], 0, "{health}");
    server.stop();
}

/// The days of clicks, and the default range of `/api/stats`, are those of the service's
/// clock: a click at 23:59:59.5 UTC and one a second later fall on two UTC days, on one day in
/// New York, and a conversion or refund counts on its click's day however late it comes.
/// The whole service runs in this process on an in-memory data root, its clock moved by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_and_the_default_range_follow_the_service_clock() {
    let service = Service::start(&[]).await;
    let http = client();
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
    service.clock.set(at("2026-03-10T23:59:59.500Z"));
    let (late, _) = service.click(&http, "source=fb&cost=1").await;
    service.clock.advance(chrono::TimeDelta::seconds(1));
    service.click(&http, "source=fb&cost=2").await;
    get_ok(
        &http,
        service.url(&format!("/api/conversion?cid={late}&amount=10&txid=T1")),
    )
    .await;
    let rows = |answer: &Value| -> Vec<(String, i64, String, String)> {
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["date"].as_str().unwrap().to_string(),
                    r["clicks"].as_i64().unwrap(),
                    r["cost"].as_str().unwrap().to_string(),
                    r["net_revenue"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let day = |d: &str, clicks, cost: &str, net: &str| (d.into(), clicks, cost.into(), net.into());
    // Today is 2026-03-11 in UTC: the default range (the 30 days up to today) holds both.
    let utc = stats(&service, &http, "group_by=date").await;
    assert_eq!(
        rows(&utc),
        [
            day("2026-03-10", 1, "1.00", "10.00"),
            day("2026-03-11", 1, "2.00", "0.00"),
        ],
        "{utc}"
    );
    // In New York (UTC-4 since 8 March) both are on the 10th, still "today" there.
    let ny = stats(&service, &http, "group_by=date&tz=America/New_York").await;
    assert_eq!(rows(&ny), [day("2026-03-10", 2, "3.00", "10.00")], "{ny}");

    // Forty days on, a refund still counts on its click's day, which has left the default
    // range.
    service.clock.advance(chrono::TimeDelta::days(40));
    get_ok(
        &http,
        service.url(&format!(
            "/api/conversion/refund?cid={late}&amount=4&ref=T1&txid=R1"
        )),
    )
    .await;
    let now = stats(&service, &http, "group_by=date").await;
    assert!(rows(&now).is_empty(), "{now}");
    let march = stats(
        &service,
        &http,
        "group_by=date&from=2026-03-01&to=2026-03-31",
    )
    .await;
    assert_eq!(
        rows(&march),
        [
            day("2026-03-10", 1, "1.00", "6.00"),
            day("2026-03-11", 1, "2.00", "0.00"),
        ],
        "{march}"
    );
    service.wait_flushed(&http).await;
    let refunds = service.read_table(Table::Refunds).await;
    let [Event::Refund(refund)] = refunds.as_slice() else {
        panic!("{refunds:?}")
    };
    assert_eq!(
        chrono::DateTime::from_timestamp_micros(refund.ts).unwrap(),
        at("2026-04-20T00:00:00.500Z"),
        "received at the service's time"
    );
    // A clean stop leaves everything flushed: the service started again on the same data
    // root answers the same.
    let service = service.restart().await;
    let again = stats(
        &service,
        &http,
        "group_by=date&from=2026-03-01&to=2026-03-31",
    )
    .await;
    assert_eq!(again, march);
    service.stop().await;
}

/// Waits for the live state's writes, stops the server, and compares `stats_hourly` as
/// written live with what a batch recompute writes.
async fn files_equal_batch(data: &Path, server: Server) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop();
    let q = "SELECT hour, source, campaign, link, country, device, clicks, cost, conversions, \
             gross_revenue, refunds, refund_amount, chargebacks, chargeback_amount, \
             refunded_conversions FROM stats_hourly ORDER BY hour, source";
    let live = sql(data, q);
    ok(netrev(data, &["recompute"]));
    let batch = sql(data, q);
    assert_eq!(live, batch);
    assert!(live.lines().count() >= 2, "{live}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_for_a_click_out_of_memory_is_found_in_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let http = client();
    // The first start creates the click-ID key; an import then brings clicks of ten days ago
    // with IDs this install issued.
    Server::start(&data, &[]).stop();
    let store = Store::open(data.to_str().unwrap()).unwrap();
    let ids = clickid::Generator::new(store.click_id_key().await.unwrap());
    let old = chrono::Utc::now() - chrono::Duration::days(10);
    let mut csv = String::from("cid,vid,ts,source,cost\n");
    let mut cids = Vec::new();
    for i in 0..50i64 {
        let t = old + chrono::Duration::seconds(i);
        let (cid, _) = ids.issue(u64::try_from(t.timestamp_millis()).unwrap());
        csv.push_str(&format!("{cid},v{i},{},old{},1\n", t.to_rfc3339(), i % 2));
        cids.push(cid);
    }
    let f = write(tmp.path(), "clicks.csv", &csv);
    ok(netrev(
        &data,
        &["import", "--table", "clicks", f.to_str().unwrap()],
    ));

    // One day in memory: the imported clicks are left to the lookup.
    let server = Server::start(&data, &["--live-days", "1", "--live-persist-ms", "100"]);
    let day = old.format("%Y-%m-%d").to_string();
    let q = format!("from={day}&to={day}&group_by=source");
    let before = stats(&server, &http, &q).await;
    assert_eq!(before["totals"]["clicks"], 50);
    let health = server.health(&http).await;
    assert_eq!(health["live"]["state"]["indexed_clicks"], 0, "{health}");
    // Their hourly rows too are held encoded, not as rows.
    assert_eq!(health["live"]["state"]["rows"], 0, "{health}");
    assert!(
        health["live"]["state"]["cold_days"].as_u64().unwrap() >= 1,
        "{health}"
    );
    assert!(
        health["live"]["state"]["cold_bytes"].as_u64().unwrap() > 0,
        "{health}"
    );

    let cid = &cids[7];
    get_ok(
        &http,
        server.url(&format!("/api/conversion?cid={cid}&amount=100&txid=S1")),
    )
    .await;
    get_ok(
        &http,
        server.url(&format!("/api/conversion/refund?cid={cid}&amount=25")),
    )
    .await;
    let after = stats(&server, &http, &q).await;
    let row = after["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "old1")
        .unwrap();
    assert_eq!(row["clicks"], 25);
    assert_eq!(row["conversions"], 1);
    assert_eq!(row["refund_amount"], "25.00");
    assert_eq!(row["refund_rate"], 100.0);
    assert_eq!(after["totals"]["net_revenue"], "75.00");
    // By hour, and in a zone whose days are not UTC days: the encoded hours with the
    // changes made since, decoded for the read.
    for q in [
        format!("from={day}&to={day}&group_by=hour"),
        format!(
            "from={}&to={day}&tz=America/New_York&group_by=source",
            old.date_naive().pred_opt().unwrap()
        ),
    ] {
        let hours = stats(&server, &http, &q).await;
        assert_eq!(hours["totals"]["clicks"], 50, "{q}: {hours}");
        assert_eq!(hours["totals"]["conversions"], 1, "{q}: {hours}");
        assert_eq!(hours["totals"]["refund_amount"], "25.00", "{q}: {hours}");
    }
    files_equal_batch(&data, server).await;
}

/// The Parquet lookup on its own: the smallest copy among that day's files, nothing from
/// other days, and row groups pruned by their `cid` range.
#[tokio::test]
async fn parquet_lookup_finds_the_winning_copy_of_its_day_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().to_str().unwrap()).unwrap();
    let ids = clickid::Generator::new(clickid::Key::new([3; 32]));
    let day_ms: u64 = 1_793_491_200_000; // 2026-11-01
    let click = |cid: &str, ms: u64, source: &str| Click {
        cid: cid.to_string(),
        vid: "v".into(),
        ts: i64::try_from(ms).unwrap() * 1000,
        source: Some(source.into()),
        campaign: None,
        link: None,
        country: None,
        device: None,
        cost: Decimal::new(5, 1),
        subs: Default::default(),
    };
    let mut cids = Vec::new();
    let mut files = Vec::new();
    let mut all = Vec::new();
    for f in 0..3u64 {
        let mut events = Vec::new();
        for i in 0..100u64 {
            let ms = day_ms + f * 3_600_000 + i * 1000;
            let (cid, _) = ids.issue(ms);
            events.push(Event::Click(click(&cid, ms, &format!("s{f}"))));
            cids.push((cid, ms));
        }
        // A later copy of the first file's first click, in the last file.
        if f == 2 {
            let (cid, ms) = &cids[0];
            events.push(Event::Click(click(cid, ms + 5, "late")));
        }
        let date = model::date_of_micros(i64::try_from(day_ms).unwrap() * 1000);
        let path = layout::raw_file(Table::Clicks, date, "n1", f * 1000, f * 1000 + 999);
        let batch = model::to_batch(Table::Clicks, events.iter()).unwrap();
        store.write_parquet(&path, &[batch]).await.unwrap();
        files.push(path);
        all.extend(events);
    }
    // A path of the data root as a snapshot of the local file system names it.
    let local = |p: &object_store::path::Path| {
        object_store::path::Path::from_filesystem_path(tmp.path().join(p.as_ref())).unwrap()
    };
    let snapshot: HashSet<object_store::path::Path> = files.iter().map(local).collect();
    let mut lookup = ParquetClicks::new(&snapshot, None);
    let day = model::date_of_micros(i64::try_from(day_ms).unwrap() * 1000);
    let (cid0, ms0) = &cids[0];
    let found = lookup.find(cid0, day).unwrap().unwrap();
    assert_eq!(found, ClickRow::of(&click(cid0, *ms0, "s0")));
    let (cid, ms) = &cids[250];
    assert_eq!(
        lookup.find(cid, day).unwrap(),
        Some(ClickRow::of(&click(cid, *ms, "s2")))
    );
    // A click of the middle file: the first file's row group is pruned by its cid range; the
    // last file's range spans both (it holds the late copy of the very first click).
    let read = lookup.groups_read;
    let (cid150, ms150) = &cids[150];
    assert_eq!(
        lookup.find(cid150, day).unwrap(),
        Some(ClickRow::of(&click(cid150, *ms150, "s1")))
    );
    assert_eq!(lookup.groups_read, read + 2);
    // The same ID asked for another day, and an ID never stored, are not found.
    assert_eq!(lookup.find(cid, day.succ_opt().unwrap()).unwrap(), None);
    let (missing, _) = ids.issue(day_ms + 10);
    assert_eq!(lookup.find(&missing, day).unwrap(), None);
    assert_eq!(lookup.footers_read, 3, "each footer of the day read once");

    // The day compacted into one file, as `serve` does once the day is over: the refreshed
    // lookup reads that day's one footer and finds the same winners.
    let date = model::date_of_micros(i64::try_from(day_ms).unwrap() * 1000);
    let compacted = layout::compacted_file(Table::Clicks, date, "n1", 0, 2999);
    let batch = model::to_batch(Table::Clicks, all.iter()).unwrap();
    store.write_parquet(&compacted, &[batch]).await.unwrap();
    for f in &files {
        std::fs::remove_file(tmp.path().join(f.as_ref())).unwrap();
    }
    lookup.refresh(&HashSet::from([local(&compacted)]));
    assert_eq!(
        lookup.find(cid0, day).unwrap(),
        Some(ClickRow::of(&click(cid0, *ms0, "s0")))
    );
    assert_eq!(
        lookup.find(cid150, day).unwrap(),
        Some(ClickRow::of(&click(cid150, *ms150, "s1")))
    );
    assert_eq!(lookup.footers_read, 4, "the new file's footer, once");
}

/// In a large file, only the page holding the ID is decoded.
#[tokio::test]
async fn parquet_lookup_decodes_one_page_of_a_large_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().to_str().unwrap()).unwrap();
    let ids = clickid::Generator::new(clickid::Key::new([4; 32]));
    let day_ms: u64 = 1_793_491_200_000; // 2026-11-01
    let n = 100_000u64;
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let ms = day_ms + i * 100;
            Event::Click(Click {
                cid: ids.issue(ms).0,
                vid: format!("v{i}"),
                ts: i64::try_from(ms).unwrap() * 1000,
                source: Some(format!("s{}", i % 7)),
                campaign: None,
                link: None,
                country: Some("DE".into()),
                device: None,
                cost: Decimal::new(i64::try_from(i).unwrap(), 4),
                subs: Default::default(),
            })
        })
        .collect();
    let date = model::date_of_micros(i64::try_from(day_ms).unwrap() * 1000);
    let path = layout::raw_file(Table::Clicks, date, "n1", 1, n);
    let batch = model::to_batch(Table::Clicks, events.iter()).unwrap();
    store.write_parquet(&path, &[batch]).await.unwrap();
    let file =
        object_store::path::Path::from_filesystem_path(tmp.path().join(path.as_ref())).unwrap();
    let mut lookup = ParquetClicks::new(&HashSet::from([file]), None);
    for i in [0usize, 31_337, 99_999] {
        let Event::Click(c) = &events[i] else {
            unreachable!()
        };
        let before = lookup.rows_read;
        assert_eq!(lookup.find(&c.cid, date).unwrap(), Some(ClickRow::of(c)));
        let decoded = lookup.rows_read - before;
        assert!(
            decoded < n / 4,
            "decoded {decoded} rows of {n} for one click"
        );
    }
}
