//! Digistore24 IPN (form post).
//!
//! Checked by `sha_sign`: the posted parameters but `sha_sign`, without empty values, sorted
//! by name, each as `name=value` followed by the IPN passphrase; the SHA-512 of that text in
//! uppercase hex. Digistore24 may build it with the names in uppercase; both are accepted. An
//! account without a passphrase sends `no_signature_passphrase_provided`: refused.
//!
//! | `event` | event |
//! |---|---|
//! | `on_payment` | conversion `sale` (`rebill` after the first payment), `txid` = `transaction_id` |
//! | `on_refund` | refund `customer_request`, `txid` = `transaction_id` |
//! | `on_chargeback` | refund `chargeback`, `txid` = `transaction_id` |
//! | `connection_test`, test mode (`api_mode` not `live`, or absent), anything else | acknowledged, ignored |
//!
//! A refund's `ref` is `parent_transaction_id` when given; otherwise it links to the click's
//! earliest sale (docs/design.md §4). The amount is `amount`; the click ID comes from
//! `click_id` (the promo link's `cid`), `custom`, `cid`, `trackingkey` or `campaignkey`.
//! Digistore24 wants the answer `OK`.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::{Amount, Notice, Refused, Tracking};
use crate::params::Invalid;
use crate::params::{self, BodyKind, Params};
use netrev_storage::RefundType;

fn is_signature(name: &str) -> bool {
    name.eq_ignore_ascii_case("sha_sign") || name.eq_ignore_ascii_case("shasign")
}

/// The `sha_sign` of `params` under `passphrase`, with the names as sent or in uppercase.
pub fn sha_sign(params: &Params, passphrase: &str, uppercase_names: bool) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(n, v)| !is_signature(n) && !v.is_empty())
        .map(|(n, v)| {
            let n = if uppercase_names {
                n.to_ascii_uppercase()
            } else {
                n.to_string()
            };
            (n, v)
        })
        .collect();
    pairs.sort();
    let mut h = Sha512::new();
    for (name, value) in pairs {
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(value.as_bytes());
        h.update(passphrase.as_bytes());
    }
    hex::encode_upper(h.finalize())
}

pub fn read(passphrase: &str, body: &[u8]) -> Result<Notice, Refused> {
    let p = params::parse(None, body, BodyKind::Form)?;
    let given = p
        .iter()
        .find(|(n, v)| is_signature(n) && !v.is_empty())
        .map(|(_, v)| v.trim().to_ascii_uppercase());
    let Some(given) = given.filter(|g| g != "NO_SIGNATURE_PASSPHRASE_PROVIDED") else {
        return Err(Refused::Unverified(
            "sha_sign is missing (set an IPN passphrase in Digistore24)".into(),
        ));
    };
    let genuine = [false, true].into_iter().any(|upper| {
        bool::from(
            sha_sign(&p, passphrase, upper)
                .as_bytes()
                .ct_eq(given.as_bytes()),
        )
    });
    if !genuine {
        return Err(Refused::Unverified(
            "sha_sign does not match the configured Digistore24 IPN passphrase".into(),
        ));
    }
    let event = p
        .get("event")
        .or_else(|| p.get("function_call"))
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if event == "connection_test" {
        return Ok(Notice::Ignore("connection test".into()));
    }
    // As Digistore24's own sample: anything but `live` is a test.
    if p.get("api_mode") != Some("live") {
        let mode = p.get("api_mode").unwrap_or("absent");
        return Ok(Notice::Ignore(format!(
            "test mode (api_mode {mode}): {event}"
        )));
    }
    let clicks: Vec<Tracking> = ["click_id", "custom", "cid", "trackingkey", "campaignkey"]
        .into_iter()
        .filter_map(|field| {
            p.get(field).map(|v| Tracking {
                field,
                value: v.to_string(),
            })
        })
        .collect();
    let amount = Amount {
        field: "amount",
        text: p.get("amount").unwrap_or_default().to_string(),
    };
    let txid = || -> Result<String, Refused> {
        Ok(p.get("transaction_id")
            .ok_or_else(|| Invalid::new("transaction_id", "is required"))?
            .trim()
            .to_string())
    };
    let refund = |kind| -> Result<Notice, Refused> {
        Ok(Notice::Refund {
            clicks: clicks.clone(),
            amount: amount.clone(),
            txid: txid()?,
            reference: p.get("parent_transaction_id").map(|r| r.trim().to_string()),
            kind,
        })
    };
    match event.as_str() {
        "on_payment" => {
            let later = p
                .get("pay_sequence_no")
                .and_then(|n| n.trim().parse::<u32>().ok())
                .is_some_and(|n| n > 1);
            Ok(Notice::Conversion {
                clicks: clicks.clone(),
                amount: amount.clone(),
                txid: txid()?,
                kind: if later { "rebill" } else { "sale" },
            })
        }
        "on_refund" => refund(RefundType::CustomerRequest),
        "on_chargeback" => refund(RefundType::Chargeback),
        "" => Err(Invalid::new("event", "is required").into()),
        e => Ok(Notice::Ignore(format!("event {e} moves no money"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "s3cret-passphrase";

    /// Digistore24's published vectors (ds24-skills, `vectors.json`).
    #[test]
    fn sha_sign_matches_the_published_vectors() {
        let minimal = "9A23DE2603A33D17D935908580B5DB90C452DE8E68556E2A4AD96F1C3EC3BFD2EE3AE47B819B96286812224FBCED943D0ACF48C8C20CA57570E2263B6ABAF099";
        /// Parameters, names uppercased, expected signature.
        type Case<'a> = (&'a [(&'a str, &'a str)], bool, &'a str);
        let cases: [Case; 6] = [
            (
                &[("order_id", "ORD-1"), ("product_id", "42")],
                false,
                minimal,
            ),
            (
                &[
                    ("amount", "47.00"),
                    ("product_id", "42"),
                    ("order_id", "ORD-1"),
                ],
                false,
                "D10912B7772A60B4CCA3F9B1BF1D5AE5E32D75FC75FCBC44BFD265D7890B07C3ACA99F1C6DB50A69AF4762A5C4C1812A4CF7C388367F93682F846AE74E685025",
            ),
            (
                &[("order_id", "ORD-1"), ("note", ""), ("product_id", "42")],
                false,
                minimal,
            ),
            (
                &[
                    ("order_id", "ORD-1"),
                    ("product_id", "42"),
                    ("sha_sign", "DEADBEEF"),
                ],
                false,
                minimal,
            ),
            (
                &[("order_id", "ORD-1"), ("product_id", "42")],
                true,
                "650DFA85696C764CF5276397D48D5F1E7D1D0D42D2836E459CAE83A36814DF67E90C59A508B73D98280400758A65381D09BFA36D7F575345639D24F269A666A2",
            ),
            (
                &[
                    ("order_id", "ORD-2"),
                    ("buyer_first_name", "Jörg"),
                    ("buyer_last_name", "Müller-Straße"),
                ],
                false,
                "2F30138F4508E37C322DF849C4421E0F2B876FD065762B3257253B6BB22256F10BE479F442E3AE5B0922A3FE12A32355AB41B830481F2B4835F92A1B05E604B5",
            ),
        ];
        for (pairs, upper, want) in cases {
            assert_eq!(
                sha_sign(&Params::from_pairs(pairs), PASS, upper),
                want,
                "{pairs:?}"
            );
        }
        // Uppercase names sort differently: ORDERFORM_ID before ORDER_ID.
        let trap = Params::from([("order_id", "X1"), ("orderform_id", "7")]);
        assert!(sha_sign(&trap, PASS, true).starts_with("13A6837E71EEFB08"));
        assert!(sha_sign(&trap, PASS, false).starts_with("6E5C085DF9745355"));
    }

    #[test]
    fn reads_payments_refunds_and_tests() {
        let sign = |pairs: &[(&str, &str)]| {
            let s = sha_sign(&Params::from_pairs(pairs), PASS, false);
            let mut body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            body.push(format!("sha_sign={s}"));
            body.join("&")
        };
        let payment = [
            ("event", "on_payment"),
            ("api_mode", "live"),
            ("transaction_id", "3999938"),
            ("order_id", "AB12CD34"),
            ("amount", "47.00"),
            ("custom", "fb_1"),
        ];
        let Notice::Conversion { txid, kind, .. } = read(PASS, sign(&payment).as_bytes()).unwrap()
        else {
            panic!("a sale")
        };
        assert_eq!((txid.as_str(), kind), ("3999938", "sale"));
        let mut refund = payment;
        refund[0].1 = "on_chargeback";
        refund[2].1 = "3999940";
        assert!(matches!(
            read(PASS, sign(&refund).as_bytes()),
            Ok(Notice::Refund {
                kind: RefundType::Chargeback,
                ..
            })
        ));
        let mut test = payment;
        test[1].1 = "test";
        assert!(matches!(
            read(PASS, sign(&test).as_bytes()),
            Ok(Notice::Ignore(_))
        ));
        let tampered = sign(&payment).replace("47.00", "4700");
        assert!(matches!(
            read(PASS, tampered.as_bytes()),
            Err(Refused::Unverified(_))
        ));
        let unsigned = "event=on_payment&amount=1&sha_sign=no_signature_passphrase_provided";
        assert!(matches!(
            read(PASS, unsigned.as_bytes()),
            Err(Refused::Unverified(_))
        ));
    }
}
