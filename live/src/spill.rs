//! The click IDs (as bytes) whose events the live state left to the raw files (*spilled*) because the
//! events waiting for an unknown click reached their memory cap (`--live-pending-max-mib`).
//!
//! A Bloom filter of fixed size: it never forgets a click ID it was given, and says "maybe"
//! of others only rarely (about 1 in 6,000 with a million IDs in it, 1 in 25 with five
//! million). A "maybe" costs only a read of the raw files for the events of that click ID when
//! its click arrives from a file, so a false one is harmless. The hashes are keyed by a random
//! salt, so which IDs collide cannot be chosen from outside.

use sha2::{Digest, Sha256};

/// Bits in the filter: 4 MiB.
const BITS: usize = 1 << 25;

/// Bits set per click ID.
const HASHES: u64 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillFilter {
    salt: [u8; 16],
    words: Vec<u64>,
}

impl Default for SpillFilter {
    fn default() -> Self {
        SpillFilter {
            salt: rand::random(),
            words: vec![0; BITS / 64],
        }
    }
}

impl SpillFilter {
    /// The positions of `cid`'s bits (double hashing over two halves of a salted SHA-256).
    fn positions(&self, cid: &[u8]) -> impl Iterator<Item = usize> {
        let digest = Sha256::new()
            .chain_update(self.salt)
            .chain_update(cid)
            .finalize();
        let half = |i: usize| u64::from_le_bytes(digest[i..i + 8].try_into().expect("8 bytes"));
        let (a, b) = (half(0), half(8) | 1);
        (0..HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % BITS as u64) as usize)
    }

    pub fn insert(&mut self, cid: &[u8]) {
        for p in self.positions(cid).collect::<Vec<_>>() {
            self.words[p / 64] |= 1 << (p % 64);
        }
    }

    /// Whether events of `cid` may have been spilled (always, when they were).
    pub fn may_hold(&self, cid: &[u8]) -> bool {
        self.positions(cid)
            .all(|p| self.words[p / 64] & (1 << (p % 64)) != 0)
    }

    /// The filter as bytes: the salt, then the bits.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + BITS / 8);
        out.extend_from_slice(&self.salt);
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// A filter from [`SpillFilter::to_bytes`]; `None` when `bytes` are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 16 + BITS / 8 {
            return None;
        }
        let (salt, bits) = bytes.split_at(16);
        Some(SpillFilter {
            salt: salt.try_into().ok()?,
            words: bits
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_it_was_given_and_rarely_anything_else() {
        let mut f = SpillFilter::default();
        for i in 0..100_000 {
            f.insert(format!("spilled-{i}").as_bytes());
        }
        assert!((0..100_000).all(|i| f.may_hold(format!("spilled-{i}").as_bytes())));
        let false_maybes = (0..100_000)
            .filter(|i| f.may_hold(format!("other-{i}").as_bytes()))
            .count();
        // About 1e-8 each at this fill.
        assert!(false_maybes <= 2, "{false_maybes}");
        let back = SpillFilter::from_bytes(&f.to_bytes()).unwrap();
        assert_eq!(back, f);
        assert!(SpillFilter::from_bytes(&f.to_bytes()[1..]).is_none());
        // Another salt: other positions.
        let (mut g, mut h) = (SpillFilter::default(), SpillFilter::default());
        g.insert(b"x");
        h.insert(b"x");
        assert_ne!(g.words, h.words);
    }
}
