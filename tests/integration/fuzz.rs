//! Fuzzing the parsers that face the network and the disk, the proptest way (bounded, so CI
//! runs it every time): postback parameters (query, form, JSON), amounts, click IDs and
//! write-ahead-log segments, network notifications (IPN). Nothing may panic, and nothing malformed may be accepted.
//! `PROPTEST_CASES=1000000 cargo test --test integration fuzz` runs them longer.

use std::str::FromStr;

use netrev_ingest::params::{self, BodyKind};
use netrev_ingest::wal;
use netrev_storage::{Conversion, Event, clickid, money};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
        ..ProptestConfig::default()
    }
}

/// Text that looks like postback input: parameter syntax, escapes and JSON punctuation.
fn postback_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,60}",
        "([a-z]{1,6}=[a-zA-Z0-9%+.\\-]{0,8}&?){0,6}",
        "\\{(\"[a-z]{1,5}\":(\"[^\"]{0,6}\"|[0-9.\\-eE]{1,6}|null|true|\\[\\]|\\{\\}),?){0,4}\\}",
    ]
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn postback_parameters(query in postback_text(), body in postback_text(), raw in proptest::collection::vec(any::<u8>(), 0..64), json in any::<bool>()) {
        let kind = if json { BodyKind::Json } else { BodyKind::Form };
        for body in [body.as_bytes(), &raw[..]] {
            if let Ok(p) = params::parse(Some(&query), body, kind)
                && json
                && !body.iter().all(u8::is_ascii_whitespace)
            {
                // A JSON body is accepted only when it is a JSON object (numbers as written:
                // JSON has no range limit, and amounts are parsed as decimal text later).
                let object = serde_json::from_slice::<
                    std::collections::HashMap<String, &serde_json::value::RawValue>,
                >(body);
                prop_assert!(object.is_ok(), "{:?}", String::from_utf8_lossy(body));
                prop_assert!(p.len() <= 64);
            }
        }
    }

    #[test]
    fn amounts(text in prop_oneof!["-?[0-9]{0,16}(\\.[0-9]{0,7})?", "[-+0-9.,eEnaNI x]{0,20}", ".{0,24}"]) {
        if let Ok(d) = money::parse(&text) {
            // Only plain decimals: an optional minus, digits, an optional fraction.
            let unsigned = text.strip_prefix('-').unwrap_or(&text);
            let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
            prop_assert!(!int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()), "{}", text);
            prop_assert!(frac.bytes().all(|b| b.is_ascii_digit()), "{}", text);
            prop_assert!(!unsigned.ends_with('.'), "{}", text);
            prop_assert!(int.trim_start_matches('0').len() <= 14, "{}", text);
            prop_assert!(frac.bytes().skip(4).all(|b| b == b'0'), "{}", text);
            // And exactly the value written.
            prop_assert_eq!(d, Decimal::from_str(&text).unwrap(), "{}", text);
        }
    }

    #[test]
    fn click_ids(cid in ".{0,40}", ms in 1_600_000_000_000u64..2_000_000_000_000, pos in any::<prop::sample::Index>(), c in "[0-9a-z]") {
        let key = clickid::Key::new([3; 32]);
        let _ = clickid::check(&cid, &key, ms);
        let _ = clickid::bits(&cid);
        let _ = clickid::millis(&cid);
        // An issued ID checks as netrev's, with its time; changing any character breaks it.
        let (issued, _) = clickid::Generator::new(key.clone()).issue(ms);
        let native = matches!(clickid::check(&issued, &key, ms), Ok(clickid::Kind::Native { millis }) if millis == ms);
        prop_assert!(native, "{} does not check", issued);
        let i = pos.index(issued.len());
        let mut altered = issued.clone();
        altered.replace_range(i..=i, &c);
        if altered == issued {
            return Ok(());
        }
        let native = matches!(clickid::check(&altered, &key, ms), Ok(clickid::Kind::Native { .. }));
        prop_assert!(!native, "{} accepted", altered);
    }

    #[test]
    fn wal_segments(amounts in proptest::collection::vec(1i64..100_000, 1..6), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8, noise in proptest::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = amounts.iter().enumerate().map(|(i, a)| Event::Conversion(Conversion {
            cid: format!("c{i}"), ts: 1_795_000_000_000_000 + i as i64, amount: Decimal::new(*a, 2),
            txid: Some(format!("t{i}")), kind: None,
        })).collect();
        let mut log = wal::Writer::create(dir.path(), 1, 1 << 20).unwrap();
        for (i, e) in events.iter().enumerate() {
            let mut framed = Vec::new();
            let json = wal::encode_event(e);
            wal::frame(&mut framed, i as u64 + 1, std::iter::once(json.as_slice()));
            log.append(i as u64 + 1, &framed).unwrap();
        }
        drop(log);
        let (_, path) = wal::segments(dir.path()).unwrap().pop().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let originals: Vec<wal::Record> = events.iter().enumerate()
            .map(|(i, e)| wal::Record { seq: i as u64 + 1, event: e.clone() }).collect();
        let is_prefix = |got: &[wal::Record]| got.len() <= originals.len() && got == &originals[..got.len()];

        // Whole: every record.
        let mut out = Vec::new();
        wal::scan_segment(&path, &bytes, true, &mut out).unwrap();
        prop_assert_eq!(&out, &originals);
        // Cut anywhere (a torn write) in the newest segment: a prefix, never an error.
        let at = cut.index(bytes.len() + 1);
        let mut out = Vec::new();
        prop_assert!(wal::scan_segment(&path, &bytes[..at], true, &mut out).is_ok());
        prop_assert!(is_prefix(&out));
        // A flipped bit, or garbage appended: an error or a prefix of what was written, never
        // a record that was not.
        let mut damaged = bytes.clone();
        damaged[flip.index(bytes.len())] ^= 1 << bit;
        for (candidate, last) in [(damaged, true), (bytes.iter().chain(&noise).copied().collect::<Vec<u8>>(), false)] {
            let mut out = Vec::new();
            if wal::scan_segment(&path, &candidate, last, &mut out).is_ok() {
                prop_assert!(is_prefix(&out));
            }
        }
        // Arbitrary bytes.
        let mut out = Vec::new();
        let _ = wal::scan_segment(&path, &noise, true, &mut out);
    }

    #[test]
    fn ipn_notifications(body in postback_text(), raw in proptest::collection::vec(any::<u8>(), 0..96), action in "(sale|refund|dispute|subscr_[a-z]{1,9}|[a-zA-Z_]{0,8})", amount in "[-0-9.,eE]{0,8}", sid in ".{0,30}") {
        use netrev_ingest::ipn::{Network, Notice, to_event};
        let key = clickid::Key::random();
        let ctx = netrev_ingest::postback::Context { key: &key, now_micros: 1_795_000_000_000_000 };
        // Without the secret nothing is genuine, whatever the bytes.
        for network in Network::ALL {
            for input in [body.as_bytes(), &raw[..]] {
                prop_assert!(network.read("the-secret", input).is_err(), "{network:?} {input:?}");
            }
        }
        // With WarriorPlus's key (sent in clear) the rest is arbitrary: read and map it without
        // panicking; whatever is recorded has a positive amount for a refund.
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("WP_ACTION", &action)
            .append_pair("WP_SALE", "sale_1")
            .append_pair("WP_SALE_AMOUNT", &amount)
            .append_pair("WP_HOP_SID", &sid)
            .append_pair("WP_SECURITYKEY", "the-secret")
            .finish();
        if let Ok(notice) = Network::WarriorPlus.read("the-secret", form.as_bytes()) {
            let ignored = matches!(notice, Notice::Ignore(_));
            match to_event(notice, &ctx) {
                Ok(Ok(Event::Refund(r))) => prop_assert!(r.amount > Decimal::ZERO),
                Ok(Ok(Event::Conversion(c))) => prop_assert!(c.amount >= Decimal::ZERO),
                Ok(Ok(Event::Click(_))) => prop_assert!(false, "an IPN records no click"),
                Ok(Err(_)) | Err(_) => {}
            }
            prop_assert!(!ignored || !["sale", "refund", "dispute"].contains(&action.as_str()));
        }
    }
}
