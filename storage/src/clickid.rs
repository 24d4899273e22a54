//! Click IDs: URL-safe, time-sortable, self-locating and checked by a MAC.
//!
//! A netrev click ID is 24 characters of lowercase Crockford base32 (`0-9a-z` without `i l o u`)
//! encoding 120 bits, most significant first:
//!
//! | bits | content |
//! |---|---|
//! | 48 | click time, milliseconds since the Unix epoch |
//! | 40 | random (monotonic within one millisecond of one process) |
//! | 32 | MAC: the first 4 bytes of HMAC-SHA256(key, the 11 bytes above) |
//!
//! Because the time comes first and the alphabet is in ASCII order, IDs sort by click time as
//! plain strings, and a postback's `cid` tells which day's data holds its click without a lookup.
//! 24 characters fit the tracking fields of networks that limit them to 24 alphanumerics.
//!
//! Clicks imported from elsewhere may carry *foreign* IDs: 1–64 characters of `[A-Za-z0-9_-]`.
//! An ID with the netrev shape (24 characters of the alphabet and a time between 2020 and
//! tomorrow) is checked against its MAC; anything else that is well-formed is foreign.

use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a netrev click ID in characters.
pub const LEN: usize = 24;
/// Longest foreign click ID accepted, as the contract fixes.
pub const MAX_FOREIGN_LEN: usize = 64;
/// Bytes of the secret MAC key.
pub const KEY_LEN: usize = 32;
/// Earliest plausible click time of a netrev ID (2020-01-01T00:00:00Z): older "times" mean the
/// string is a foreign ID that happens to use our alphabet.
const MIN_PLAUSIBLE_MS: u64 = 1_577_836_800_000;
/// Clock skew tolerated between the node that issued an ID and the one checking it.
const MAX_FUTURE_MS: u64 = 24 * 3600 * 1000;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The secret key of the click-ID MAC, shared by every node of one deployment.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }

    pub fn random() -> Self {
        Key(rand::random())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A name of the data root this key belongs to (each root has its own key), which tells
    /// nothing of the key: for node-local files that must not be used with another root.
    pub fn fingerprint(&self) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"netrev data root");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != KEY_LEN * 2 {
            return None;
        }
        let mut out = [0u8; KEY_LEN];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Key(out))
    }

    fn mac(&self, body: &[u8; 11]) -> [u8; 4] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length works");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        [tag[0], tag[1], tag[2], tag[3]]
    }
}

/// What a well-formed click ID turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Issued by netrev; the click happened at this time (Unix milliseconds).
    Native { millis: u64 },
    /// Brought from another tracker; its click time is unknown until the click is found.
    Foreign,
}

/// Why a click ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    #[error("is empty")]
    Empty,
    #[error("must be 1-64 characters of A-Z a-z 0-9 _ -")]
    Malformed,
    #[error("failed its integrity check (mistyped or forged click ID)")]
    BadMac,
}

/// Classifies and checks `cid`; `now_ms` bounds the plausible click time.
pub fn check(cid: &str, key: &Key, now_ms: u64) -> Result<Kind, CidError> {
    if cid.is_empty() {
        return Err(CidError::Empty);
    }
    if cid.len() > MAX_FOREIGN_LEN
        || !cid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(CidError::Malformed);
    }
    let Some(bytes) = decode(cid) else {
        return Ok(Kind::Foreign);
    };
    let millis = millis_of(&bytes);
    if !(MIN_PLAUSIBLE_MS..=now_ms.saturating_add(MAX_FUTURE_MS)).contains(&millis) {
        return Ok(Kind::Foreign);
    }
    let body: [u8; 11] = bytes[..11].try_into().expect("11 bytes");
    if key.mac(&body) != bytes[11..] {
        return Err(CidError::BadMac);
    }
    Ok(Kind::Native { millis })
}

/// The click time encoded in a netrev-shaped ID, without checking its MAC. For locating data
/// only; use [`check`] on anything that came from outside.
pub fn millis(cid: &str) -> Option<u64> {
    decode(cid).map(|b| millis_of(&b))
}

/// The 120 bits of a netrev-shaped ID (no MAC check), or `None` for any other string: a
/// compact key for in-memory indexes. [`bits_millis`] reads the click time back.
pub fn bits(cid: &str) -> Option<u128> {
    decode(cid).map(|b| {
        let mut full = [0u8; 16];
        full[1..].copy_from_slice(&b);
        u128::from_be_bytes(full)
    })
}

/// The ID whose [`bits`] these are (the inverse of [`bits`]).
pub fn from_bits(bits: u128) -> String {
    let mut bytes = [0u8; 15];
    bytes.copy_from_slice(&bits.to_be_bytes()[1..]);
    encode(&bytes)
}

/// The click time (ms since the epoch) of an ID's [`bits`].
pub fn bits_millis(bits: u128) -> u64 {
    (bits >> 72) as u64
}

fn millis_of(bytes: &[u8; 15]) -> u64 {
    bytes[..6]
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

fn decode(cid: &str) -> Option<[u8; 15]> {
    if cid.len() != LEN {
        return None;
    }
    let mut acc: u128 = 0;
    for b in cid.bytes() {
        let v = ALPHABET.iter().position(|&a| a == b)?;
        acc = (acc << 5) | v as u128;
    }
    let mut out = [0u8; 15];
    out.copy_from_slice(&acc.to_be_bytes()[1..]);
    Some(out)
}

fn encode(bytes: &[u8; 15]) -> String {
    let mut full = [0u8; 16];
    full[1..].copy_from_slice(bytes);
    let acc = u128::from_be_bytes(full);
    (0..LEN)
        .rev()
        .map(|i| ALPHABET[((acc >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Issues click IDs. IDs from one generator are strictly increasing, even within a millisecond.
#[derive(Debug)]
pub struct Generator {
    key: Key,
    /// Last (millisecond, random) issued, so IDs within one millisecond stay ordered and unique.
    last: Mutex<(u64, u64)>,
}

/// Mask of the 40 random bits.
const RANDOM_MASK: u64 = (1 << 40) - 1;

impl Generator {
    pub fn new(key: Key) -> Self {
        Generator {
            key,
            last: Mutex::new((0, 0)),
        }
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// A new ID for a click at `now_ms`. Returns the ID and the millisecond it encodes (which
    /// may be later than `now_ms` by a millisecond when one millisecond's random space is
    /// exhausted, and is never earlier than an ID issued before).
    pub fn issue(&self, now_ms: u64) -> (String, u64) {
        let (millis, random) = {
            let mut last = self.last.lock().expect("generator lock");
            let next = if now_ms > last.0 {
                (now_ms, rand::random::<u64>() & (RANDOM_MASK >> 1))
            } else if last.1 < RANDOM_MASK {
                (last.0, last.1 + 1)
            } else {
                (last.0 + 1, rand::random::<u64>() & (RANDOM_MASK >> 1))
            };
            *last = next;
            next
        };
        let mut body = [0u8; 11];
        body[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        body[6..].copy_from_slice(&random.to_be_bytes()[3..]);
        let mut bytes = [0u8; 15];
        bytes[..11].copy_from_slice(&body);
        bytes[11..].copy_from_slice(&self.key.mac(&body));
        (encode(&bytes), millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000; // 2026-11-18

    #[test]
    fn issued_ids_check_sort_and_carry_time() {
        let g = Generator::new(Key::random());
        let mut prev = String::new();
        for i in 0..2000 {
            let now = NOW + i / 100;
            let (cid, ms) = g.issue(now);
            assert_eq!(cid.len(), LEN);
            assert!(cid > prev, "{cid} !> {prev}");
            assert_eq!(check(&cid, g.key(), NOW), Ok(Kind::Native { millis: ms }));
            assert_eq!(ms, now);
            assert_eq!(millis(&cid), Some(ms));
            assert_eq!(from_bits(bits(&cid).unwrap()), cid);
            prev = cid;
        }
    }

    #[test]
    fn any_single_typo_is_rejected() {
        let g = Generator::new(Key::random());
        let (cid, _) = g.issue(NOW);
        // Change each character after the time part (a typo in the time makes it a different
        // time, which the MAC covers too).
        for pos in 0..LEN {
            for &c in ALPHABET {
                let mut bytes = cid.clone().into_bytes();
                if bytes[pos] == c {
                    continue;
                }
                bytes[pos] = c;
                let typo = String::from_utf8(bytes).unwrap();
                match check(&typo, g.key(), NOW) {
                    Err(CidError::BadMac) | Ok(Kind::Foreign) => {}
                    other => panic!("{typo}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_fingerprint_names_its_key_only() {
        let key = Key::random();
        assert_eq!(key.fingerprint(), key.clone().fingerprint());
        assert_ne!(key.fingerprint(), Key::random().fingerprint());
        assert!(!key.to_hex().contains(&key.fingerprint()));
        assert_eq!(key.fingerprint().len(), 16);
    }

    #[test]
    fn another_key_rejects() {
        let (cid, _) = Generator::new(Key::random()).issue(NOW);
        assert_eq!(check(&cid, &Key::random(), NOW), Err(CidError::BadMac));
    }

    #[test]
    fn foreign_and_malformed() {
        let key = Key::random();
        for foreign in [
            "a",
            "ABC-def_123",
            "507f1f77bcf86cd799439011",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert_eq!(check(foreign, &key, NOW), Ok(Kind::Foreign), "{foreign}");
            // A foreign ID that happens to have the shape keeps its text through its bits.
            if let Some(b) = bits(foreign) {
                assert_eq!(from_bits(b), foreign);
            }
        }
        assert_eq!(check("", &key, NOW), Err(CidError::Empty));
        for bad in ["a b", "a.b", "ü", &"x".repeat(65), "a/b", "a%20"] {
            assert_eq!(check(bad, &key, NOW), Err(CidError::Malformed), "{bad}");
        }
    }

    #[test]
    fn key_hex_round_trip() {
        let k = Key::random();
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap().0, k.0);
        assert!(Key::from_hex("zz").is_none());
    }
}
