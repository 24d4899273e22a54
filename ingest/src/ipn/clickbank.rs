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

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use super::{Amount, Notice, Refused, Tracking, rebill_txid, refund_txid};
use crate::postback::Invalid;
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
    // Decrypting to a JSON object is what makes it genuine; its fields are judged after.
    let n: Notification = match serde_json::from_slice(&plain) {
        Ok(n) => n,
        Err(e) if serde_json::from_slice::<serde_json::Map<_, _>>(&plain).is_ok() => {
            return Err(Invalid::new("notification", format!("unexpected field: {e}")).into());
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
    let time = n.transaction_time.as_deref();
    let refund = |kind, what: &str| -> Result<Notice, Refused> {
        let receipt = receipt()?;
        Ok(Notice::Refund {
            clicks: clicks.clone(),
            amount: amount()?,
            txid: refund_txid(&receipt, what, time),
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
            txid: rebill_txid(&receipt()?, time),
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
}
