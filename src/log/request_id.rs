//! Request ids: keep a valid incoming `x-request-id`, otherwise make a time-ordered one.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hasher},
    time::{SystemTime, UNIX_EPOCH},
};

use http::{HeaderName, HeaderValue, Request};

/// The `x-request-id` header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id, put in the request's extensions (and header) by
/// [`RequestLogLayer`](super::RequestLogLayer) before the inner service runs.
///
/// Handlers read it with `req.extensions().get::<RequestId>()` (or axum's `Extension`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// Accepts `value` if it is 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
    ///
    /// Anything else could smuggle line breaks, quotes or megabytes into logs.
    #[must_use]
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        is_valid(value.as_bytes()).then(|| Self(value.clone()))
    }

    /// A new time-ordered id: a UUIDv7 (RFC 9562), 48 bits of Unix milliseconds then 74
    /// random bits, so ids sort by creation time and index well.
    #[must_use]
    pub fn generate() -> Self {
        // One allocation, shared by the request's header, its extension and the response's
        // header (clones are reference-count increments).
        let v = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(uuid_v7()))
            .expect("hex digits and dashes");
        Self(v)
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ever built from validated ASCII.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    #[must_use]
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as an owned header value.
    #[must_use]
    pub fn into_header_value(self) -> HeaderValue {
        self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes the id of a request that arrived without a valid one.
///
/// Implemented for [`DefaultMakeRequestId`] (UUIDv7); implement it to use ids of your own. The
/// id you make is not validated: keep it to the characters [`RequestId::parse`] accepts.
pub trait MakeRequestId: Clone + Send + Sync + 'static {
    /// A fresh id for `req`.
    fn make_request_id<B>(&self, req: &Request<B>) -> RequestId;
}

/// Makes UUIDv7 ids ([`RequestId::generate`]).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DefaultMakeRequestId;

impl MakeRequestId for DefaultMakeRequestId {
    #[inline]
    fn make_request_id<B>(&self, _: &Request<B>) -> RequestId {
        RequestId::generate()
    }
}

/// Whether `v` is 1 to 128 bytes of `A-Z a-z 0-9 . _ : -`. Every request with an id is
/// checked, so each byte is tested without a branch and the loop is vectorized.
pub(crate) fn is_valid(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().fold(0u8, |bad, &b| bad | u8::from(!id_byte(b))) == 0
}

/// `A-Z a-z 0-9 . _ : -`, by ranges: letters (case folded), `0`..`:` (digits, then the
/// colon), `-` and `.` (adjacent), `_`.
#[inline(always)]
const fn id_byte(b: u8) -> bool {
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') <= 10)
        | (b.wrapping_sub(b'-') <= 1)
        | (b == b'_')
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut h = RandomState::new().build_hasher();
        h.write_u64(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
        h.finish() | 1
    });
}

/// xorshift64*: fast, per thread, seeded from the OS-randomised `RandomState`. Ids need to be
/// unique, not unpredictable.
fn next_random() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

fn uuid_v7() -> [u8; 36] {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        & 0xFFFF_FFFF_FFFF;
    let r1 = next_random();
    let r2 = next_random();
    let hi = (ms << 16) | 0x7000 | (r1 & 0x0FFF);
    let lo = (r2 & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    hyphenated((u128::from(hi) << 64) | u128::from(lo))
}

/// A UUID's 8-4-4-4-12 lowercase text. Each byte's two digits go to a fixed place, so the
/// loop unrolls without a branch or a bounds check.
fn hyphenated(value: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut buf = [b'-'; 36];
    for (byte, at) in value.to_be_bytes().into_iter().zip(AT) {
        buf[at] = HEX[usize::from(byte >> 4)];
        buf[at + 1] = HEX[usize::from(byte & 0xF)];
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(is_valid(b"abc-123_x.y:z"));
        assert!(is_valid(&[b'a'; 128]));
        assert!(!is_valid(&[b'a'; 129]));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"a b"));
        assert!(!is_valid(b"a\"b"));
        assert!(!is_valid("é".as_bytes()));
    }

    #[test]
    fn every_byte_is_classified_as_the_rule_says() {
        for b in 0..=u8::MAX {
            let allowed = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
            assert_eq!(id_byte(b), allowed, "byte {b:#04x}");
            // Wherever it stands in an id.
            let mut id = *b"abcdefghijklmnopqrstuvwxyz0123456789";
            for i in [0, 17, 35] {
                id[i] = b;
                assert_eq!(is_valid(&id), allowed, "byte {b:#04x} at {i}");
                id[i] = b'a';
            }
        }
    }

    #[test]
    fn uuids_are_written_8_4_4_4_12() {
        assert_eq!(
            &hyphenated(0x0190_163d_8694_739b_aea5_966c_26f8_ad91),
            b"0190163d-8694-739b-aea5-966c26f8ad91"
        );
        assert_eq!(&hyphenated(0), b"00000000-0000-0000-0000-000000000000");
        assert_eq!(
            &hyphenated(u128::MAX),
            b"ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
    }

    #[test]
    fn generated_ids_are_uuid_v7_unique_and_ordered() {
        let a = RequestId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        assert_eq!(&a.as_str()[14..15], "7", "version nibble");
        assert!(
            matches!(&a.as_str()[19..20], "8" | "9" | "a" | "b"),
            "variant bits"
        );
        assert!(a.as_str() < b.as_str(), "time-ordered across milliseconds");
        assert!(is_valid(a.as_str().as_bytes()));
    }
}
