//! JVZoo JVZIPN (the form post of `c…` fields).
//!
//! Checked by `cverify`: every posted field but `cverify`, sorted by name, its value followed
//! by `|`, then the secret key; the first 8 hex digits of the SHA-1 of that text, uppercase.
//! Empty fields count (as nothing between two bars).
//!
//! | `ctransaction` | event |
//! |---|---|
//! | `SALE` | conversion `sale`, `txid` = `ctransreceipt` |
//! | `BILL` | conversion `rebill`, `txid` = its `ctransreceipt` |
//! | `RFND` | refund `customer_request`, `txid` = `ctransreceipt-RFND-ctranstime`, `ref` = `ctransreceipt` |
//! | `CGBK` | refund `chargeback`, `txid` = `ctransreceipt-CGBK-ctranstime`, `ref` = `ctransreceipt` |
//! | `INSF` | refund `chargeback`, `txid` = `ctransreceipt-INSF-ctranstime` |
//! | `TEST…`, `CANCEL-REBILL`, `UNCANCEL-REBILL`, anything else | acknowledged, ignored |
//!
//! The amount is `ctransamount` (what the party receiving the notification is paid, in
//! currency units such as `47.00`); the click ID is the affiliate's `tid`, echoed as
//! `caffitid`.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::{Amount, Notice, Refused, Tracking, rebill_txid, refund_txid};
use crate::params::Invalid;
use crate::params::{self, BodyKind, Params};
use netrev_storage::RefundType;

/// The `cverify` of `params` under `secret`.
pub fn cverify(params: &Params, secret: &str) -> String {
    let mut text = String::new();
    for (_, value) in params.iter().filter(|(n, _)| *n != "cverify") {
        text.push_str(value);
        text.push('|');
    }
    text.push_str(secret);
    hex::encode(Sha1::digest(text.as_bytes()))[..8].to_ascii_uppercase()
}

pub fn read(secret: &str, body: &[u8]) -> Result<Notice, Refused> {
    let p = params::parse(None, body, BodyKind::Form)?;
    let Some(given) = p.get("cverify") else {
        return Err(Refused::Unverified("cverify is missing".into()));
    };
    let want = cverify(&p, secret);
    if !bool::from(
        want.as_bytes()
            .ct_eq(given.trim().to_ascii_uppercase().as_bytes()),
    ) {
        return Err(Refused::Unverified(
            "cverify does not match the configured JVZoo secret key".into(),
        ));
    }
    let clicks: Vec<Tracking> = p
        .get("caffitid")
        .map(|v| Tracking {
            field: "caffitid",
            value: v.to_string(),
        })
        .into_iter()
        .collect();
    let amount = || Amount {
        field: "ctransamount",
        text: p.get("ctransamount").unwrap_or_default().to_string(),
    };
    let receipt = || -> Result<String, Refused> {
        Ok(p.get("ctransreceipt")
            .ok_or_else(|| Invalid::new("ctransreceipt", "is required"))?
            .trim()
            .to_string())
    };
    let refund = |kind, suffix: &str| -> Result<Notice, Refused> {
        let receipt = receipt()?;
        Ok(Notice::Refund {
            clicks: clicks.clone(),
            amount: amount(),
            txid: refund_txid(&receipt, suffix, p.get("ctranstime")),
            reference: Some(receipt),
            kind,
        })
    };
    let t = p
        .get("ctransaction")
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    match t.as_str() {
        "SALE" => Ok(Notice::Conversion {
            clicks: clicks.clone(),
            amount: amount(),
            txid: receipt()?,
            kind: "sale",
        }),
        "BILL" => Ok(Notice::Conversion {
            clicks: clicks.clone(),
            amount: amount(),
            txid: rebill_txid(&receipt()?, p.get("ctranstime")),
            kind: "rebill",
        }),
        "RFND" => refund(RefundType::CustomerRequest, "RFND"),
        "CGBK" => refund(RefundType::Chargeback, "CGBK"),
        "INSF" => refund(RefundType::Chargeback, "INSF"),
        "" => Err(Invalid::new("ctransaction", "is required").into()),
        t if t.contains("TEST") => Ok(Notice::Ignore(format!("test notification ({t})"))),
        t => Ok(Notice::Ignore(format!(
            "transaction type {t} moves no money"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cverify_matches_published_vectors() {
        // niteoweb.ipn.jvzoo's test: one field, secret "secret".
        assert_eq!(
            cverify(&Params::from([("ccustname", "fullname")]), "secret"),
            "38CFCDED"
        );
        // Empty fields and non-ASCII text count as posted (checked with Python's hashlib).
        let body = "ccustname=Jos%C3%A9+M%C3%BCller&ccuststate=&ccustcc=DE&ccustemail=buyer%40example.com&cproditem=123456&cprodtitle=Widget+%E2%80%93+Pro&cprodtype=STANDARD&ctransaction=SALE&ctransaffiliate=777&ctransamount=47.00&ctranspaymentmethod=PYPL&ctransvendor=111&ctransreceipt=ABCDEFGH12345&cupsellreceipt=&caffitid=fb_campaign_1&cvendthru=src%3Dfb%26x%3D1&ctranstime=1700000000&cverify=C6AC96BC";
        let Notice::Conversion {
            clicks,
            amount,
            txid,
            kind,
        } = read("SECRETKEY123", body.as_bytes()).unwrap()
        else {
            panic!("a sale")
        };
        assert_eq!(clicks[0].value, "fb_campaign_1");
        assert_eq!(
            (amount.text.as_str(), txid.as_str(), kind),
            ("47.00", "ABCDEFGH12345", "sale")
        );
        let refund = body
            .replace("ctransaction=SALE", "ctransaction=RFND")
            .replace("C6AC96BC", "A91833A2");
        assert!(matches!(
            read("SECRETKEY123", refund.as_bytes()),
            Ok(Notice::Refund {
                kind: RefundType::CustomerRequest,
                ..
            })
        ));
        // Tampered: the amount changed, the signature kept.
        let tampered = body.replace("47.00", "470.00");
        assert!(matches!(
            read("SECRETKEY123", tampered.as_bytes()),
            Err(Refused::Unverified(_))
        ));
        assert!(matches!(
            read("WRONG", body.as_bytes()),
            Err(Refused::Unverified(_))
        ));
    }
}
