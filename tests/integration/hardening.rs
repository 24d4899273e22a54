//! Requests that tried to stop the service, against the real binary: SQL that overflowed a
//! stack, planned for minutes on the postback threads or grew the process by gigabytes, and
//! cross-site or DNS-rebinding requests from a page in the operator's browser.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, client};

/// `POST /api/sql` with `sql`: status and JSON body.
async fn sql(server: &Server, http: &reqwest::Client, sql: &str) -> (u16, Value) {
    let r = http
        .post(server.url("/api/sql"))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    (
        r.status().as_u16(),
        r.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// `SELECT t op t op …` with `terms` terms.
fn chain(term: &str, op: &str, terms: usize) -> String {
    format!("SELECT {}", vec![term; terms].join(op))
}

/// Peak resident memory of process `pid`, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_sql_is_refused_before_planning_and_the_server_lives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = client();
    for (query, why) in [
        // 40 KB: overflowed a worker's stack and aborted the process.
        (chain("1", "+", 20_000), "deep"),
        // Under the size limit but 2,000 deep (8,000 planned for 90 s).
        (chain("1", "+", 2_000), "deep"),
        (chain("true", " OR ", 2_000), "deep"),
        (chain("'a'", " || ", 2_000), "deep"),
        (
            format!("SELECT 1 WHERE {}", vec!["1 = 1"; 1_500].join(" AND ")),
            "deep",
        ),
        ("x".repeat(70_000), "bytes long"),
    ] {
        let (status, body) = sql(&server, &http, &query).await;
        assert_eq!(status, 400, "{}…: {body}", &query[..40.min(query.len())]);
        assert_eq!(body["field"], "sql", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{why}: {body}"
        );
    }
    // Within the limits, a long chain still answers.
    let (status, body) = sql(&server, &http, &chain("1", "+", 200)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"][0]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap(),
        200
    );
    // The server is alive and takes postbacks.
    let (cid, _) = server.click(&http, "source=fb").await;
    assert!(!cid.is_empty());
    assert_eq!(server.health(&http).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_queries_do_not_stall_postbacks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--sql-timeout-secs", "6", "--rate-limit-per-ip", "0"],
    );
    let http = client();
    let base = server.base.clone();
    // Two plans that took 90 s each on the postback threads, and two queries that run on
    // the CPU until their time limit.
    let heavy = [
        chain("1", "+", 8_000),
        chain("1", "+", 8_000),
        "SELECT sum(length(md5(CAST(v AS VARCHAR)))) FROM \
         (SELECT unnest(range(1, 20000000)) AS v) t"
            .to_string(),
        "SELECT count(DISTINCT md5(CAST(v AS VARCHAR))) FROM \
         (SELECT unnest(range(1, 20000000)) AS v) t"
            .to_string(),
    ];
    let queries: Vec<_> = heavy
        .into_iter()
        .map(|q| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = http
                    .post(format!("{base}/api/sql"))
                    .json(&json!({ "sql": q }))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Postbacks at about 100 a second while the queries run.
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let r = http
            .get(server.url(&format!("/api/click?source=load&sub1={i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        latencies.push(started.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(100),
        "postback p99 {p99:?} over {} postbacks while queries ran",
        latencies.len()
    );
    for q in queries {
        let (status, took) = q.await.unwrap();
        // Refused (too deep) or stopped at the time limit, which counts planning.
        assert!([400, 422, 200].contains(&status), "{status}");
        assert!(took < Duration::from_secs(12), "answered after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_cannot_grow_the_process_past_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--sql-max-memory", "256MiB"]);
    let http = client();
    for query in [
        // Reached 8.3 GiB of RSS.
        "SELECT length(repeat('x', 2147483647))",
        "SELECT length(rpad('x', 2147483647, 'y'))",
        "SELECT cardinality(range(0, 2000000000))",
        // An operator's own memory: a sort of 30 M rows.
        "SELECT v FROM (SELECT unnest(range(0, 30000000)) AS v) t ORDER BY v DESC LIMIT 1",
    ] {
        let (status, body) = sql(&server, &http, query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("--sql-max-memory"),
            "{query}: {body}"
        );
    }
    let peak = peak_rss(server.pid());
    assert!(peak < 768 << 20, "peak RSS {} MiB", peak >> 20);
    assert_eq!(server.health(&http).await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_and_foreign_host_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--allowed-host", "tracker.test"]);
    let http = client();
    // A page's simple request: a text/plain POST needs no preflight.
    let r = http
        .post(server.url("/api/webhooks"))
        .header("content-type", "text/plain")
        .body(r#"{"url":"https://evil.example/h","events":["refund","conversion"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http
        .post(server.url("/api/sql"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"sql":"SELECT 1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // A rebinding page: its own name, resolved to 127.0.0.1.
    for path in ["/", "/api/stats", "/api/webhooks", "/api/openapi.json"] {
        let r = http
            .get(server.url(path))
            .header("host", "evil.example:8080")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = http
        .post(server.url("/api/webhooks"))
        .header("host", "evil.example")
        .json(&json!({"url": "https://evil.example/h", "events": ["refund"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(server.url("/api/webhooks")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["webhooks"], json!([]), "nothing was created");
    // Loopback names and the allowed one are served; postbacks come by any name.
    server.wait_serving(&http).await;
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "tracker.test"] {
        let r = http
            .get(server.url("/api/stats"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let r = http
        .get(server.url("/api/click?source=fb"))
        .header("host", "track.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // JSON is accepted.
    let (status, _) = sql(&server, &http, "SELECT 1").await;
    assert_eq!(status, 200);
    drop(server);

    // With an API key, a page cannot authenticate: any Host is served.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "k3y-from-a-file\n").unwrap();
    let server = Server::start(dir.path(), &["--api-key-file", key_file.to_str().unwrap()]);
    let r = http
        .get(server.url("/api/webhooks"))
        .header("host", "stats.example.com")
        .bearer_auth("k3y-from-a-file")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(server.url("/api/webhooks")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
