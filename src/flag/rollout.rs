//! The roll-out bucket: a stable number from 1 to 100 for a (group, key) pair.
//!
//! The algorithm is fixed, because it decides who sees a feature: change it and users move in
//! and out of roll-outs. It is Unleash's "normalised value", so a roll-out moved between bulwark
//! and an Unleash SDK keeps its users:
//!
//! ```text
//! bucket(group, key) = murmur3_x86_32(utf8("{group}:{key}"), seed 0) % 100 + 1
//! ```
//!
//! A key is in a roll-out of `p` percent when `p > 0 && bucket <= p`. MurmurHash3 is Austin
//! Appleby's public-domain hash, written here from its description and checked against published
//! test vectors and the SMHasher verification value.

/// MurmurHash3, x86 32-bit variant, of `data` with `seed`.
///
/// ```
/// use bulwark::flag::murmur3_x86_32;
///
/// assert_eq!(murmur3_x86_32(b"", 0), 0);
/// assert_eq!(murmur3_x86_32(b"hello", 0), 0x248b_fa47);
/// ```
#[must_use]
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    let mut h = Murmur3::new(seed);
    h.write(data);
    h.finish()
}

/// The roll-out bucket of `key` in `group`, from 1 to 100 (see the [`flag`](crate::flag) module docs).
///
/// ```
/// use bulwark::flag::bucket;
///
/// // The values every Unleash SDK computes for these pairs.
/// assert_eq!(bucket("gr1", "123"), 73);
/// assert_eq!(bucket("groupX", "999"), 25);
/// ```
#[must_use]
pub fn bucket(group: &str, key: &str) -> u32 {
    let mut h = Murmur3::new(0);
    h.write(group.as_bytes());
    h.write(b":");
    h.write(key.as_bytes());
    h.finish() % 100 + 1
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Streaming MurmurHash3 x86 32-bit, so the bucket is computed over `group`, `:` and `key`
/// without building the joined string.
struct Murmur3 {
    h: u32,
    /// Bytes of the current, unfinished 4-byte block, little-endian.
    tail: u32,
    tail_len: u32,
    len: u32,
}

impl Murmur3 {
    fn new(seed: u32) -> Self {
        Self {
            h: seed,
            tail: 0,
            tail_len: 0,
            len: 0,
        }
    }

    #[inline]
    fn mix_k(k: u32) -> u32 {
        k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
    }

    #[inline]
    fn block(&mut self, k: u32) {
        self.h ^= Self::mix_k(k);
        self.h = self
            .h
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }

    fn write(&mut self, mut data: &[u8]) {
        // The length is mixed in modulo 2^32, as the reference implementation does.
        self.len = self.len.wrapping_add(data.len() as u32);
        // Complete a block left unfinished by the previous part.
        while self.tail_len > 0 && !data.is_empty() {
            self.tail |= u32::from(data[0]) << (8 * self.tail_len);
            self.tail_len += 1;
            data = &data[1..];
            if self.tail_len == 4 {
                let k = self.tail;
                self.block(k);
                self.tail = 0;
                self.tail_len = 0;
            }
        }
        if self.tail_len > 0 {
            // `data` ran out before the block was complete.
            return;
        }
        let mut chunks = data.chunks_exact(4);
        for chunk in &mut chunks {
            self.block(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        }
        for (i, &b) in chunks.remainder().iter().enumerate() {
            self.tail |= u32::from(b) << (8 * i);
        }
        self.tail_len = chunks.remainder().len() as u32;
    }

    fn finish(mut self) -> u32 {
        if self.tail_len > 0 {
            self.h ^= Self::mix_k(self.tail);
        }
        let mut h = self.h ^ self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published MurmurHash3_x86_32 vectors (the Go `spaolacci/murmur3` test table and the
    /// reference implementation's outputs), checked independently before being pinned here.
    #[test]
    fn published_vectors() {
        let cases: &[(&str, u32, u32)] = &[
            ("", 0, 0),
            ("", 1, 0x514e_28b7),
            ("", 0x2a, 0x087f_cd5c),
            ("hello", 0, 0x248b_fa47),
            ("hello", 1, 0xbb4a_bcad),
            ("hello", 0x2a, 0xe2db_d2e1),
            ("hello, world", 0, 0x149b_bb7f),
            ("19 Jan 2038 at 3:14:07 AM", 0, 0xe31e_8a70),
            (
                "The quick brown fox jumps over the lazy dog",
                0,
                0x2e4f_f723,
            ),
            (
                "The quick brown fox jumps over the lazy dog.",
                0,
                0xd5c4_8bfc,
            ),
        ];
        for &(input, seed, expected) in cases {
            assert_eq!(
                murmur3_x86_32(input.as_bytes(), seed),
                expected,
                "{input:?} seed {seed}"
            );
        }
    }

    /// SMHasher's `VerificationTest`: hash keys {}, {0}, {0,1}, ... {0..254} with seed
    /// `256 - len`, then hash the 256 little-endian results with seed 0. MurmurHash3_x86_32's
    /// published verification value is 0xB0F57EE3.
    #[test]
    fn smhasher_verification_value() {
        let key: Vec<u8> = (0..=255).collect();
        let mut hashes = Vec::with_capacity(1024);
        for len in 0..256 {
            hashes.extend_from_slice(&murmur3_x86_32(&key[..len], 256 - len as u32).to_le_bytes());
        }
        assert_eq!(murmur3_x86_32(&hashes, 0), 0xb0f5_7ee3);
    }

    #[test]
    fn streaming_matches_one_shot_at_every_split() {
        let text = b"new-checkout:user-1234567";
        for split in 0..=text.len() {
            for split2 in split..=text.len() {
                let mut h = Murmur3::new(7);
                h.write(&text[..split]);
                h.write(&text[split..split2]);
                h.write(&text[split2..]);
                assert_eq!(h.finish(), murmur3_x86_32(text, 7), "{split}/{split2}");
            }
        }
    }

    #[test]
    fn unleash_normalised_values() {
        // unleash-client-node's "normalized values are the same across node, java, and go
        // clients" test.
        assert_eq!(bucket("gr1", "123"), 73);
        assert_eq!(bucket("groupX", "999"), 25);
    }
}
