//! WarriorPlus IPN (the form post of `WP_…` fields).
//!
//! Checked by `WP_SECURITYKEY`, which WarriorPlus sends as set in the account (it signs
//! nothing); compared in constant time, a missing key is refused.
//!
//! | `WP_ACTION` | event |
//! |---|---|
//! | `sale`, `subscr_created` | conversion `sale`, `txid` = the sale ID |
//! | `subscr_completed` | conversion `rebill`, `txid` = `WP_SUBSCR_PAYMENT_TXNID` |
//! | `refund`, `subscr_refunded` | refund `customer_request`, `txid` = `SALE-refund`, `ref` = the sale ID |
//! | `dispute` | refund `chargeback`, `txid` = `SALE-dispute`, `ref` = the sale ID |
//!
//! A refund or dispute of one payment of a subscription (`WP_SUBSCR_PAYMENT_TXNID` given) is
//! `SALE-PAYMENT-refund` (or `-dispute`) with `ref` = that payment.
//! | cancellations, failures, anything else | acknowledged, ignored |
//!
//! The sale ID is `WP_SALE` (else `WP_SALEID`, else `WP_TXNID`). The amount is what the
//! recipient earns: `WP_SALE_EARNINGS_AFF` for an affiliate's notification (`IPN_RCPT_TYPE`
//! `aff`), `WP_SALE_EARNINGS_VENDOR` for a vendor's, else `WP_SALE_AMOUNT`. The click ID is
//! the SubID of the link: `WP_HOP_SID`, `WP_SID` or `WP_HOP_TID`.

use super::{Amount, Notice, Refused, Tracking};
use crate::params::Invalid;
use crate::params::{self, BodyKind};
use crate::secret::Secret;
use netrev_storage::RefundType;

pub fn read(secret: &str, body: &[u8]) -> Result<Notice, Refused> {
    let p = params::parse(None, body, BodyKind::Form)?;
    match p.get("WP_SECURITYKEY") {
        None => return Err(Refused::Unverified("WP_SECURITYKEY is missing".into())),
        Some(k) if !Secret::new(secret.trim()).matches(Some(k.trim())) => {
            return Err(Refused::Unverified(
                "WP_SECURITYKEY is not the configured WarriorPlus security key".into(),
            ));
        }
        Some(_) => {}
    }
    let clicks: Vec<Tracking> = ["WP_HOP_SID", "WP_SID", "WP_HOP_TID"]
        .into_iter()
        .filter_map(|field| {
            p.get(field).map(|v| Tracking {
                field,
                value: v.to_string(),
            })
        })
        .collect();
    let earnings = match p.get("IPN_RCPT_TYPE") {
        Some("aff") => Some("WP_SALE_EARNINGS_AFF"),
        Some("vend") => Some("WP_SALE_EARNINGS_VENDOR"),
        _ => None,
    };
    let amount = || {
        let field = earnings
            .filter(|f| p.get(f).is_some())
            .unwrap_or("WP_SALE_AMOUNT");
        Amount {
            field,
            text: p.get(field).unwrap_or_default().to_string(),
        }
    };
    let sale = || -> Result<String, Refused> {
        Ok(["WP_SALE", "WP_SALEID", "WP_TXNID"]
            .into_iter()
            .find_map(|f| p.get(f))
            .ok_or_else(|| Invalid::new("WP_SALE", "is required (or WP_SALEID, WP_TXNID)"))?
            .trim()
            .to_string())
    };
    let refund = |kind, what: &str| -> Result<Notice, Refused> {
        let sale = sale()?;
        // A subscription is refunded or disputed payment by payment; each recurring payment
        // was recorded under its own transaction ID.
        let (txid, reference) = match p.get("WP_SUBSCR_PAYMENT_TXNID") {
            Some(payment) => (
                format!("{sale}-{payment}-{what}"),
                payment.trim().to_string(),
            ),
            None => (format!("{sale}-{what}"), sale),
        };
        Ok(Notice::Refund {
            clicks: clicks.clone(),
            amount: amount(),
            txid,
            reference: Some(reference),
            kind,
        })
    };
    let action = p
        .get("WP_ACTION")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match action.as_str() {
        "sale" | "subscr_created" => Ok(Notice::Conversion {
            clicks: clicks.clone(),
            amount: amount(),
            txid: sale()?,
            kind: "sale",
        }),
        "subscr_completed" => {
            let txid = p.get("WP_SUBSCR_PAYMENT_TXNID").ok_or_else(|| {
                Invalid::new(
                    "WP_SUBSCR_PAYMENT_TXNID",
                    "is required for a recurring payment",
                )
            })?;
            Ok(Notice::Conversion {
                clicks: clicks.clone(),
                amount: amount(),
                txid: txid.trim().to_string(),
                kind: "rebill",
            })
        }
        "refund" => refund(RefundType::CustomerRequest, "refund"),
        "subscr_refunded" => refund(RefundType::CustomerRequest, "refund"),
        "dispute" => refund(RefundType::Chargeback, "dispute"),
        "" => Err(Invalid::new("WP_ACTION", "is required").into()),
        a if a.contains("test") => Ok(Notice::Ignore(format!("test notification ({a})"))),
        a => Ok(Notice::Ignore(format!("action {a} moves no money"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALE: &str = "WP_ACTION=sale&WP_SALE=sale_abc123&WP_SALEID=1234567&WP_TXNID=ch_3ABC&WP_ITEM_NUMBER=wso_xyz&WP_ITEM_NAME=Test&WP_BUYER_NAME=Test+Buyer&WP_BUYER_EMAIL=buyer%40example.com&WP_SALE_AMOUNT=17.00&WP_SALE_CURRENCY=USD&WP_SALE_EARNINGS_AFF=8.50&WP_PAYMENT_STATUS=Completed&WP_AFFID=42&WP_HOP_SID=clk_001&IPN_ID=ipn_1&IPN_RCPT_TYPE=aff&WP_SECURITYKEY=MyKey123";

    #[test]
    fn reads_a_sale_for_an_affiliate() {
        let Notice::Conversion {
            clicks,
            amount,
            txid,
            ..
        } = read("MyKey123", SALE.as_bytes()).unwrap()
        else {
            panic!("a sale")
        };
        assert_eq!(clicks[0].value, "clk_001");
        assert_eq!(
            (amount.field, amount.text.as_str()),
            ("WP_SALE_EARNINGS_AFF", "8.50")
        );
        assert_eq!(txid, "sale_abc123");
        assert!(matches!(
            read("mykey123", SALE.as_bytes()),
            Err(Refused::Unverified(_))
        ));
        let unsigned = SALE.replace("&WP_SECURITYKEY=MyKey123", "");
        assert!(matches!(
            read("MyKey123", unsigned.as_bytes()),
            Err(Refused::Unverified(_))
        ));
    }

    #[test]
    fn refunds_and_disputes_name_the_sale() {
        let refund = SALE.replace("WP_ACTION=sale", "WP_ACTION=refund");
        let Notice::Refund {
            txid,
            reference,
            kind,
            ..
        } = read("MyKey123", refund.as_bytes()).unwrap()
        else {
            panic!("a refund")
        };
        assert_eq!(txid, "sale_abc123-refund");
        assert_eq!(reference.as_deref(), Some("sale_abc123"));
        assert_eq!(kind, RefundType::CustomerRequest);
        let dispute = SALE.replace("WP_ACTION=sale", "WP_ACTION=dispute");
        assert!(matches!(
            read("MyKey123", dispute.as_bytes()),
            Ok(Notice::Refund {
                kind: RefundType::Chargeback,
                ..
            })
        ));
        let cancel = SALE.replace("WP_ACTION=sale", "WP_ACTION=subscr_cancelled");
        assert!(matches!(
            read("MyKey123", cancel.as_bytes()),
            Ok(Notice::Ignore(_))
        ));
    }
}
