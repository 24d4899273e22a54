//! ClickBank Instant Notification Service, version 6.0 and later.
//!
//! The body is JSON `{"notification": base64, "iv": base64}`; the notification is JSON
//! encrypted with AES-256-CBC under a key made from the account's secret key: the first 32
//! characters of the lowercase hex SHA-1 of the secret, used as text. ClickBank signs nothing
//! else, so a notification is genuine when it decrypts under our key to a notification.
//!
//! | `transactionType` | event |
//! |---|---|
//! | `SALE` | conversion `sale`, `txid` = `receipt` |
//! | `BILL` | conversion `rebill`, `txid` = its `receipt` |
//! | `RFND` | refund `customer_request`, `txid` = `receipt-RFND-transactionTime`, `ref` = `receipt` |
//! | `CGBK` | refund `chargeback`, `txid` = `receipt-CGBK-transactionTime`, `ref` = `receipt` |
//! | `INSF` | refund `chargeback` (an eCheck returned unpaid), `txid` = `receipt-INSF-…` |
//! | `TEST*`, `*-TEST-*`, cancellations, anything else | acknowledged, ignored |
//!
//! The amount is `totalAccountAmount`, what the account receiving the notification earns
//! (the affiliate's commission for an affiliate); the click ID is the `tid` of the hoplink,
//! which ClickBank echoes in `trackingCodes`.
//!
//! **Malleability.** Encryption without a signature lets anyone holding one captured
//! notification alter it without the key: flipping bits of the IV flips the same bits of the
//! first 16 bytes of plaintext, which in ClickBank's order hold `{"transactionTim` (`{`, a
//! newline, spaces and `"transacti` when pretty-printed). Renaming that key would drop
//! `transactionTime`, give a replayed refund another `txid` and count it twice. So a decrypted
//! notification is taken only in a shape ClickBank sends: each top-level key one of the
//! documented fields ([`FIELDS`]), once, and the fields its event is made of present (a
//! refund's `transactionTime`). `"transactionTime":"…"` does not fit in 16 bytes, so no
//! rewrite of the first block can give it another value: the event stays the same or is
//! refused. (Altering a later block turns the block before it into 16 random bytes, which the
//! JSON almost never survives.)

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use super::{Amount, Notice, Refused, Tracking, rebill_txid, refund_txid};
use crate::params::Invalid;
use netrev_storage::RefundType;

#[derive(Deserialize)]
struct Envelope {
    notification: String,
    iv: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    transaction_type: Option<String>,
    receipt: Option<String>,
    transaction_time: Option<String>,
    total_account_amount: Option<Box<RawValue>>,
    #[serde(default)]
    tracking_codes: Option<serde_json::Value>,
    #[serde(default)]
    vendor_variables: Option<serde_json::Value>,
}

/// The top-level fields of an INS 6.0 and later notification, as ClickBank documents them
/// (its parameter table and sample) and as later versions are described (`declinedConsent`).
/// Nested objects (`lineItems`, `customer`, `vendorVariables`, whose keys the vendor chooses)
/// are not checked: the bytes an IV reaches are the opening `{` and the first top-level key.
pub const FIELDS: [&str; 22] = [
    "transactionTime",
    "receipt",
    "transactionType",
    "vendor",
    "affiliate",
    "role",
    "totalAccountAmount",
    "paymentMethod",
    "totalOrderAmount",
    "totalTaxAmount",
    "totalShippingAmount",
    "currency",
    "orderLanguage",
    "trackingCodes",
    "lineItems",
    "customer",
    "upsell",
    "hopfeed",
    "version",
    "attemptCount",
    "vendorVariables",
    "declinedConsent",
];

/// The top-level keys of a JSON object, in order and with repeats (which a map would merge).
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Object)
    }
}

/// Refuses keys ClickBank does not send and keys sent twice (a repeat could stand in for a
/// field the first block lost). `Unverified` (401, logged as `IPN refused`) as for a
/// notification that does not decrypt: INS is not signed, so its shape is the only sign that
/// ClickBank wrote it, and such a key means it was altered on the way (or ClickBank added a
/// field, which the log then names). Nothing is recorded.
fn check_keys(keys: &Keys) -> Result<(), Refused> {
    let mut seen = [false; FIELDS.len()];
    for key in &keys.0 {
        let shown: String = key.chars().take(40).collect();
        let altered = |what: &str| {
            Refused::Unverified(format!(
                "the decrypted notification {what} {shown:?}: taken for one altered after \
                 ClickBank encrypted it (INS is encrypted, not signed)"
            ))
        };
        let Some(i) = FIELDS.iter().position(|f| f == key) else {
            return Err(altered("has a field ClickBank does not send,"));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(altered("repeats the field"));
        }
    }
    Ok(())
}

/// The AES key ClickBank derives from a secret key.
pub fn key(secret: &str) -> [u8; 32] {
    let digest = hex::encode(Sha1::digest(secret.as_bytes()));
    digest.as_bytes()[..32].try_into().expect("40 hex digits")
}

/// Decrypts a notification; `None` when it does not decrypt under `secret`.
pub fn decrypt(secret: &str, notification: &str, iv: &str) -> Option<Vec<u8>> {
    let iv: [u8; 16] = B64.decode(iv.trim()).ok()?.try_into().ok()?;
    let mut data = B64.decode(notification.trim()).ok()?;
    if data.is_empty() || data.len() % 16 != 0 {
        return None;
    }
    let len = cbc::Decryptor::<aes::Aes256>::new(&key(secret).into(), &iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut data)
        .ok()?
        .len();
    data.truncate(len);
    // PKCS#7 as ClickBank's samples use; older ones padded with NULs or spaces instead.
    let n = *data.last()? as usize;
    if (1..=16).contains(&n) && data[data.len() - n..].iter().all(|&b| b as usize == n) {
        data.truncate(data.len() - n);
    } else {
        while data.last().is_some_and(|&b| b <= b' ') {
            data.pop();
        }
    }
    Some(data)
}

pub fn read(secret: &str, body: &[u8]) -> Result<Notice, Refused> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|_| {
        Invalid::new(
            "notification",
            "the body must be JSON {\"notification\": …, \"iv\": …} (INS version 6.0 or later)",
        )
    })?;
    let unverified = || {
        Refused::Unverified(
            "the notification does not decrypt with the configured ClickBank secret key".into(),
        )
    };
    let plain = decrypt(secret, &envelope.notification, &envelope.iv).ok_or_else(unverified)?;
    // Decrypting to a JSON object with ClickBank's keys is what makes it genuine (see the
    // module's Malleability); the values are judged after.
    let keys: Keys = serde_json::from_slice(&plain).map_err(|_| unverified())?;
    check_keys(&keys)?;
    let n: Notification = match serde_json::from_slice(&plain) {
        Ok(n) => n,
        Err(e) if serde_json::from_slice::<serde_json::Map<_, _>>(&plain).is_ok() => {
            return Err(Invalid::new("notification", format!("unexpected value: {e}")).into());
        }
        Err(_) => return Err(unverified()),
    };

    let mut clicks: Vec<Tracking> = match &n.tracking_codes {
        Some(serde_json::Value::Array(codes)) => codes
            .iter()
            .filter_map(|c| c.as_str())
            .map(|value| Tracking {
                field: "trackingCodes",
                value: value.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    if let Some(serde_json::Value::String(tid)) =
        n.vendor_variables.as_ref().and_then(|v| v.get("tid"))
    {
        clicks.push(Tracking {
            field: "vendorVariables.tid",
            value: tid.clone(),
        });
    }
    let amount = || -> Result<Amount, Refused> {
        let raw = n
            .total_account_amount
            .as_ref()
            .ok_or_else(|| Invalid::new("totalAccountAmount", "is required"))?;
        // A JSON number, read as written: never through a float.
        let text = match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => s,
            Err(_) => raw.get().to_string(),
        };
        Ok(Amount {
            field: "totalAccountAmount",
            text,
        })
    };
    let receipt = || -> Result<String, Refused> {
        Ok(n.receipt
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Invalid::new("receipt", "is required"))?
            .to_string())
    };
    // A refund's or a rebill's `txid` is made of its time. ClickBank always sends it, so a
    // notification without it lost it on the way (a renamed first key): `Invalid` (400) names
    // the field, as for a missing receipt or amount, and records nothing.
    let time = || -> Result<&str, Refused> {
        Ok(n.transaction_time
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| Invalid::new("transactionTime", "is required"))?)
    };
    let refund = |kind, what: &str| -> Result<Notice, Refused> {
        let receipt = receipt()?;
        Ok(Notice::Refund {
            clicks: clicks.clone(),
            amount: amount()?,
            txid: refund_txid(&receipt, what, Some(time()?)),
            reference: Some(receipt),
            kind,
        })
    };
    let Some(t) = n.transaction_type.as_deref() else {
        return Err(Invalid::new("transactionType", "is required").into());
    };
    let t = t.trim().to_ascii_uppercase();
    match t.as_str() {
        "SALE" => Ok(Notice::Conversion {
            clicks: clicks.clone(),
            amount: amount()?,
            txid: receipt()?,
            kind: "sale",
        }),
        "BILL" => Ok(Notice::Conversion {
            clicks: clicks.clone(),
            amount: amount()?,
            txid: rebill_txid(&receipt()?, Some(time()?)),
            kind: "rebill",
        }),
        "RFND" => refund(RefundType::CustomerRequest, "RFND"),
        "CGBK" => refund(RefundType::Chargeback, "CGBK"),
        "INSF" => refund(RefundType::Chargeback, "INSF"),
        t if t.starts_with("TEST") || t.contains("-TEST-") => {
            Ok(Notice::Ignore(format!("test notification ({t})")))
        }
        t => Ok(Notice::Ignore(format!(
            "transaction type {t} moves no money"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockEncryptMut, block_padding::Pkcs7};

    /// Encrypted with Python's `cryptography` and checked with `openssl enc -d -aes-256-cbc`:
    /// secret `MYSECRETKEY`, IV `0123456789ABCDEF`, PKCS#7, a notification shaped like
    /// ClickBank's documented sample.
    const NOTIFICATION: &str = include_str!("../../tests/ipn/clickbank-sample.json");

    #[test]
    fn key_is_the_text_of_the_sha1_hex() {
        assert_eq!(&key("MYSECRETKEY"), b"18f015e9c5e3bc070cf97f942e864900");
    }

    #[test]
    fn decrypts_the_sample_and_refuses_another_key() {
        let Notice::Conversion {
            clicks,
            amount,
            txid,
            kind,
        } = read("MYSECRETKEY", NOTIFICATION.as_bytes()).unwrap()
        else {
            panic!("a sale")
        };
        assert_eq!((txid.as_str(), kind), ("CWOGBZLN", "sale"));
        assert_eq!(amount.text, "0.00");
        assert_eq!(clicks[0].value, "tracking_code");
        assert!(matches!(
            read("OTHERKEY", NOTIFICATION.as_bytes()),
            Err(Refused::Unverified(_))
        ));
        assert!(matches!(
            read("MYSECRETKEY", b"notification=x"),
            Err(Refused::Invalid(_))
        ));
    }

    const SECRET: &str = "MYSECRETKEY";

    /// A refund as ClickBank writes it: documented fields, in the documented order.
    const REFUND: &str = concat!(
        r#"{"transactionTime":"2026-11-20T10:00:00-08:00","receipt":"CBR00001","#,
        r#""transactionType":"RFND","vendor":"acme","affiliate":"me","role":"AFFILIATE","#,
        r#""totalAccountAmount":-48.50,"paymentMethod":"VISA","totalOrderAmount":97.00,"#,
        r#""totalTaxAmount":0.00,"totalShippingAmount":0.00,"currency":"USD","#,
        r#""orderLanguage":"EN","trackingCodes":["cid"],"lineItems":[{"itemNo":"1","#,
        r#""productTitle":"Widget","shippable":false,"recurring":false,"#,
        r#""accountAmount":-48.50,"quantity":1,"lineItemType":"ORIGINAL"}],"#,
        r#""customer":{"billing":{"firstName":"TEST","lastName":"GUY","#,
        r#""email":"test@example.com","address":{"country":"US"}}},"version":6.0,"#,
        r#""attemptCount":1,"vendorVariables":{"v1":"variable1"}}"#,
    );
    /// The same refund pretty-printed, as ClickBank's documented sample is.
    const REFUND_PRETTY: &str = concat!(
        "{\n",
        "    \"transactionTime\": \"2026-11-20T10:00:00-08:00\",\n",
        "    \"receipt\": \"CBR00001\",\n",
        "    \"transactionType\": \"RFND\",\n",
        "    \"vendor\": \"acme\",\n",
        "    \"role\": \"AFFILIATE\",\n",
        "    \"totalAccountAmount\": -48.50,\n",
        "    \"orderLanguage\": \"EN\",\n",
        "    \"trackingCodes\": [\n",
        "        \"cid\"\n",
        "    ],\n",
        "    \"version\": 6.0,\n",
        "    \"attemptCount\": 1\n",
        "}",
    );
    /// A refund with only the fields its event is made of.
    const REFUND_MINIMAL: &str = concat!(
        r#"{"transactionTime":"2026-11-20T10:00:00-08:00","receipt":"CBR00001","#,
        r#""transactionType":"RFND","totalAccountAmount":-48.50,"trackingCodes":["cid"]}"#,
    );
    const REFUND_TXID: &str = "CBR00001-RFND-2026-11-20T10:00:00-08:00";
    const IV: [u8; 16] = *b"526AFD2AE8887CC2";

    /// The body ClickBank posts for `plain`: AES-256-CBC under the secret's key, PKCS#7.
    fn seal(plain: &str) -> Vec<u8> {
        let mut buf = plain.as_bytes().to_vec();
        buf.resize(plain.len() + 16, 0);
        let sealed = cbc::Encryptor::<aes::Aes256>::new(&key(SECRET).into(), &IV.into())
            .encrypt_padded_mut::<Pkcs7>(&mut buf, plain.len())
            .unwrap()
            .to_vec();
        serde_json::json!({"notification": B64.encode(sealed), "iv": B64.encode(IV)})
            .to_string()
            .into_bytes()
    }

    /// What an attacker holding `body` sends without the key: the same ciphertext under an
    /// IV changed by `delta`, which changes the first plaintext block by `delta`.
    fn with_iv_delta(body: &[u8], delta: [u8; 16]) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let mut iv = B64.decode(v["iv"].as_str().unwrap()).unwrap();
        for (b, d) in iv.iter_mut().zip(delta) {
            *b ^= d;
        }
        v["iv"] = serde_json::json!(B64.encode(iv));
        v.to_string().into_bytes()
    }

    /// The refund's `txid`, or why it was refused; anything else fails the test.
    fn refund_txid_of(body: &[u8]) -> Result<String, Refused> {
        match read(SECRET, body)? {
            Notice::Refund { txid, .. } => Ok(txid),
            other => panic!("a refund or a refusal, not {other:?}"),
        }
    }

    #[test]
    fn every_single_byte_flip_of_the_iv_keeps_the_refund_or_is_refused() {
        for (plain, whitespace_in_first_block) in [(REFUND, false), (REFUND_PRETTY, true)] {
            let body = seal(plain);
            assert_eq!(refund_txid_of(&body).unwrap(), REFUND_TXID);
            let (mut kept, mut refused) = (0, 0);
            for at in 0..16 {
                for mask in 1..=255u8 {
                    let mut delta = [0; 16];
                    delta[at] = mask;
                    match refund_txid_of(&with_iv_delta(&body, delta)) {
                        Ok(txid) => {
                            assert_eq!(txid, REFUND_TXID, "byte {at} ^ {mask:#04x}");
                            kept += 1;
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
            // Compact, the first block is `{"transactionTim`: every flip breaks the JSON or
            // renames the key. Pretty-printed, whitespace may become other whitespace.
            assert_eq!(refused + kept, 16 * 255);
            assert_eq!(kept > 0, whitespace_in_first_block, "{plain}");
            assert!(refused > 0);
        }
    }

    #[test]
    fn no_rewrite_of_the_first_block_makes_another_refund() {
        // First blocks an attacker who guesses the plaintext can put in place of
        // `{"transactionTim`; the next block begins `e":"2026-…`.
        let cases: [(&str, &[u8; 16], bool); 7] = [
            (REFUND, b"{\"transactionTim", true),
            (REFUND, b"{\"transactionTyp", false),
            (REFUND, b"{  \"orderLanguag", false),
            (REFUND, b"{           \"rol", false),
            (REFUND, b"{\"receipt\":\"X\",\"", false),
            (REFUND_MINIMAL, b"{           \"rol", false),
            (REFUND_MINIMAL, b"{  \"orderLanguag", false),
        ];
        for (plain, block, same) in cases {
            let mut delta = [0; 16];
            for (i, d) in delta.iter_mut().enumerate() {
                *d = plain.as_bytes()[i] ^ block[i];
            }
            let got = refund_txid_of(&with_iv_delta(&seal(plain), delta));
            let shown = String::from_utf8_lossy(block);
            if same {
                assert_eq!(got.unwrap(), REFUND_TXID, "{shown}");
            } else {
                assert!(got.is_err(), "{shown}: {got:?}");
            }
        }
        // With every key documented and none repeated, the lost `transactionTime` refuses it.
        let minimal = with_iv_delta(
            &seal(REFUND_MINIMAL),
            std::array::from_fn(|i| REFUND_MINIMAL.as_bytes()[i] ^ b"{           \"rol"[i]),
        );
        let Err(Refused::Invalid(i)) = read(SECRET, &minimal) else {
            panic!("refused for the missing time")
        };
        assert_eq!(i.field, "transactionTime");
    }

    #[test]
    fn refunds_and_rebills_without_their_time_are_refused() {
        let time = r#""transactionTime":"2026-11-20T10:00:00-08:00","#;
        for kind in ["RFND", "CGBK", "INSF", "BILL"] {
            let plain = REFUND.replace("RFND", kind);
            for without in [
                plain.replace(time, ""),
                plain.replace(time, r#""transactionTime":" ","#),
            ] {
                let Err(Refused::Invalid(i)) = read(SECRET, &seal(&without)) else {
                    panic!("{kind} without its time is refused")
                };
                assert_eq!(i.field, "transactionTime");
            }
            let Err(Refused::Invalid(i)) = read(
                SECRET,
                &seal(&plain.replace(r#""receipt":"CBR00001","#, "")),
            ) else {
                panic!("{kind} without its receipt is refused")
            };
            assert_eq!(i.field, "receipt");
        }
        // A sale's `txid` is its receipt alone.
        let sale = REFUND.replace("RFND", "SALE").replace(time, "");
        let Ok(Notice::Conversion { txid, .. }) = read(SECRET, &seal(&sale)) else {
            panic!("a sale")
        };
        assert_eq!(txid, "CBR00001");
    }

    #[test]
    fn unknown_or_repeated_fields_are_refused() {
        for plain in [
            REFUND.replace("transactionTime", "transactionTimf"),
            REFUND.replace(r#""vendor":"acme","#, r#""vendor":"acme","foo":1,"#),
            REFUND.replace(r#""vendor":"acme","#, r#""vendor":"acme","vendor":"acme","#),
            REFUND.replace(r#""vendor":"acme","#, r#""Vendor":"acme","#),
        ] {
            assert!(
                matches!(read(SECRET, &seal(&plain)), Err(Refused::Unverified(_))),
                "{plain}"
            );
        }
        // Keys inside nested objects are the vendor's or ClickBank's, not checked.
        let nested = REFUND.replace(r#"{"v1":"variable1"}"#, r#"{"v1":"x","anything":"y"}"#);
        assert_eq!(refund_txid_of(&seal(&nested)).unwrap(), REFUND_TXID);
        assert_eq!(refund_txid_of(&seal(REFUND_MINIMAL)).unwrap(), REFUND_TXID);
    }
}
