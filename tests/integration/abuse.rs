//! HTTP abuse, against the real server: a client slow to send its headers is disconnected,
//! the per-IP rate limit answers 429 with Retry-After and records nothing (a forged
//! X-Forwarded-For does not escape it unless the peer is a trusted proxy), and connections
//! beyond the limit are closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Server, client};

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Whether the server closed `stream` (a read returns end of file or a reset) within `within`.
fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer, then the close
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Conversion `i`, claiming (in `X-Forwarded-For`) to come from its own client address.
async fn forwarded_postback(http: &reqwest::Client, server: &Server, i: u32) -> reqwest::Response {
    http.get(server.url(&format!("/api/conversion?cid=c{i}&amount=1")))
        .header("x-forwarded-for", format!("203.0.113.{i}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_send_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--header-read-timeout-ms", "500"]);
    let mut slow = TcpStream::connect(addr(&server)).unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(
        closed(&mut slow, Duration::from_secs(5)),
        "still open after 5 s"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed too early: {waited:?}"
    );
    // A client that sends its request in time is served.
    let h = server.health(&client()).await;
    assert_eq!(h["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_and_forged_forwarding_does_not_escape_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--rate-limit-per-ip", "2", "--rate-limit-burst", "3"],
    );
    let http = client();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = forwarded_postback(&http, &server, i).await;
        if r.status() == 429 {
            let after: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&after), "{after}");
        }
        statuses.push(r.status().as_u16());
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!((3..=4).contains(&ok), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // What was refused was not recorded.
    let h = server.health(&http).await;
    assert_eq!(h["ingest"]["recorded"], ok as u64, "{h}");
    // Health and queries are not postbacks: not limited.
    for _ in 0..5 {
        assert_eq!(server.health(&http).await["ok"], true);
    }
    server.stop();

    // Behind a trusted proxy, each forwarded client has its own bucket.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--rate-limit-per-ip",
            "2",
            "--rate-limit-burst",
            "3",
            "--trusted-proxy",
            "127.0.0.1",
        ],
    );
    for i in 0..8 {
        assert_eq!(forwarded_postback(&http, &server, i).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-connections", "2"]);
    let _first = TcpStream::connect(addr(&server)).unwrap();
    let _second = TcpStream::connect(addr(&server)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(addr(&server)).unwrap();
    third
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok();
    assert!(
        closed(&mut third, Duration::from_secs(3)),
        "a third connection was served"
    );
    drop(_first);
    // Once one closes, a new connection is served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr(&server)).unwrap();
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.read_to_string(&mut body);
        if body.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {body:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The postback token and the API key never reach the logs, even at debug level, whether they
/// come right, wrong, in the query string, a header or a malformed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_netrev"))
        .args(["serve", "--data"])
        .arg(dir.path().join("data"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--postback-token",
            "tok-SECRET-1234",
        ])
        .args(["--api-key", "key-SECRET-5678"])
        .env("NETREV_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("netrev listening on ")
        .unwrap()
        .to_string();
    let http = client();
    for path in [
        "/api/click?source=a&token=tok-SECRET-1234",
        "/api/click?source=a&token=tok-SECRET-1234x",
        "/api/conversion?cid=c1&amount=zzz&token=tok-SECRET-1234",
        "/api/conversion?cid=c1&amount=1&amount=2&token=tok-SECRET-1234",
    ] {
        http.get(format!("{base}{path}")).send().await.unwrap();
    }
    http.post(format!("{base}/api/conversion/refund"))
        .header("x-postback-token", "tok-SECRET-1234")
        .header("content-type", "application/json")
        .body(r#"{"cid": "c1", "amount": "bad", "token": "tok-SECRET-1234"}"#)
        .send()
        .await
        .unwrap();
    for key in ["key-SECRET-5678", "key-SECRET-5678-wrong"] {
        http.get(format!("{base}/api/stats"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.is_empty(),
        "debug logging wrote nothing: the test would prove nothing"
    );
    assert!(!text.contains("SECRET"), "a secret in the logs:\n{text}");
}

/// A connection to `server` from the loopback address `from` (another client address).
async fn connect_from(from: &str, server: &Server) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr(server).parse().unwrap()).await.unwrap();
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_trickling_and_crowding_connections_are_closed_while_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--idle-timeout-secs",
            "2",
            "--body-timeout-secs",
            "3",
            "--max-connections-per-ip",
            "20",
        ],
    );
    let http = client();
    let opened = Instant::now();
    // One address holds its 20 connections, sending nothing; a 21st is closed at once.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(connect_from("127.0.0.2", &server).await);
    }
    let mut extra = connect_from("127.0.0.2", &server).await;
    assert!(
        closed(&mut extra, Duration::from_secs(1)),
        "a 21st connection from one address stayed open"
    );
    // Another client is served meanwhile.
    assert_eq!(server.health(&http).await["ok"], true);

    // An HTTP/2 client that sends only its preface and settings.
    let mut h2 = TcpStream::connect(addr(&server)).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let h2_opened = Instant::now();
    // When it is closed, timed from the side (the steps below take longer than the timeout).
    let h2_closed = std::thread::spawn(move || {
        h2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut frames = Vec::new();
        let _ = h2.read_to_end(&mut frames);
        h2_opened.elapsed()
    });

    // A body trickled a byte every half second: 408 at the body timeout, then closed.
    let mut trickle = TcpStream::connect(addr(&server)).unwrap();
    trickle
        .write_all(
            b"POST /api/conversion HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
        )
        .unwrap();
    let started = Instant::now();
    let mut writer = trickle.try_clone().unwrap();
    let dripping = std::thread::spawn(move || {
        for _ in 0..40 {
            if writer.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    trickle
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = trickle.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_millis(2_500) && took < Duration::from_secs(6),
        "answered after {took:?}"
    );
    dripping.join().unwrap();
    // Nothing of it was recorded.
    server.wait_flushed(&http).await;
    assert!(crate::harness::read_table(dir.path(), netrev_storage::Table::Conversions).is_empty());

    // The HTTP/2 connection was closed at the idle timeout (2 s), not at once, not never.
    let h2_after = h2_closed.join().unwrap();
    assert!(
        h2_after >= Duration::from_millis(1_500) && h2_after < Duration::from_secs(5),
        "the HTTP/2 connection was closed after {h2_after:?}"
    );
    // The silent connections are closed too.
    for mut s in silent {
        assert!(
            closed(&mut s, Duration::from_secs(5)),
            "a silent connection stayed open {:?}",
            opened.elapsed()
        );
    }
    // Then the address is served again.
    let mut again = connect_from("127.0.0.2", &server).await;
    again
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    again.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_is_disconnected_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--idle-timeout-secs", "2"]);
    let http = client();
    server.wait_serving(&http).await;
    // An HTTP/2 client that allows no data to be sent to it (initial window 0), then asks for
    // an answer: the answer can never be sent, so the request never ends by itself.
    let mut stalled = TcpStream::connect(addr(&server)).unwrap();
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE (4) = 0.
    frames.extend([0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x4, 0, 0, 0, 0]);
    // HEADERS on stream 1, END_STREAM | END_HEADERS: GET http://localhost/api/openapi.json,
    // in HPACK with the static table's names and literal values.
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(0x44u8, "/api/openapi.json"), (0x41, "localhost")] {
        block.push(index);
        block.push(u8::try_from(value.len()).unwrap());
        block.extend(value.bytes());
    }
    frames.extend([
        0,
        0,
        u8::try_from(block.len()).unwrap(),
        0x1,
        0x5,
        0,
        0,
        0,
        1,
    ]);
    frames.extend(block);
    stalled.write_all(&frames).unwrap();
    let opened = Instant::now();
    // It is idle: closed at the idle timeout (the HTTP/2 keep-alive would take 40 s).
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut got = Vec::new();
    let ended = stalled.read_to_end(&mut got);
    let after = opened.elapsed();
    assert!(
        ended.is_ok() && after < Duration::from_secs(8),
        "{ended:?} after {after:?}"
    );
    assert_eq!(server.health(&http).await["ok"], true);
}
