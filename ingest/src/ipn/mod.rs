//! `POST /api/ipn/{network}`: sales, refunds and chargebacks in a network's own notification
//! format, for networks that cannot be told to call our postback URLs with our parameters.
//!
//! Each network's module checks a notification the way the network documents it and says
//! what it means ([`Notice`]); [`to_event`] turns that into the conversion or refund a postback
//! would make, so the same write-ahead log, deduplication keys (docs/design.md §4) and
//! bad-input rules apply.
//!
//! | network | checked by | click ID from | sale ID (`txid`, refunds' `ref`) |
//! |---|---|---|---|
//! | `clickbank` | AES-256-CBC decryption (INS 6.0+) | `trackingCodes`, `vendorVariables.tid` | `receipt` |
//! | `jvzoo` | `cverify` (SHA-1) | `caffitid` | `ctransreceipt` |
//! | `warriorplus` | `WP_SECURITYKEY` | `WP_HOP_SID`, `WP_SID`, `WP_HOP_TID` | `WP_SALE` |
//! | `digistore24` | `sha_sign` (SHA-512) | `click_id`, `custom`, `cid`, `trackingkey`, `campaignkey` | `transaction_id` |
//!
//! A notification that fails its check is refused (401) and records nothing. One that is
//! genuine but moves no money for us (a test, a cancelled subscription, an unknown type, a
//! sale without a click ID of ours) is acknowledged, so the network stops resending it, and
//! logged, never counted.

pub mod clickbank;
pub mod digistore24;
pub mod jvzoo;
pub mod warriorplus;

use netrev_storage::clickid::{self, Kind};
use netrev_storage::money::{self, AmountError};
use netrev_storage::{Conversion, Event, Refund, RefundType};
use rust_decimal::Decimal;

use crate::params::Invalid;
use crate::postback::{Context, MAX_TXID_CHARS};

/// The networks served, by the name in the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    ClickBank,
    JvZoo,
    WarriorPlus,
    Digistore24,
}

impl Network {
    pub const ALL: [Network; 4] = [
        Network::ClickBank,
        Network::JvZoo,
        Network::WarriorPlus,
        Network::Digistore24,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Network::ClickBank => "clickbank",
            Network::JvZoo => "jvzoo",
            Network::WarriorPlus => "warriorplus",
            Network::Digistore24 => "digistore24",
        }
    }

    pub fn from_name(name: &str) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.name() == name)
    }

    /// Checks and reads one notification (the request body) with the network's secret.
    pub fn read(self, secret: &str, body: &[u8]) -> Result<Notice, Refused> {
        match self {
            Network::ClickBank => clickbank::read(secret, body),
            Network::JvZoo => jvzoo::read(secret, body),
            Network::WarriorPlus => warriorplus::read(secret, body),
            Network::Digistore24 => digistore24::read(secret, body),
        }
    }
}

/// Each network's secret (ClickBank's secret key, JVZoo's secret key, WarriorPlus's security
/// key, Digistore24's IPN passphrase); a network without one is not served.
#[derive(Debug, Clone, Default)]
pub struct IpnSecrets {
    pub clickbank: Option<String>,
    pub jvzoo: Option<String>,
    pub warriorplus: Option<String>,
    pub digistore24: Option<String>,
}

impl IpnSecrets {
    pub fn get(&self, network: Network) -> Option<&str> {
        match network {
            Network::ClickBank => self.clickbank.as_deref(),
            Network::JvZoo => self.jvzoo.as_deref(),
            Network::WarriorPlus => self.warriorplus.as_deref(),
            Network::Digistore24 => self.digistore24.as_deref(),
        }
        .filter(|s| !s.trim().is_empty())
    }
}

/// What a genuine notification means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Money in: a sale or a rebill.
    Conversion {
        clicks: Vec<Tracking>,
        amount: Amount,
        txid: String,
        kind: &'static str,
    },
    /// Money back: a refund or a chargeback of the sale `reference`.
    Refund {
        clicks: Vec<Tracking>,
        amount: Amount,
        txid: String,
        reference: Option<String>,
        kind: RefundType,
    },
    /// Acknowledged and not counted, for this reason.
    Ignore(String),
}

/// A value the network echoed back that may be our click ID, and the field it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    pub field: &'static str,
    pub value: String,
}

/// An amount as the network wrote it, and its field (named in a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub field: &'static str,
    pub text: String,
}

/// Why a notification was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// 401: it does not pass the network's check; it may not come from the network.
    Unverified(String),
    /// 400: it passes the check but cannot be read.
    Invalid(Invalid),
}

impl From<Invalid> for Refused {
    fn from(i: Invalid) -> Self {
        Refused::Invalid(i)
    }
}

/// The event a notice records (`Ok(Ok)`), or why it records nothing (`Ok(Err)`).
pub fn to_event(notice: Notice, ctx: &Context) -> Result<Result<Event, String>, Invalid> {
    match notice {
        Notice::Ignore(why) => Ok(Err(why)),
        Notice::Conversion {
            clicks,
            amount,
            txid,
            kind,
        } => {
            let value = parse_amount(&amount)?;
            if value.is_sign_negative() && !value.is_zero() {
                return Err(Invalid::new(
                    amount.field,
                    "must not be negative for a sale",
                ));
            }
            let Some(cid) = click_id(&clicks, ctx) else {
                return Ok(Err(no_click(&clicks)));
            };
            Ok(Ok(Event::Conversion(Conversion {
                cid,
                ts: ctx.now_micros,
                amount: value.abs(),
                txid: Some(id("txid", txid)?),
                kind: Some(kind.to_string()),
            })))
        }
        Notice::Refund {
            clicks,
            amount,
            txid,
            reference,
            kind,
        } => {
            // Networks differ in the sign of refunds; the direction is the notice's type.
            let value = parse_amount(&amount)?.abs();
            if value.is_zero() {
                return Ok(Err(format!("{} is zero: no money moved", amount.field)));
            }
            let Some(cid) = click_id(&clicks, ctx) else {
                return Ok(Err(no_click(&clicks)));
            };
            Ok(Ok(Event::Refund(Refund {
                cid,
                ts: ctx.now_micros,
                amount: value,
                txid: Some(id("txid", txid)?),
                kind,
                reference: reference.map(|r| id("ref", r)).transpose()?,
            })))
        }
    }
}

/// The first echoed value that is a click ID netrev issued (its integrity check passes).
/// Anything else is someone else's code (a campaign key, a vendor's tracking ID) or
/// mistyped: a sale carrying only such values is not from a netrev click.
fn click_id(clicks: &[Tracking], ctx: &Context) -> Option<String> {
    clicks
        .iter()
        .find(|t| {
            matches!(
                clickid::check(&t.value, ctx.key, ctx.now_ms()),
                Ok(Kind::Native { .. })
            )
        })
        .map(|t| t.value.clone())
}

fn no_click(clicks: &[Tracking]) -> String {
    if clicks.is_empty() {
        "no tracking field: not a sale from a netrev click".to_string()
    } else {
        let seen: Vec<String> = clicks
            .iter()
            .map(|t| format!("{}={:?}", t.field, t.value))
            .collect();
        format!("no netrev click ID in {}", seen.join(", "))
    }
}

fn parse_amount(a: &Amount) -> Result<Decimal, Invalid> {
    money::parse(&a.text).map_err(|e| {
        let msg = match e {
            AmountError::Empty => "is required".to_string(),
            other => other.to_string(),
        };
        Invalid::new(a.field, msg)
    })
}

fn id(field: &str, v: String) -> Result<String, Invalid> {
    if v.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if v.chars().count() > MAX_TXID_CHARS || v.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!("must be 1-{MAX_TXID_CHARS} characters without control characters"),
        ));
    }
    Ok(v)
}

/// The `txid` of a refund or chargeback (`what`) of `receipt`. Networks send the sale's
/// receipt with it, so the notification's time tells two refunds of one sale apart (a partial
/// one, or a rebill's that reused the receipt), while a resent notification, which keeps its
/// time, is the same refund.
pub fn refund_txid(receipt: &str, what: &str, time: Option<&str>) -> String {
    match time.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => format!("{receipt}-{what}-{t}"),
        None => format!("{receipt}-{what}"),
    }
}

/// The `txid` of a rebill. Networks give rebills receipts of their own (`RECEIPT-B001`); one
/// that repeats the first sale's receipt is told apart by its time, so it is never taken for
/// a retried copy of that sale and dropped.
pub fn rebill_txid(receipt: &str, time: Option<&str>) -> String {
    match time {
        Some(t) if !receipt.contains('-') => format!("{receipt}-BILL-{t}"),
        _ => receipt.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(key: &clickid::Key) -> Context<'_> {
        Context {
            key,
            now_micros: 1_795_000_000_000_000,
        }
    }

    fn tracking(values: &[&str]) -> Vec<Tracking> {
        values
            .iter()
            .map(|v| Tracking {
                field: "tid",
                value: v.to_string(),
            })
            .collect()
    }

    #[test]
    fn only_our_click_ids_count_and_none_means_ignored() {
        let key = clickid::Key::random();
        let ours = clickid::Generator::new(key.clone())
            .issue(1_795_000_000_000)
            .0;
        let c = ctx(&key);
        let amount = Amount {
            field: "amount",
            text: "-12.50".into(),
        };
        let refund = |clicks| Notice::Refund {
            clicks,
            amount: amount.clone(),
            txid: "R-RFND".into(),
            reference: Some("R".into()),
            kind: RefundType::Chargeback,
        };
        let Ok(Ok(Event::Refund(r))) =
            to_event(refund(tracking(&["vendor code!", "fb_1", &ours])), &c)
        else {
            panic!("recorded")
        };
        assert_eq!(
            (r.cid.as_str(), r.amount),
            (ours.as_str(), Decimal::new(125, 1))
        );
        let Ok(Err(why)) = to_event(refund(tracking(&["fb_1"])), &c) else {
            panic!("a code that is not a netrev click ID is not a click")
        };
        assert!(why.contains("fb_1"), "{why}");
        let Ok(Err(why)) = to_event(refund(tracking(&["has space"])), &c) else {
            panic!("ignored")
        };
        assert!(
            why.contains("no netrev click ID in tid=\"has space\""),
            "{why}"
        );
        assert!(matches!(to_event(refund(vec![]), &c), Ok(Err(_))));
    }

    #[test]
    fn amounts_are_exact_and_checked() {
        let key = clickid::Key::random();
        let ours = clickid::Generator::new(key.clone())
            .issue(1_795_000_000_000)
            .0;
        let c = ctx(&key);
        let sale = |text: &str| Notice::Conversion {
            clicks: tracking(&[&ours]),
            amount: Amount {
                field: "ctransamount",
                text: text.into(),
            },
            txid: "T".into(),
            kind: "sale",
        };
        let Ok(Ok(Event::Conversion(cv))) = to_event(sale("0.10"), &c) else {
            panic!()
        };
        assert_eq!(cv.amount, Decimal::new(1, 1));
        assert_eq!(to_event(sale("1e3"), &c).unwrap_err().field, "ctransamount");
        assert_eq!(to_event(sale("-5"), &c).unwrap_err().field, "ctransamount");
    }

    #[test]
    fn rebills_never_share_the_sale_txid() {
        assert_eq!(rebill_txid("ABC-B001", Some("1700")), "ABC-B001");
        assert_eq!(rebill_txid("ABC", Some("1700")), "ABC-BILL-1700");
        assert_eq!(rebill_txid("ABC", None), "ABC");
        assert_eq!(refund_txid("ABC", "RFND", Some("1700")), "ABC-RFND-1700");
        assert_eq!(refund_txid("ABC", "RFND", None), "ABC-RFND");
    }
}
