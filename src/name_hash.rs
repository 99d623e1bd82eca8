//! A fast hasher for tables keyed by names the application chose (flag names, route
//! templates), looked up on every request.

use std::hash::{BuildHasher, Hasher};

/// FNV-1a. Lookups hash the name on every request, and SipHash (std's default) cost more than
/// the rest of a simple flag evaluation. FNV-1a gives no protection against chosen
/// collisions, so it is only for tables whose keys a client cannot choose: their entries come
/// from configuration (or are bounded and come from the application's router), so a client
/// can at worst look up a name that is absent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NameHash;

impl BuildHasher for NameHash {
    type Hasher = Fnv1a;

    fn build_hasher(&self) -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

/// The FNV-1a state.
pub(crate) struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        let hash = |b: &[u8]| {
            let mut h = NameHash.build_hasher();
            h.write(b);
            h.finish()
        };
        // The FNV-1a 64-bit test vectors.
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
