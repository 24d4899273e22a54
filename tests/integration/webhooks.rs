//! Webhooks end to end: a receiver on 127.0.0.1 gets signed messages for refunds and
//! conversions posted to the real server; failures are retried under the same `webhook-id`,
//! 410 disables the endpoint, a message accepted before kill -9 is delivered after the
//! restart, and targets that are or resolve to internal addresses are refused.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::Mac as _;
use serde_json::{Value, json};

use crate::harness::{Endpoint, Server, Service, client, postback};

/// What the receiver got, and the statuses it answers next (200 when none are left).
#[derive(Default)]
struct Inbox {
    received: Vec<(HeaderMap, Bytes)>,
    answers: VecDeque<u16>,
}

type Shared = Arc<Mutex<Inbox>>;

async fn receive(State(inbox): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut inbox = inbox.lock().unwrap();
    inbox.received.push((headers, body));
    StatusCode::from_u16(inbox.answers.pop_front().unwrap_or(200)).unwrap()
}

/// Starts a receiver on `listener`; returns what it records.
fn receiver(listener: std::net::TcpListener, answers: &[u16]) -> Shared {
    let inbox = Arc::new(Mutex::new(Inbox {
        answers: answers.iter().copied().collect(),
        ..Inbox::default()
    }));
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    inbox
}

fn free_listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(server: &Endpoint, http: &reqwest::Client, url: &str, events: &[&str]) -> Value {
    let r = http
        .post(server.url("/api/webhooks"))
        .json(&json!({"url": url, "events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn get_json(server: &Endpoint, http: &reqwest::Client, path: &str) -> Value {
    let r = http.get(server.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// Checks the Standard Webhooks signature of a received message with the endpoint's secret.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let h = |name: &str| headers[name].to_str().unwrap().to_string();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(h("webhook-signature"), expected);
    let ts: i64 = h("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
}

fn ids(inbox: &Shared) -> Vec<String> {
    inbox
        .lock()
        .unwrap()
        .received
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_signed_retried_and_410_disables() {
    let (listener, port) = free_listener();
    let inbox = receiver(listener, &[500, 503]);
    let server = Service::start(&[
        "--webhooks-allow-private",
        "--webhooks-retry-schedule",
        "0,0.2,0.2,0.2",
    ])
    .await;
    let http = client();
    let url = format!("http://127.0.0.1:{port}/hook");
    let endpoint = create(&server, &http, &url, &["refund"]).await;
    let (id, secret) = (
        endpoint["id"].as_str().unwrap(),
        endpoint["secret"].as_str().unwrap(),
    );
    let (cid, vid) = server
        .click(&http, "source=fb&campaign=spring&country=US&device=mobile")
        .await;
    postback(
        &server,
        &http,
        &format!("/api/conversion?cid={cid}&amount=50&txid=T1"),
    )
    .await;
    postback(
        &server,
        &http,
        &format!("/api/conversion/refund?cid={cid}&amount=20&type=cb&txid=R1&ref=T1"),
    )
    .await;

    // Two failures, then success: the same message three times.
    wait_for("three attempts", || ids(&inbox).len() >= 3).await;
    let got = ids(&inbox);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter().all(|i| i == &got[0] && i.starts_with("msg_")),
        "{got:?}"
    );
    let (headers, body) = inbox.lock().unwrap().received[2].clone();
    verify(secret, &headers, &body);
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(message["type"], "refund.created");
    let data = &message["data"];
    assert_eq!(data["cid"], cid.as_str());
    assert_eq!(data["vid"], vid.as_str());
    assert_eq!(data["amount"], "20.00");
    assert_eq!(data["refund_type"], "chargeback");
    assert_eq!(data["txid"], "R1");
    assert_eq!(data["ref"], "T1");
    assert_eq!(data["click"]["source"], "fb");
    assert_eq!(data["click"]["campaign"], "spring");
    assert_eq!(data["click"]["country"], "US");
    assert_eq!(data["visitor"]["gross"], "50.00");
    assert_eq!(data["visitor"]["refunds"], "20.00");
    assert_eq!(data["visitor"]["net"], "30.00");

    // The deliveries route shows the attempts.
    let deliveries = get_json(&server, &http, &format!("/api/webhooks/{id}/deliveries")).await;
    let list = deliveries["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{deliveries}");
    assert_eq!(list[0]["id"], got[0].as_str());
    assert_eq!(list[0]["status"], "delivered");
    let statuses: Vec<&Value> = list[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(500), &json!(503), &json!(200)]);

    // A retried postback is the same refund: no second message.
    postback(
        &server,
        &http,
        &format!("/api/conversion/refund?cid={cid}&amount=20&type=cb&txid=R1&ref=T1"),
    )
    .await;
    // "Retry now" sends it once more, under the same id.
    let r = http
        .post(server.url(&format!("/api/webhooks/{id}/deliveries/{}/retry", got[0])))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_for("the manual retry", || ids(&inbox).len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ids(&inbox), vec![got[0].clone(); 4]);

    // 410 Gone disables the endpoint; later refunds are not sent to it.
    inbox.lock().unwrap().answers.push_back(410);
    postback(
        &server,
        &http,
        &format!("/api/conversion/refund?cid={cid}&amount=5&txid=R2"),
    )
    .await;
    wait_for("the 410 attempt", || ids(&inbox).len() >= 5).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = get_json(&server, &http, "/api/webhooks").await;
        if list["webhooks"][0]["disabled"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    postback(
        &server,
        &http,
        &format!("/api/conversion/refund?cid={cid}&amount=5&txid=R3"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ids(&inbox).len(), 5);

    // PATCH re-enables it and changes its events: conversions only now.
    let patch = |body: Value| {
        http.patch(server.url(&format!("/api/webhooks/{id}")))
            .json(&body)
            .send()
    };
    let r = patch(json!({"enabled": true, "events": ["conversion"], "description": "CRM"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["disabled"], false, "{changed}");
    assert_eq!(changed["events"], json!(["conversion"]));
    assert_eq!(changed["description"], "CRM");
    assert!(changed.get("secret").is_none(), "{changed}");
    postback(
        &server,
        &http,
        &format!("/api/conversion/refund?cid={cid}&amount=1&txid=R4"),
    )
    .await;
    postback(
        &server,
        &http,
        &format!("/api/conversion?cid={cid}&amount=7&txid=T2"),
    )
    .await;
    wait_for("the conversion after re-enabling", || {
        ids(&inbox).len() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = inbox.lock().unwrap().received.clone();
    assert_eq!(received.len(), 6);
    let last: Value = serde_json::from_slice(&received[5].1).unwrap();
    assert_eq!(last["type"], "conversion.created", "{last}");
    // Bad changes are refused and change nothing; an unknown endpoint is 404.
    for (bad, field) in [
        (json!({"events": []}), "events"),
        (json!({"events": ["sale"]}), "events"),
        (json!({"url": "ftp://x.example/"}), "url"),
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"enable": true}), "body"),
    ] {
        let r = patch(bad.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["field"], field, "{bad}: {e}");
    }
    let list = get_json(&server, &http, "/api/webhooks").await;
    assert_eq!(
        list["webhooks"][0]["events"],
        json!(["conversion"]),
        "{list}"
    );
    let r = http
        .patch(server.url("/api/webhooks/wh_none"))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_accepted_before_kill_9_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the port yet: attempts are refused until the receiver starts.
    let (listener, port) = free_listener();
    drop(listener);
    let args = [
        "--webhooks-allow-private",
        "--webhooks-retry-schedule",
        "0,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
    ];
    let server = Server::start(dir.path(), &args);
    let http = client();
    let url = format!("http://127.0.0.1:{port}/hook");
    let endpoint = create(&server, &http, &url, &["conversion"]).await;
    let (id, secret) = (
        endpoint["id"].as_str().unwrap().to_string(),
        endpoint["secret"].as_str().unwrap().to_string(),
    );
    let (cid, _) = server.click(&http, "source=native").await;
    postback(
        &server,
        &http,
        &format!("/api/conversion?cid={cid}&amount=12.5&txid=S1"),
    )
    .await;
    let path = format!("/api/webhooks/{id}/deliveries");
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        let d = get_json(&server, &http, &path).await;
        if let Some(first) = d["deliveries"].as_array().unwrap().first()
            && !first["attempts"].as_array().unwrap().is_empty()
        {
            assert_eq!(first["status"], "pending", "{d}");
            assert!(first["attempts"][0]["error"].is_string(), "{d}");
            break first["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no failed attempt: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.kill9();

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let inbox = receiver(listener, &[]);
    let server = Server::start(dir.path(), &args);
    wait_for("the delivery after restart", || !ids(&inbox).is_empty()).await;
    let (headers, body) = inbox.lock().unwrap().received[0].clone();
    assert_eq!(headers["webhook-id"].to_str().unwrap(), message);
    verify(&secret, &headers, &body);
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(message["type"], "conversion.created");
    assert_eq!(message["data"]["amount"], "12.50");
    assert_eq!(message["data"]["click"]["source"], "native");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = get_json(&server, &http, &path).await;
        if d["deliveries"][0]["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not recorded as delivered: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused() {
    let server = Service::start(&["--webhooks-retry-schedule", "0"]).await;
    let http = client();
    for target in [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://2130706433/hook",
    ] {
        let r = http
            .post(server.url("/api/webhooks"))
            .json(&json!({"url": target, "events": ["refund"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{target}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], "url", "{target}: {body}");
    }
    // A name is accepted, but refused where the connection would be made: it resolves to
    // a loopback address.
    let (listener, port) = free_listener();
    let inbox = receiver(listener, &[]);
    let endpoint = create(
        &server,
        &http,
        &format!("http://localhost:{port}/hook"),
        &["refund"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let (cid, _) = server.click(&http, "source=fb").await;
    postback(
        &server,
        &http,
        &format!("/api/conversion/refund?cid={cid}&amount=3"),
    )
    .await;
    let error = first_failed_attempt(&server, &http, id).await;
    assert!(error.contains("refused"), "{error}");
    assert!(ids(&inbox).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_description_is_refused_and_nothing_is_added() {
    let server = Service::start(&[]).await;
    let http = client();
    let r = http
        .post(server.url("/api/webhooks"))
        .json(&json!({
            "url": "https://crm.example.com/hooks",
            "events": ["refund"],
            "description": "d".repeat(10_000),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "description", "{body}");
    let list = get_json(&server, &http, "/api/webhooks").await;
    assert_eq!(list["webhooks"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_may_not_be_framed_and_runs_only_its_own_code() {
    let server = Service::start(&[]).await;
    let http = client();
    for path in ["/", "/assets/app.js"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = |name: &str| {
            r.headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path} has no {name}"))
                .to_str()
                .unwrap()
                .to_string()
        };
        let csp = h("content-security-policy");
        for directive in [
            "frame-ancestors 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_records_no_address() {
    let server = Service::start(&["--webhooks-retry-schedule", "0"]).await;
    let http = client();
    // A literal internal address is refused on creation; a name that resolves to one is
    // accepted and refused where the connection would be made.
    let (listener, port) = free_listener();
    let inbox = receiver(listener, &[]);
    let endpoint = create(
        &server,
        &http,
        &format!("http://localhost:{port}/hook"),
        &["conversion"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let (cid, _) = server.click(&http, "source=fb").await;
    postback(
        &server,
        &http,
        &format!("/api/conversion?cid={cid}&amount=10&txid=A1"),
    )
    .await;
    let error = first_failed_attempt(&server, &http, id).await;
    assert!(
        error.contains("private") && error.contains("refused"),
        "{error}"
    );
    for address in ["127.0.0.1", "::1", "127.", "0:0:0"] {
        assert!(!error.contains(address), "{error}");
    }
    assert!(!error.chars().any(|c| c.is_ascii_digit()), "{error}");
    assert!(ids(&inbox).is_empty());
}

/// The error of the first attempt of endpoint `id`'s first message, once that has failed.
async fn first_failed_attempt(server: &Endpoint, http: &reqwest::Client, id: &str) -> String {
    let path = format!("/api/webhooks/{id}/deliveries");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = get_json(server, http, &path).await;
        if d["deliveries"][0]["status"] == "failed" {
            return d["deliveries"][0]["attempts"][0]["error"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert!(Instant::now() < deadline, "no refused attempt: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
