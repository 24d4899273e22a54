//! Every route, method, body type and alias; bad input refused with the right field and
//! nothing recorded; tokens; body limit.

use std::str::FromStr;

use netrev_storage::model::Table;
use netrev_storage::{Event, RefundType};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::harness::{Endpoint, Server, Service, client, read_table};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Sends one request in one of the three encodings and returns (status, body).
#[derive(Clone, Copy, Debug)]
enum Via {
    Get,
    Form,
    Json,
}

async fn send(
    c: &reqwest::Client,
    s: &Endpoint,
    path: &str,
    via: Via,
    params: &[(&str, &str)],
) -> (u16, Value) {
    let url = s.url(path);
    let req = match via {
        Via::Get => c.get(&url).query(params),
        Via::Form => c.post(&url).form(params),
        Via::Json => {
            let obj: serde_json::Map<String, Value> = params
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            c.post(&url).json(&obj)
        }
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_route_method_and_alias_is_recorded_exactly() {
    let s = Service::start(&[]).await;
    let c = client();

    // Clicks: GET, form and JSON; vid kept or generated; cost default 0.
    let (cid1, vid1) = s.click(&c, "source=fb&campaign=summer&link=l1&country=DE&device=mobile&cost=0.0500&vid=visitor-1&sub1=a&sub5=e").await;
    assert_eq!(vid1, "visitor-1");
    let r: Value = c
        .post(s.url("/api/click"))
        .form(&[("source", "google")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid2 = r["cid"].as_str().unwrap().to_string();
    assert!(!r["vid"].as_str().unwrap().is_empty());
    let r: Value = c
        .post(s.url("/api/click"))
        .json(&json!({"source": "tiktok", "cost": 1.25}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid3 = r["cid"].as_str().unwrap().to_string();
    assert!(cid1 < cid2 && cid2 < cid3, "click IDs sort by time");

    // Conversions: every encoding, `payout` alias, JSON number amount.
    for (via, txid, amount_key, amount) in [
        (Via::Get, "g1", "amount", "49.99"),
        (Via::Form, "f1", "payout", "10"),
        (Via::Json, "j1", "amount", "0.1"),
    ] {
        let (st, body) = send(
            &c,
            &s,
            "/api/conversion",
            via,
            &[
                ("cid", &cid1),
                (amount_key, amount),
                ("txid", txid),
                ("type", "sale"),
            ],
        )
        .await;
        assert_eq!((st, body.clone()), (200, json!({"ok": true})), "{via:?}");
    }
    let r = c
        .post(s.url("/api/conversion"))
        .json(&json!({"cid": cid2, "amount": 0.2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Query string plus POST body together.
    let r = c
        .post(s.url(&format!("/api/conversion?cid={cid3}")))
        .form(&[("amount", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "zero-amount conversions are allowed");

    // Refunds: every type alias, negative amounts, ref, every encoding.
    let refunds = [
        (Via::Get, "chargeback", "-5.5", "r1"),
        (Via::Form, "cb", "5.5", "r2"),
        (Via::Json, "customer_request", "1", "r3"),
        (Via::Get, "refund", "2", "r4"),
        (Via::Form, "request", "3", "r5"),
        (Via::Json, "", "4.0001", "r6"),
    ];
    for (via, ty, amount, txid) in refunds {
        let mut p = vec![
            ("cid", cid1.as_str()),
            ("amount", amount),
            ("txid", txid),
            ("ref", "g1"),
        ];
        if !ty.is_empty() {
            p.push(("type", ty));
        }
        let (st, body) = send(&c, &s, "/api/conversion/refund", via, &p).await;
        assert_eq!((st, body), (200, json!({"ok": true})), "{via:?} {ty}");
    }
    s.wait_flushed(&c).await;

    let clicks = s.read_table(Table::Clicks).await;
    assert_eq!(clicks.len(), 3);
    let Some(Event::Click(first)) = clicks
        .iter()
        .find(|e| matches!(e, Event::Click(c) if c.cid == cid1))
    else {
        panic!()
    };
    assert_eq!(first.source.as_deref(), Some("fb"));
    assert_eq!(first.cost, dec("0.05"));
    assert_eq!(first.subs[0].as_deref(), Some("a"));
    assert_eq!(first.subs[4].as_deref(), Some("e"));
    assert_eq!(first.subs[1], None);
    assert_eq!(
        (first.ts / 1000) as u64,
        netrev_storage::clickid::millis(&cid1).unwrap()
    );
    let Some(Event::Click(third)) = clicks
        .iter()
        .find(|e| matches!(e, Event::Click(c) if c.cid == cid3))
    else {
        panic!()
    };
    assert_eq!(third.cost, dec("1.25"));

    let mut convs: Vec<(String, Decimal, Option<String>)> = s
        .read_table(Table::Conversions)
        .await
        .into_iter()
        .map(|e| match e {
            Event::Conversion(c) => (c.cid, c.amount, c.txid),
            _ => unreachable!(),
        })
        .collect();
    convs.sort();
    let mut want = vec![
        (cid1.clone(), dec("49.99"), Some("g1".to_string())),
        (cid1.clone(), dec("10"), Some("f1".to_string())),
        (cid1.clone(), dec("0.1"), Some("j1".to_string())),
        (cid2.clone(), dec("0.2"), None),
        (cid3.clone(), dec("0"), None),
    ];
    want.sort();
    assert_eq!(convs, want);

    let mut refs: Vec<(String, Decimal, RefundType, Option<String>)> = s
        .read_table(Table::Refunds)
        .await
        .into_iter()
        .map(|e| match e {
            Event::Refund(r) => (r.txid.unwrap(), r.amount, r.kind, r.reference),
            _ => unreachable!(),
        })
        .collect();
    refs.sort_by(|a, b| a.0.cmp(&b.0));
    let g1 = Some("g1".to_string());
    assert_eq!(
        refs,
        vec![
            ("r1".into(), dec("5.5"), RefundType::Chargeback, g1.clone()),
            ("r2".into(), dec("5.5"), RefundType::Chargeback, g1.clone()),
            (
                "r3".into(),
                dec("1"),
                RefundType::CustomerRequest,
                g1.clone()
            ),
            (
                "r4".into(),
                dec("2"),
                RefundType::CustomerRequest,
                g1.clone()
            ),
            (
                "r5".into(),
                dec("3"),
                RefundType::CustomerRequest,
                g1.clone()
            ),
            (
                "r6".into(),
                dec("4.0001"),
                RefundType::CustomerRequest,
                g1.clone()
            ),
        ]
    );
}

/// One malformed request: where it goes, how, and the field the 400 must name.
struct Bad {
    path: &'static str,
    query: String,
    body: Option<(&'static str, Vec<u8>)>,
    field: &'static str,
}

fn get(path: &'static str, query: &str, field: &'static str) -> Bad {
    Bad {
        path,
        query: query.to_string(),
        body: None,
        field,
    }
}

fn post(path: &'static str, ct: &'static str, body: &[u8], field: &'static str) -> Bad {
    Bad {
        path,
        query: String::new(),
        body: Some((ct, body.to_vec())),
        field,
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_its_field_and_records_nothing() {
    let s = Service::start(&[]).await;
    let c = client();
    let (cid, _) = s.click(&c, "source=x").await;
    // A valid-looking netrev ID with a wrong MAC: flip the last character.
    let mut forged = cid.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let long = "x".repeat(300);
    let conv = "/api/conversion";
    let refund = "/api/conversion/refund";
    let click = "/api/click";
    let form = "application/x-www-form-urlencoded";
    let js = "application/json";
    let cases = vec![
        get(conv, "amount=1", "cid"),
        get(conv, "cid=&amount=1", "cid"),
        get(conv, &format!("cid={cid}"), "amount"),
        get(conv, &format!("cid={cid}&amount="), "amount"),
        get(conv, &format!("cid={cid}&amount=abc"), "amount"),
        get(conv, &format!("cid={cid}&amount=1e3"), "amount"),
        get(conv, &format!("cid={cid}&amount=NaN"), "amount"),
        get(conv, &format!("cid={cid}&amount=inf"), "amount"),
        get(conv, &format!("cid={cid}&amount=12,50"), "amount"),
        get(
            conv,
            &format!("cid={cid}&amount=12345678901234567890"),
            "amount",
        ),
        get(conv, &format!("cid={cid}&amount=1.23456"), "amount"),
        get(conv, &format!("cid={cid}&amount=-5"), "amount"),
        get(conv, &format!("cid={cid}&amount=%2B5"), "amount"),
        get(conv, &format!("cid={cid}&amount=.5"), "amount"),
        get(conv, &format!("cid={cid}&amount=1&payout=2"), "amount"),
        get(conv, &format!("cid={cid}&payout=0x10"), "payout"),
        get(conv, &format!("cid={cid}&amount=1&amount=2"), "amount"),
        get(conv, "cid=has%20space&amount=1", "cid"),
        get(conv, &format!("cid={}&amount=1", "c".repeat(65)), "cid"),
        get(conv, &format!("cid={forged}&amount=1"), "cid"),
        get(conv, &format!("cid={cid}&amount=1&txid=%FF%FE"), "txid"),
        get(conv, &format!("cid={cid}&amount=1&txid={long}"), "txid"),
        get(conv, &format!("cid={cid}&amount=1&type=a%00b"), "type"),
        get(refund, &format!("cid={cid}&amount=0"), "amount"),
        get(refund, &format!("cid={cid}&amount=-0.00"), "amount"),
        get(refund, &format!("cid={cid}&amount=5&type=gift"), "type"),
        get(refund, &format!("cid={cid}"), "amount"),
        get(refund, "amount=5", "cid"),
        get(refund, &format!("cid={cid}&amount=5&ref={long}"), "ref"),
        get(refund, &format!("cid={cid}&amount=5&cid=other"), "cid"),
        get(click, "cost=-1", "cost"),
        get(click, "cost=free", "cost"),
        get(click, "vid=not%20ok", "vid"),
        get(click, &format!("source={long}"), "source"),
        get(click, "sub3=%E2%82", "sub3"),
        post(
            conv,
            form,
            format!("cid={cid}&amount=1e3").as_bytes(),
            "amount",
        ),
        post(conv, form, b"cid=\xff\xfe&amount=1", "cid"),
        post(
            conv,
            js,
            format!(r#"{{"cid":"{cid}","amount":1e3}}"#).as_bytes(),
            "amount",
        ),
        post(
            conv,
            js,
            format!(r#"{{"cid":"{cid}","amount":"NaN"}}"#).as_bytes(),
            "amount",
        ),
        post(
            conv,
            js,
            format!(r#"{{"cid":"{cid}","amount":[1]}}"#).as_bytes(),
            "amount",
        ),
        post(
            conv,
            js,
            format!(r#"{{"cid":"{cid}","cid":"x","amount":1}}"#).as_bytes(),
            "cid",
        ),
        post(conv, js, b"{not json", ""),
        post(conv, js, b"[1,2,3]", ""),
        post(
            refund,
            js,
            format!(r#"{{"cid":"{cid}","amount":0}}"#).as_bytes(),
            "amount",
        ),
        post(
            refund,
            js,
            format!(r#"{{"cid":"{cid}","amount":5,"type":"CB2"}}"#).as_bytes(),
            "type",
        ),
    ];
    assert!(cases.len() >= 30);
    for case in &cases {
        let url = if case.query.is_empty() {
            s.url(case.path)
        } else {
            s.url(&format!("{}?{}", case.path, case.query))
        };
        let req = match &case.body {
            None => c.get(&url),
            Some((ct, body)) => c.post(&url).header("content-type", *ct).body(body.clone()),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 400, "{} {} -> {body}", case.path, case.query);
        assert_eq!(body["ok"], false);
        assert_eq!(
            body["field"], case.field,
            "{} {} -> {body}",
            case.path, case.query
        );
        assert!(!body["error"].as_str().unwrap().is_empty());
    }

    // Oversized body: 413.
    let big = format!("cid={cid}&amount=1&pad={}", "x".repeat(70 * 1024));
    let r = c
        .post(s.url(conv))
        .header("content-type", form)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["ok"], false);

    // Nothing but the one click was recorded.
    let h = s.health(&c).await;
    assert_eq!(h["ingest"]["recorded"], 1, "{h}");
    s.wait_flushed(&c).await;
    assert!(s.read_table(Table::Conversions).await.is_empty());
    assert!(s.read_table(Table::Refunds).await.is_empty());
    assert_eq!(s.read_table(Table::Clicks).await.len(), 1);
}

#[tokio::test]
async fn postback_token_is_required_when_configured() {
    let s = Service::start(&["--postback-token", "s3cret"]).await;
    let c = client();
    let r = c.get(s.url("/api/click?source=x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "token");
    let r = c
        .get(s.url("/api/click?source=x&token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(s.url("/api/click?source=x&token=s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(s.url("/api/click"))
        .header("x-postback-token", "s3cret")
        .form(&[("source", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(s.url("/api/click"))
        .header("x-postback-token", "s3cre")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Without the token, malformed input is not judged: 401, not 400.
    let r = c
        .get(s.url("/api/conversion?amount=1e3&cid=%zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // With it, the same request is judged.
    let r = c
        .get(s.url("/api/conversion?amount=1e3&cid=%zz&token=s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // HEAD never records, even with a valid postback.
    let r = c
        .head(s.url("/api/click?source=x&token=s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(s.health(&c).await["ingest"]["recorded"], 2);
}

/// Ten copies each of two conversions and two refunds (with and without txid), concurrently,
/// in all three encodings.
async fn retry_round(c: &reqwest::Client, s: &Server, cid: &str) -> Vec<(u16, Value)> {
    let posts: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/api/conversion",
            vec![("cid", cid), ("amount", "20.00"), ("txid", "T-1")],
        ),
        ("/api/conversion", vec![("cid", cid), ("amount", "5")]),
        (
            "/api/conversion/refund",
            vec![("cid", cid), ("amount", "-7.5"), ("txid", "R-1")],
        ),
        (
            "/api/conversion/refund",
            vec![
                ("cid", cid),
                ("amount", "2.50"),
                ("type", "cb"),
                ("ref", "T-1"),
            ],
        ),
    ];
    let futs = (0..10).flat_map(|i| {
        let via = [Via::Get, Via::Form, Via::Json][i % 3];
        posts.iter().map(move |(path, p)| send(c, s, path, via, p))
    });
    futures::future::join_all(futs).await
}

/// The same conversion and refund sent 10 times concurrently, then 10 more times after a
/// kill -9 and restart, are stored once.
#[tokio::test]
async fn duplicates_are_stored_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let s = Server::start(dir.path(), &[]);
    let (cid, _) = s.click(&c, "source=dup").await;
    for (st, body) in retry_round(&c, &s, &cid).await {
        assert_eq!((st, body), (200, json!({"ok": true})));
    }
    // Let the first copies reach Parquet, then crash and retry against the new process.
    s.wait_flushed(&c).await;
    // Also leave one copy only in the WAL at the moment of the crash.
    let (st, _) = send(
        &c,
        &s,
        "/api/conversion",
        Via::Get,
        &[("cid", &cid), ("amount", "1"), ("txid", "T-2")],
    )
    .await;
    assert_eq!(st, 200);
    s.kill9();
    let s = Server::start(dir.path(), &[]);
    for (st, body) in retry_round(&c, &s, &cid).await {
        assert_eq!((st, body), (200, json!({"ok": true})));
    }
    let (st, _) = send(
        &c,
        &s,
        "/api/conversion",
        Via::Form,
        &[("cid", &cid), ("amount", "1"), ("txid", "T-2")],
    )
    .await;
    assert_eq!(st, 200);
    s.wait_flushed(&c).await;
    assert_eq!(read_table(dir.path(), Table::Conversions).len(), 3);
    assert_eq!(read_table(dir.path(), Table::Refunds).len(), 2);
    // Different amount without txid is a different refund.
    let (st, _) = send(
        &c,
        &s,
        "/api/conversion/refund",
        Via::Get,
        &[
            ("cid", &cid),
            ("amount", "2.51"),
            ("type", "cb"),
            ("ref", "T-1"),
        ],
    )
    .await;
    assert_eq!(st, 200);
    s.wait_flushed(&c).await;
    assert_eq!(read_table(dir.path(), Table::Refunds).len(), 3);
}
