//! The IPN adapters through the real server: for each network a sale (sent three times, as
//! networks retry), a refund, a chargeback, a test notification, one that is not ours, and a
//! tampered one; the raw tables then hold exactly the sale, the refund and the chargeback,
//! with exact amounts, types, transaction IDs and links.
//!
//! The notifications are built here the way each network documents it (signatures computed
//! independently of the server's code).

use std::collections::BTreeSet;

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use netrev_storage::Event;
use netrev_storage::model::Table;
use serde_json::json;
use sha1::Sha1;
use sha2::{Digest, Sha512};

use crate::harness::{Endpoint, Server, Service, client, read_table};

const CLICKBANK: &str = "MYSECRETKEY";
const JVZOO: &str = "SECRETKEY123";
const WARRIORPLUS: &str = "MyKey123";
const DIGISTORE24: &str = "s3cret-passphrase";

/// ClickBank INS 6.0: the notification encrypted with AES-256-CBC (PKCS#7) under the text of
/// the first 32 hex digits of SHA-1(secret key).
fn clickbank(secret: &str, notification: serde_json::Value) -> Vec<u8> {
    clickbank_text(secret, &notification.to_string())
}

/// [`clickbank`] for a notification as written, keeping ClickBank's order of fields.
fn clickbank_text(secret: &str, notification: &str) -> Vec<u8> {
    let key: [u8; 32] = hex::encode(Sha1::digest(secret)).as_bytes()[..32]
        .try_into()
        .unwrap();
    let iv = *b"526AFD2AE8887CC2";
    let plain = notification.as_bytes().to_vec();
    let mut buf = plain.clone();
    buf.resize(plain.len() + 16, 0);
    let sealed = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut buf, plain.len())
        .unwrap()
        .to_vec();
    json!({"notification": B64.encode(sealed), "iv": B64.encode(iv)})
        .to_string()
        .into_bytes()
}

fn clickbank_notice(kind: &str, receipt: &str, amount: &str, tid: &str) -> serde_json::Value {
    serde_json::from_str(&clickbank_notice_text(kind, receipt, amount, tid)).unwrap()
}

/// A notification as ClickBank writes it, `transactionTime` first.
fn clickbank_notice_text(kind: &str, receipt: &str, amount: &str, tid: &str) -> String {
    // Amounts are JSON numbers, written as ClickBank writes them.
    format!(
        r#"{{"transactionTime":"2026-11-20T10:00:00-08:00","receipt":"{receipt}","transactionType":"{kind}","vendor":"acme","affiliate":"me","role":"AFFILIATE","totalAccountAmount":{amount},"paymentMethod":"VISA","totalOrderAmount":97.00,"currency":"USD","trackingCodes":["{tid}"],"lineItems":[],"version":6.0,"attemptCount":1,"vendorVariables":{{}}}}"#
    )
}

fn form(pairs: &[(&str, String)]) -> Vec<u8> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// JVZoo: values sorted by field name, each followed by `|`, then the secret; SHA-1, first 8
/// hex digits in uppercase.
fn jvzoo(secret: &str, kind: &str, receipt: &str, amount: &str, tid: &str) -> Vec<u8> {
    let mut pairs: Vec<(&str, String)> = vec![
        ("ccustname", "José Müller".into()),
        ("ccuststate", String::new()),
        ("ccustcc", "DE".into()),
        ("ccustemail", "buyer@example.com".into()),
        ("cproditem", "123456".into()),
        ("cprodtitle", "Widget – Pro".into()),
        ("cprodtype", "STANDARD".into()),
        ("ctransaction", kind.into()),
        ("ctransaffiliate", "777".into()),
        ("ctransamount", amount.into()),
        ("ctranspaymentmethod", "PYPL".into()),
        ("ctransvendor", "111".into()),
        ("ctransreceipt", receipt.into()),
        ("cupsellreceipt", String::new()),
        ("caffitid", tid.into()),
        ("ctranstime", "1795000000".into()),
    ];
    let mut sorted = pairs.clone();
    sorted.sort();
    let mut text: String = sorted.iter().map(|(_, v)| format!("{v}|")).collect();
    text.push_str(secret);
    let cverify = hex::encode(Sha1::digest(text.as_bytes()))[..8].to_uppercase();
    pairs.push(("cverify", cverify));
    form(&pairs)
}

fn warriorplus(key: &str, action: &str, sale: &str, earnings: &str, sid: &str) -> Vec<u8> {
    form(&[
        ("WP_ACTION", action.into()),
        ("WP_SALE", sale.into()),
        ("WP_TXNID", "ch_3ABC".into()),
        ("WP_ITEM_NUMBER", "wso_xyz".into()),
        ("WP_SALE_AMOUNT", "17.00".into()),
        ("WP_SALE_EARNINGS_AFF", earnings.into()),
        ("WP_PAYMENT_STATUS", "Completed".into()),
        ("WP_HOP_SID", sid.into()),
        ("IPN_RCPT_TYPE", "aff".into()),
        ("WP_SECURITYKEY", key.into()),
    ])
}

/// Digistore24: non-empty parameters sorted by name, each `name=value` followed by the
/// passphrase; SHA-512 in uppercase hex.
fn digistore24(pass: &str, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    sorted.sort();
    let mut h = Sha512::new();
    for (k, v) in sorted {
        h.update(format!("{k}={v}{pass}"));
    }
    let mut all: Vec<(&str, String)> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
    all.push(("sha_sign", hex::encode_upper(h.finalize())));
    form(&all)
}

fn ds24_event(event: &str, txid: &str, amount: &str, cid: &str, mode: &str) -> Vec<u8> {
    ds24_refund(event, txid, "", amount, cid, mode)
}

fn ds24_refund(
    event: &str,
    txid: &str,
    parent: &str,
    amount: &str,
    cid: &str,
    mode: &str,
) -> Vec<u8> {
    digistore24(
        DIGISTORE24,
        &[
            ("event", event),
            ("api_mode", mode),
            ("order_id", "AB12CD34"),
            ("transaction_id", txid),
            ("parent_transaction_id", parent),
            ("amount", amount),
            ("currency", "EUR"),
            ("product_name", "Basis Monatlich"),
            ("note", ""),
            ("custom", cid),
        ],
    )
}

async fn post(s: &Endpoint, c: &reqwest::Client, network: &str, body: Vec<u8>) -> (u16, String) {
    let ct = if network == "clickbank" {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let r = c
        .post(s.url(&format!("/api/ipn/{network}")))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_network_records_sales_refunds_and_chargebacks_once_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(
        &data,
        &[
            "--ipn-clickbank-secret",
            CLICKBANK,
            "--ipn-jvzoo-secret",
            JVZOO,
            "--ipn-warriorplus-secret",
            WARRIORPLUS,
            "--ipn-digistore24-secret",
            DIGISTORE24,
        ],
    );
    let c = client();
    let (cb, _) = s.click(&c, "source=clickbank").await;
    let (jv, _) = s.click(&c, "source=jvzoo").await;
    let (wp, _) = s.click(&c, "source=warriorplus").await;
    let (ds, _) = s.click(&c, "source=digistore24").await;

    // (network, body, expected status) — every accepted one is sent three times.
    let accepted: Vec<(&str, Vec<u8>)> = vec![
        (
            "clickbank",
            clickbank(CLICKBANK, clickbank_notice("SALE", "CBR00001", "48.5", &cb)),
        ),
        (
            "clickbank",
            clickbank(
                CLICKBANK,
                clickbank_notice("RFND", "CBR00001", "-48.50", &cb),
            ),
        ),
        (
            "clickbank",
            clickbank(CLICKBANK, clickbank_notice("SALE", "CBR00002", "0.10", &cb)),
        ),
        (
            "clickbank",
            clickbank(
                CLICKBANK,
                clickbank_notice("CGBK", "CBR00002", "-0.10", &cb),
            ),
        ),
        ("jvzoo", jvzoo(JVZOO, "SALE", "JVR0001", "47.00", &jv)),
        ("jvzoo", jvzoo(JVZOO, "RFND", "JVR0001", "47.00", &jv)),
        ("jvzoo", jvzoo(JVZOO, "SALE", "JVR0002", "0.20", &jv)),
        ("jvzoo", jvzoo(JVZOO, "CGBK", "JVR0002", "0.20", &jv)),
        (
            "warriorplus",
            warriorplus(WARRIORPLUS, "sale", "sale_1", "8.50", &wp),
        ),
        (
            "warriorplus",
            warriorplus(WARRIORPLUS, "refund", "sale_1", "8.50", &wp),
        ),
        (
            "warriorplus",
            warriorplus(WARRIORPLUS, "sale", "sale_2", "0.30", &wp),
        ),
        (
            "warriorplus",
            warriorplus(WARRIORPLUS, "dispute", "sale_2", "0.30", &wp),
        ),
        (
            "digistore24",
            ds24_event("on_payment", "3999938", "47.00", &ds, "live"),
        ),
        (
            "digistore24",
            ds24_event("on_refund", "3999940", "-47.00", &ds, "live"),
        ),
        (
            "digistore24",
            ds24_event("on_payment", "3999950", "0.40", &ds, "live"),
        ),
        // With parent_transaction_id a refund links to that sale; without, to the click's
        // earliest sale (the refund above).
        (
            "digistore24",
            ds24_refund("on_chargeback", "3999951", "3999950", "0.40", &ds, "live"),
        ),
    ];
    for (network, body) in &accepted {
        for _ in 0..3 {
            assert_eq!(
                post(&s, &c, network, body.clone()).await,
                (200, "OK".to_string()),
                "{network}"
            );
        }
    }

    // Acknowledged and ignored: tests, cancellations, sales that are not from our clicks.
    let ignored: Vec<(&str, Vec<u8>)> = vec![
        (
            "clickbank",
            clickbank(
                CLICKBANK,
                clickbank_notice("TEST_SALE", "********", "1.00", &cb),
            ),
        ),
        (
            "clickbank",
            clickbank(
                CLICKBANK,
                clickbank_notice("CANCEL-REBILL", "CBR00001", "0.00", &cb),
            ),
        ),
        (
            "clickbank",
            clickbank(
                CLICKBANK,
                clickbank_notice("SALE", "CBR00003", "5.00", "not ours!"),
            ),
        ),
        (
            "jvzoo",
            jvzoo(JVZOO, "CANCEL-REBILL", "JVR0001", "0.00", &jv),
        ),
        ("jvzoo", jvzoo(JVZOO, "SALE", "JVR0003", "5.00", "")),
        (
            "warriorplus",
            warriorplus(WARRIORPLUS, "subscr_cancelled", "sale_1", "8.50", &wp),
        ),
        (
            "digistore24",
            ds24_event("on_payment", "3999960", "5.00", &ds, "test"),
        ),
        (
            "digistore24",
            ds24_event("connection_test", "", "", "", "live"),
        ),
        (
            "digistore24",
            ds24_event("on_rebill_cancelled", "3999961", "0", &ds, "live"),
        ),
    ];
    for (network, body) in ignored {
        assert_eq!(
            post(&s, &c, network, body).await,
            (200, "OK".to_string()),
            "{network}"
        );
    }

    // Refused: tampered or signed with another secret (401), unreadable once genuine (400),
    // unknown network (404).
    let tampered_cb = {
        let mut v: serde_json::Value = serde_json::from_slice(&clickbank(
            CLICKBANK,
            clickbank_notice("SALE", "CBX", "9.00", &cb),
        ))
        .unwrap();
        let mut bytes = B64.decode(v["notification"].as_str().unwrap()).unwrap();
        bytes[20] ^= 1;
        v["notification"] = json!(B64.encode(bytes));
        v.to_string().into_bytes()
    };
    let tampered_jv = String::from_utf8(jvzoo(JVZOO, "SALE", "JVX", "5.00", &jv))
        .unwrap()
        .replace("ctransamount=5.00", "ctransamount=500.00")
        .into_bytes();
    let tampered_ds = String::from_utf8(ds24_event("on_payment", "3999970", "5.00", &ds, "live"))
        .unwrap()
        .replace("amount=5.00", "amount=500.00")
        .into_bytes();
    let refused: Vec<(&str, Vec<u8>, u16)> = vec![
        ("clickbank", tampered_cb, 401),
        (
            "clickbank",
            clickbank("OTHERKEY", clickbank_notice("SALE", "CBX", "9.00", &cb)),
            401,
        ),
        ("jvzoo", tampered_jv, 401),
        ("jvzoo", jvzoo("OTHERKEY", "SALE", "JVX", "5.00", &jv), 401),
        (
            "warriorplus",
            warriorplus("mykey123", "sale", "sale_x", "5.00", &wp),
            401,
        ),
        ("digistore24", tampered_ds, 401),
        (
            "digistore24",
            digistore24("other", &[("event", "on_payment"), ("amount", "1")]),
            401,
        ),
        ("jvzoo", jvzoo(JVZOO, "SALE", "JVX", "1e3", &jv), 400),
        (
            "warriorplus",
            warriorplus(WARRIORPLUS, "sale", "sale_x", "12,50", &wp),
            400,
        ),
        ("paypal", b"x=1".to_vec(), 404),
    ];
    for (network, body, status) in refused {
        let (got, text) = post(&s, &c, network, body).await;
        assert_eq!(got, status, "{network}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["ok"], false, "{text}");
    }
    // Digistore24 checks the URL with a GET before using it.
    let r = c.get(s.url("/api/ipn/digistore24")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    s.wait_flushed(&c).await;
    let conversions: BTreeSet<String> = read_table(&data, Table::Conversions)
        .into_iter()
        .map(|e| {
            let Event::Conversion(v) = e else {
                unreachable!()
            };
            format!(
                "{} {} {} {}",
                v.cid,
                v.amount.normalize(),
                v.txid.unwrap(),
                v.kind.unwrap()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        format!("{cb} 48.5 CBR00001 sale"),
        format!("{cb} 0.1 CBR00002 sale"),
        format!("{jv} 47 JVR0001 sale"),
        format!("{jv} 0.2 JVR0002 sale"),
        format!("{wp} 8.5 sale_1 sale"),
        format!("{wp} 0.3 sale_2 sale"),
        format!("{ds} 47 3999938 sale"),
        format!("{ds} 0.4 3999950 sale"),
    ]
    .into();
    assert_eq!(conversions, want);
    let refunds: BTreeSet<String> = read_table(&data, Table::Refunds)
        .into_iter()
        .map(|e| {
            let Event::Refund(r) = e else { unreachable!() };
            format!(
                "{} {} {} {:?} {}",
                r.cid,
                r.amount.normalize(),
                r.txid.unwrap(),
                r.kind,
                r.reference.unwrap_or_default()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        format!("{cb} 48.5 CBR00001-RFND-2026-11-20T10:00:00-08:00 CustomerRequest CBR00001"),
        format!("{cb} 0.1 CBR00002-CGBK-2026-11-20T10:00:00-08:00 Chargeback CBR00002"),
        format!("{jv} 47 JVR0001-RFND-1795000000 CustomerRequest JVR0001"),
        format!("{jv} 0.2 JVR0002-CGBK-1795000000 Chargeback JVR0002"),
        format!("{wp} 8.5 sale_1-refund CustomerRequest sale_1"),
        format!("{wp} 0.3 sale_2-dispute Chargeback sale_2"),
        format!("{ds} 47 3999940 CustomerRequest "),
        format!("{ds} 0.4 3999951 Chargeback 3999950"),
    ]
    .into();
    assert_eq!(refunds, want);
    s.stop();
    // Every refund links to its sale, none is an over-refund.
    crate::jobs::ok(crate::jobs::netrev(&data, &["recompute"]));
    assert_eq!(
        crate::jobs::sql(
            &data,
            "SELECT count(*) AS n FROM refund_links WHERE linked AND NOT over_refund"
        ),
        "n\n8\n"
    );
}

/// ClickBank INS is encrypted, not signed: whoever captured a refund can flip bytes of its IV,
/// which flips the same bytes of the first plaintext block (`{"transactionTim`, in ClickBank's
/// order) without the key. Such a replay lost `transactionTime`, so it would be another refund
/// (`txid` `receipt-RFND`) counted a second time; it must be refused instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickbank_refund_replayed_with_a_flipped_iv_is_refused_and_counted_once() {
    let s = Service::start(&["--ipn-clickbank-secret", CLICKBANK]).await;
    let c = client();
    let (cb, _) = s.click(&c, "source=clickbank").await;
    let sale = clickbank_text(
        CLICKBANK,
        &clickbank_notice_text("SALE", "CBR00010", "48.5", &cb),
    );
    let refund = clickbank_text(
        CLICKBANK,
        &clickbank_notice_text("RFND", "CBR00010", "-48.50", &cb),
    );
    for body in [&sale, &refund] {
        assert_eq!(
            post(&s, &c, "clickbank", body.clone()).await,
            (200, "OK".to_string())
        );
    }

    let flipped = |at: usize, mask: u8| {
        let mut v: serde_json::Value = serde_json::from_slice(&refund).unwrap();
        let mut iv = B64.decode(v["iv"].as_str().unwrap()).unwrap();
        iv[at] ^= mask;
        v["iv"] = json!(B64.encode(iv));
        v.to_string().into_bytes()
    };
    // `{` and `"`, then the key: `TransactionTime`, `transabtionTime`, `transactionTiee`,
    // `transactionTile`, `transactionTiMe`, and a byte that is not UTF-8.
    for (at, mask) in [
        (0, 0x01),
        (1, 0x01),
        (2, 0x20),
        (8, 0x01),
        (15, 0x08),
        (15, 0x01),
        (15, 0x20),
        (15, 0x80),
    ] {
        let (status, text) = post(&s, &c, "clickbank", flipped(at, mask)).await;
        assert_eq!(status, 401, "IV byte {at} ^ {mask:#04x}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["ok"], false, "{text}");
    }
    // The genuine refund, resent, is still the same refund.
    assert_eq!(
        post(&s, &c, "clickbank", refund.clone()).await,
        (200, "OK".to_string())
    );

    s.wait_flushed(&c).await;
    let refunds: Vec<String> = s
        .read_table(Table::Refunds)
        .await
        .into_iter()
        .map(|e| {
            let Event::Refund(r) = e else { unreachable!() };
            format!(
                "{} {} {} {}",
                r.cid,
                r.amount.normalize(),
                r.txid.unwrap(),
                r.reference.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        refunds,
        [format!(
            "{cb} 48.5 CBR00010-RFND-2026-11-20T10:00:00-08:00 CBR00010"
        )]
    );
    assert_eq!(s.read_table(Table::Conversions).await.len(), 1);
    s.stop().await;
}
