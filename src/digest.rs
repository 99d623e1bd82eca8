//! Digests that stand for secrets and identities: in store key names, stored requests and logs.
//!
//! Every digest here is stable across processes and releases, because instances that share a
//! store must agree on it. Two algorithms are used, each where a wire format already depends on
//! it: SHA-256 for idempotency fingerprints and store keys and for the cache's credential
//! variants, and SHA-1 for the hashed part of a Redis rate-limit key name (its input is a
//! client's key; SHA-1's known weakness, chosen collisions, gives a client nothing there but a
//! shared bucket with itself). Changing either would split a fleet's shared state during a
//! rolling upgrade.
//!
//! [`Digester`] feeds every variable-length input with its length first, so two different
//! inputs never make the same byte stream (`"ab" + "c"` and `"a" + "bc"` differ).

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A SHA-256 over length-prefixed fields, opened with a domain string that keeps the digests of
/// different uses apart.
#[derive(Clone)]
pub(crate) struct Digester(Sha256);

impl Digester {
    /// A digest for the use named by `domain` (fed as it is, without a length).
    pub(crate) fn new(domain: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(domain);
        Self(h)
    }

    /// One field: its length (8 bytes, big-endian), then its bytes.
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }

    /// A field that may be absent: `0`, or `1` and the field.
    pub(crate) fn optional(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.0.update([0]),
            Some(bytes) => {
                self.0.update([1]);
                self.field(bytes);
            }
        }
    }

    /// A count of the fields that follow (8 bytes, big-endian).
    pub(crate) fn count(&mut self, n: usize) {
        self.0.update((n as u64).to_be_bytes());
    }

    /// The digest.
    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The first 12 hex digits of the SHA-256 of `bytes`: what logs show for a secret.
pub(crate) fn short_digest(bytes: &[u8]) -> String {
    Hex(&sha256(bytes)[..6]).to_string()
}

/// The SHA-1 of `bytes` as 40 lowercase hex digits.
#[cfg(feature = "redis")]
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()
}

/// Lowercase hex of a byte slice.
#[derive(Clone, Copy)]
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: these digests name keys in shared stores, so they may never change.
    #[test]
    fn digests_are_stable() {
        assert_eq!(
            Hex(&sha256(b"abc")).to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short_digest(b"abc"), "ba7816bf8f01");
        #[cfg(feature = "redis")]
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut d = Digester::new(b"d");
        d.field(b"x");
        let mut manual = b"d".to_vec();
        manual.extend_from_slice(&1u64.to_be_bytes());
        manual.push(b'x');
        assert_eq!(d.finish(), sha256(&manual));
    }

    #[test]
    fn fields_are_length_prefixed() {
        let two = |a: &[u8], b: &[u8]| {
            let mut d = Digester::new(b"t");
            d.field(a);
            d.field(b);
            d.finish()
        };
        assert_ne!(two(b"ab", b"c"), two(b"a", b"bc"));
        let opt = |o: Option<&[u8]>| {
            let mut d = Digester::new(b"t");
            d.optional(o);
            d.finish()
        };
        assert_ne!(opt(None), opt(Some(b"")));
    }
}
