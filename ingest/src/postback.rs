//! Validation of postbacks into events (docs/design.md §3).
//!
//! Every function here is pure: parameters in, an event or an [`Invalid`] naming the offending
//! field out. Nothing is recorded for an invalid postback.

use rust_decimal::Decimal;

use netrev_storage::clickid::{self, CidError};
use netrev_storage::money::{self, AmountError};
use netrev_storage::{Click, Conversion, Refund, RefundType};

pub use crate::params::Invalid;
use crate::params::Params;

/// Longest free-text value (source, campaign, sub1…): generous for real labels, small enough
/// that a hostile postback cannot bloat the tables.
pub const MAX_TEXT_CHARS: usize = 255;
/// Longest transaction ID or reference; networks use at most a few dozen characters.
pub const MAX_TXID_CHARS: usize = 128;
/// Longest visitor ID, the same shape as a foreign click ID.
pub const MAX_VID_CHARS: usize = 64;

/// What validation needs to know beyond the parameters.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub key: &'a clickid::Key,
    /// Receipt time, microseconds since the epoch; the `ts` of conversions and refunds.
    pub now_micros: i64,
}

impl Context<'_> {
    pub(crate) fn now_ms(&self) -> u64 {
        (self.now_micros / 1000).max(0) as u64
    }
}

/// The validated fields of a click, before netrev gives it an ID and a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickFields {
    pub vid: Option<String>,
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub link: Option<String>,
    pub country: Option<String>,
    pub device: Option<String>,
    pub cost: Decimal,
    pub subs: [Option<String>; 5],
}

impl ClickFields {
    /// The click, given the ID and time netrev issued and the visitor ID to use when none came.
    pub fn into_click(self, cid: String, ts: i64, new_vid: impl FnOnce() -> String) -> Click {
        Click {
            cid,
            vid: self.vid.unwrap_or_else(new_vid),
            ts,
            source: self.source,
            campaign: self.campaign,
            link: self.link,
            country: self.country,
            device: self.device,
            cost: self.cost,
            subs: self.subs,
        }
    }
}

/// A new visitor ID: 16 characters of the click-ID alphabet (80 random bits).
pub fn new_vid() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..16)
        .map(|_| ALPHABET[rand::random_range(0..32)] as char)
        .collect()
}

pub fn click(p: &Params) -> Result<ClickFields, Invalid> {
    let vid = p
        .get("vid")
        .map(|v| id_like("vid", v, MAX_VID_CHARS))
        .transpose()?;
    let cost = match p.get("cost") {
        None => Decimal::ZERO,
        Some(v) => {
            let c = amount("cost", v)?;
            if c.is_sign_negative() && !c.is_zero() {
                return Err(Invalid::new("cost", "must not be negative"));
            }
            c.abs()
        }
    };
    let subs = [
        opt_text(p, "sub1", MAX_TEXT_CHARS)?,
        opt_text(p, "sub2", MAX_TEXT_CHARS)?,
        opt_text(p, "sub3", MAX_TEXT_CHARS)?,
        opt_text(p, "sub4", MAX_TEXT_CHARS)?,
        opt_text(p, "sub5", MAX_TEXT_CHARS)?,
    ];
    Ok(ClickFields {
        vid,
        source: opt_text(p, "source", MAX_TEXT_CHARS)?,
        campaign: opt_text(p, "campaign", MAX_TEXT_CHARS)?,
        link: opt_text(p, "link", MAX_TEXT_CHARS)?,
        country: opt_text(p, "country", MAX_TEXT_CHARS)?,
        device: opt_text(p, "device", MAX_TEXT_CHARS)?,
        cost,
        subs,
    })
}

pub fn conversion(p: &Params, ctx: &Context) -> Result<Conversion, Invalid> {
    let cid = cid(p, ctx)?;
    let (field, value) = amount_param(p)?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(Invalid::new(field, "must not be negative"));
    }
    Ok(Conversion {
        cid,
        ts: ctx.now_micros,
        amount: value.abs(),
        txid: opt_text(p, "txid", MAX_TXID_CHARS)?,
        kind: opt_text(p, "type", MAX_TEXT_CHARS)?,
    })
}

pub fn refund(p: &Params, ctx: &Context) -> Result<Refund, Invalid> {
    let cid = cid(p, ctx)?;
    let (field, value) = amount_param(p)?;
    if value.is_zero() {
        return Err(Invalid::new(field, "must not be zero"));
    }
    let kind = match p.get("type").map(str::to_ascii_lowercase).as_deref() {
        None | Some("customer_request" | "refund" | "request") => RefundType::CustomerRequest,
        Some("chargeback" | "cb") => RefundType::Chargeback,
        Some(_) => {
            return Err(Invalid::new(
                "type",
                "must be chargeback (or cb) or customer_request (or refund, request)",
            ));
        }
    };
    Ok(Refund {
        cid,
        ts: ctx.now_micros,
        // A negative amount means the same refund: networks differ in sign conventions.
        amount: value.abs(),
        txid: opt_text(p, "txid", MAX_TXID_CHARS)?,
        kind,
        reference: opt_text(p, "ref", MAX_TXID_CHARS)?,
    })
}

fn cid(p: &Params, ctx: &Context) -> Result<String, Invalid> {
    let Some(cid) = p.get("cid") else {
        return Err(Invalid::new("cid", "is required"));
    };
    match clickid::check(cid, ctx.key, ctx.now_ms()) {
        Ok(_) => Ok(cid.to_string()),
        Err(e @ (CidError::Empty | CidError::Malformed | CidError::BadMac)) => {
            Err(Invalid::new("cid", e.to_string()))
        }
    }
}

/// `amount`, or its alias `payout`; both given with different values is an error.
fn amount_param(p: &Params) -> Result<(&'static str, Decimal), Invalid> {
    let a = p.get("amount").map(|v| amount("amount", v)).transpose()?;
    let b = p.get("payout").map(|v| amount("payout", v)).transpose()?;
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(Invalid::new("amount", "amount and payout differ")),
        (Some(a), _) => Ok(("amount", a)),
        (None, Some(b)) => Ok(("payout", b)),
        (None, None) => Err(Invalid::new("amount", "is required")),
    }
}

fn amount(field: &str, text: &str) -> Result<Decimal, Invalid> {
    money::parse(text).map_err(|e| {
        let msg = match e {
            AmountError::Empty => "is required".to_string(),
            other => other.to_string(),
        };
        Invalid::new(field, msg)
    })
}

fn opt_text(p: &Params, field: &str, max_chars: usize) -> Result<Option<String>, Invalid> {
    let Some(v) = p.get(field) else {
        return Ok(None);
    };
    if v.chars().count() > max_chars {
        return Err(Invalid::new(
            field,
            format!("is longer than {max_chars} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Invalid::new(field, "contains control characters"));
    }
    Ok(Some(v.to_string()))
}

fn id_like(field: &str, v: &str, max: usize) -> Result<String, Invalid> {
    if v.len() > max
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Invalid::new(
            field,
            format!("must be 1-{max} characters of A-Z a-z 0-9 _ -"),
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn ctx(key: &clickid::Key) -> Context<'_> {
        Context {
            key,
            now_micros: 1_795_000_000_000_000,
        }
    }

    #[test]
    fn refund_types_and_signs() {
        let key = clickid::Key::random();
        let c = ctx(&key);
        for (t, want) in [
            (None, RefundType::CustomerRequest),
            (Some("cb"), RefundType::Chargeback),
            (Some("Chargeback"), RefundType::Chargeback),
            (Some("refund"), RefundType::CustomerRequest),
            (Some("request"), RefundType::CustomerRequest),
            (Some("customer_request"), RefundType::CustomerRequest),
        ] {
            let mut pairs = vec![("cid", "abc"), ("amount", "-49.99")];
            if let Some(t) = t {
                pairs.push(("type", t));
            }
            let p = Params::from_pairs(&pairs);
            let r = refund(&p, &c).unwrap();
            assert_eq!(r.kind, want);
            assert_eq!(r.amount, Decimal::from_str("49.99").unwrap());
        }
    }

    #[test]
    fn payout_alias() {
        let key = clickid::Key::random();
        let c = ctx(&key);
        let conv = conversion(&Params::from([("cid", "x"), ("payout", "3.5")]), &c).unwrap();
        assert_eq!(conv.amount, Decimal::from_str("3.5").unwrap());
        let e = conversion(
            &Params::from([("cid", "x"), ("payout", "3.5"), ("amount", "3")]),
            &c,
        );
        assert_eq!(e.unwrap_err().field, "amount");
        let same = conversion(
            &Params::from([("cid", "x"), ("payout", "3.50"), ("amount", "3.5")]),
            &c,
        );
        assert!(same.is_ok());
    }
}
