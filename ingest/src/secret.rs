//! Secrets the service compares requests against: the postback token, the API key, the
//! networks' IPN secrets.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A configured secret (postback token, API key), kept as its SHA-256: comparing fixed-size
/// digests in constant time leaks neither the secret nor its length.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn new(secret: &str) -> Self {
        Secret(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn matches(&self, given: Option<&str>) -> bool {
        let Some(given) = given else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}
