//! Deduplication keys (docs/design.md §4).
//!
//! - conversion: `(cid, txid)`; without `txid`, one txid-less conversion per `cid`;
//! - refund: `(cid, txid)`; without `txid`, `(cid, type, ref, amount)`;
//! - clicks are issued by netrev with fresh IDs and have no key.
//!
//! A key is the first 128 bits of SHA-256 over an unambiguous encoding of its parts: fixed
//! size in memory, and no collision can be provoked by crafted text the way a fast
//! non-cryptographic hash could be.

use sha2::{Digest, Sha256};

use netrev_storage::Event;
use netrev_storage::money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 16]);

/// The deduplication key of `event`, or `None` for events that are never duplicates.
pub fn key(event: &Event) -> Option<Key> {
    let mut h = Sha256::new();
    let part = |h: &mut Sha256, p: Option<&str>| match p {
        Some(s) => {
            h.update([1]);
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        None => h.update([0]),
    };
    match event {
        Event::Click(_) => return None,
        Event::Conversion(c) => {
            h.update(b"conversion");
            part(&mut h, Some(&c.cid));
            part(&mut h, c.txid.as_deref());
        }
        Event::Refund(r) => {
            h.update(b"refund");
            part(&mut h, Some(&r.cid));
            part(&mut h, r.txid.as_deref());
            if r.txid.is_none() {
                part(&mut h, Some(r.kind.as_str()));
                part(&mut h, r.reference.as_deref());
                // Amounts compare by value: 49.9 and 49.9000 are the same refund.
                let units = money::to_units(r.amount).unwrap_or_default();
                h.update(units.to_le_bytes());
            }
        }
    }
    let digest = h.finalize();
    Some(Key(digest[..16].try_into().expect("16 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrev_storage::{Conversion, Refund, RefundType};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn refund(
        txid: Option<&str>,
        amount: &str,
        reference: Option<&str>,
        kind: RefundType,
    ) -> Event {
        Event::Refund(Refund {
            cid: "c".into(),
            ts: 1,
            amount: Decimal::from_str(amount).unwrap(),
            txid: txid.map(Into::into),
            kind,
            reference: reference.map(Into::into),
        })
    }

    #[test]
    fn keys_follow_the_contract() {
        let cr = RefundType::CustomerRequest;
        // With txid, only (cid, txid) matters.
        assert_eq!(
            key(&refund(Some("r1"), "5", None, cr)),
            key(&refund(Some("r1"), "7", Some("x"), RefundType::Chargeback))
        );
        // Without txid: type, ref and amount (by value) matter.
        assert_eq!(
            key(&refund(None, "5.5", None, cr)),
            key(&refund(None, "5.5000", None, cr))
        );
        assert_ne!(
            key(&refund(None, "5", None, cr)),
            key(&refund(None, "6", None, cr))
        );
        assert_ne!(
            key(&refund(None, "5", None, cr)),
            key(&refund(None, "5", Some("t"), cr))
        );
        assert_ne!(
            key(&refund(None, "5", None, cr)),
            key(&refund(None, "5", None, RefundType::Chargeback))
        );
        let conv = |txid: Option<&str>, amount: &str, ts: i64| {
            Event::Conversion(Conversion {
                cid: "c".into(),
                ts,
                amount: Decimal::from_str(amount).unwrap(),
                txid: txid.map(Into::into),
                kind: None,
            })
        };
        assert_eq!(key(&conv(None, "1", 1)), key(&conv(None, "2", 2)));
        assert_ne!(key(&conv(Some("a"), "1", 1)), key(&conv(Some("b"), "1", 1)));
        assert_ne!(key(&conv(Some("a"), "1", 1)), key(&conv(None, "1", 1)));
        // A refund and a conversion never share a key.
        assert_ne!(
            key(&conv(Some("r1"), "5", 1)),
            key(&refund(Some("r1"), "5", None, cr))
        );
    }
}
