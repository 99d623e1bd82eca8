//! Where claims and completed responses live: the [`Store`] trait, the [`MemoryStore`], the
//! `RedisStore` (feature `redis`), and [`IdempotencyStore`], the store the layer uses by default.
//!
//! A store keeps one entry per [`StoreKey`] (the hash of the scope and the idempotency key):
//!
//! - **leased**: a request claimed the key and is running. The entry carries the request's
//!   [`Fingerprint`] and the claim's [`LeaseToken`], and expires when the lease ends (default
//!   60 s), so a crashed worker blocks the key only that long;
//! - **completed**: the first response was stored; the entry lives for the retention period
//!   (default 24 h);
//! - **completed, too large to replay**: the request ran, its response was not kept.
//!
//! Completing and releasing are compare-and-set on the lease token: a response that arrives after
//! its lease ended is never stored over a newer claim, and a lease is never released by another
//! owner.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::{
    collections::hash_map::RandomState,
    fmt,
    future::Future,
    hash::{BuildHasher, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;

pub use self::memory::{DEFAULT_MEMORY_BYTES, MemoryStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
use super::{Fingerprint, StoreKey};
use crate::{
    StoreError,
    codec::{DecodeError, Put, Reader},
};

/// The owner of a claim: a random 128-bit token, checked by [`Store::complete`] and
/// [`Store::release`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken([u8; 16]);

impl LeaseToken {
    /// A new token, unique across processes (random seed per process, counter per token).
    #[must_use]
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static SEED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
        let (a, b) = *SEED.get_or_init(|| {
            let s = RandomState::new();
            (s.hash_one(0x5eed_u64), s.hash_one(0xb01d_u64))
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        let mut out = [0; 16];
        out[..8].copy_from_slice(&(a ^ n).to_be_bytes());
        out[8..].copy_from_slice(&(b ^ h.finish()).to_be_bytes());
        Self(out)
    }

    /// A token from its bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The token's bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseToken(..)")
    }
}

pub use crate::stored::StoredResponse;

const MAGIC: &[u8; 4] = b"BWI1";

/// The idempotency record's byte form of a kept response: `BWI1`, the status, the headers
/// (a `u32` count of length-prefixed names and values), then the body to the end.
impl StoredResponse {
    /// The response in a compact binary form (what the Redis store keeps).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.weight());
        out.extend_from_slice(MAGIC);
        out.put_u16(self.status.as_u16());
        out.put_headers(&self.headers);
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads what [`encode`](Self::encode) wrote.
    ///
    /// # Errors
    ///
    /// [`StoreError::Malformed`] if `bytes` is not such a response.
    pub fn decode(bytes: &Bytes) -> Result<Self, StoreError> {
        let malformed = |detail: &str| StoreError::Malformed {
            operation: "claim",
            detail: detail.to_owned(),
        };
        let mut r = Reader::new(bytes);
        if r.take(4) != Ok(&MAGIC[..]) {
            return Err(malformed("unknown response format"));
        }
        let status = r
            .u16()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| malformed("bad status"))?;
        let headers = r.headers().map_err(|e| {
            malformed(match e {
                DecodeError::HeaderName => "bad header name",
                DecodeError::HeaderValue => "bad header value",
                _ => "truncated",
            })
        })?;
        let body = bytes.slice(bytes.len() - r.remaining()..);
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

/// What [`Store::claim`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Claim {
    /// The key was free (never used, expired, or released): the caller owns it now.
    Acquired(LeaseToken),
    /// Another request holds the key.
    InFlight {
        /// That request's fingerprint.
        fingerprint: Fingerprint,
        /// Time left on its lease.
        lease_left: Duration,
    },
    /// The key's request completed and its response is stored.
    Completed {
        /// That request's fingerprint.
        fingerprint: Fingerprint,
        /// Its response.
        response: Arc<StoredResponse>,
    },
    /// The key's request completed, but its response was too large to keep.
    NotReplayable {
        /// That request's fingerprint.
        fingerprint: Fingerprint,
    },
}

/// What a claim's owner records when its request completed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Completion {
    /// The response, to be replayed.
    Response(Arc<StoredResponse>),
    /// The request ran but its response was too large to keep.
    TooLarge,
}

/// A place for claims and completed responses. See the [module docs](self).
///
/// Implemented by [`MemoryStore`], `RedisStore` and [`IdempotencyStore`]; implement it to keep
/// keys elsewhere. Every operation must be atomic for one key.
pub trait Store: Clone + Send + Sync + 'static {
    /// A short name for logs and metric labels, e.g. `"memory"`.
    fn name(&self) -> &'static str;

    /// Claims `key` for a request with `fingerprint` for `lease`, unless the key is leased or
    /// completed, in which case the entry is described.
    fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Records the completion of the request that holds the lease `token`, kept for
    /// `retention`. `Ok(false)` when `token` no longer holds the key (the lease ended, maybe
    /// another request claimed it): nothing is written.
    fn complete(
        &self,
        key: StoreKey,
        token: LeaseToken,
        completion: Completion,
        retention: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Frees `key` if `token` still holds it, so the next request with the key runs.
    /// `Ok(false)` when it did not.
    fn release(
        &self,
        key: StoreKey,
        token: LeaseToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// [`release`](Self::release) from a destructor: without waiting for the answer (the memory
    /// store frees at once, the Redis store spawns the call on the current tokio runtime).
    fn release_detached(&self, key: StoreKey, token: LeaseToken);
}

/// The store of an [`IdempotencyLayer`](super::IdempotencyLayer): in memory, or in Redis
/// (feature `redis`). Cheap to clone; clones share the entries.
///
/// ```
/// use bulwark::idempotency::IdempotencyStore;
///
/// let store = IdempotencyStore::memory();
/// let bigger = IdempotencyStore::memory_with_capacity(256 * 1024 * 1024);
/// # let _ = (store, bigger);
/// ```
#[derive(Clone, Debug)]
pub struct IdempotencyStore(Backend);

#[derive(Clone, Debug)]
enum Backend {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(RedisStore),
}

impl IdempotencyStore {
    /// An in-memory store of up to 64 MiB of claims and responses.
    #[must_use]
    pub fn memory() -> Self {
        Self(Backend::Memory(MemoryStore::new()))
    }

    /// An in-memory store of up to `max_bytes` of claims and responses.
    #[must_use]
    pub fn memory_with_capacity(max_bytes: u64) -> Self {
        Self(Backend::Memory(MemoryStore::with_capacity(max_bytes)))
    }

    /// A store in Redis, shared by every instance that uses the same server and key prefix.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn redis(redis: crate::redis::Redis) -> Self {
        Self(Backend::Redis(RedisStore::new(redis)))
    }
}

impl From<MemoryStore> for IdempotencyStore {
    fn from(store: MemoryStore) -> Self {
        Self(Backend::Memory(store))
    }
}

#[cfg(feature = "redis")]
impl From<RedisStore> for IdempotencyStore {
    fn from(store: RedisStore) -> Self {
        Self(Backend::Redis(store))
    }
}

impl Store for IdempotencyStore {
    fn name(&self) -> &'static str {
        match &self.0 {
            Backend::Memory(s) => s.name(),
            #[cfg(feature = "redis")]
            Backend::Redis(s) => s.name(),
        }
    }

    async fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        match &self.0 {
            Backend::Memory(s) => s.claim(key, fingerprint, lease).await,
            #[cfg(feature = "redis")]
            Backend::Redis(s) => s.claim(key, fingerprint, lease).await,
        }
    }

    async fn complete(
        &self,
        key: StoreKey,
        token: LeaseToken,
        completion: Completion,
        retention: Duration,
    ) -> Result<bool, StoreError> {
        match &self.0 {
            Backend::Memory(s) => s.complete(key, token, completion, retention).await,
            #[cfg(feature = "redis")]
            Backend::Redis(s) => s.complete(key, token, completion, retention).await,
        }
    }

    async fn release(&self, key: StoreKey, token: LeaseToken) -> Result<bool, StoreError> {
        match &self.0 {
            Backend::Memory(s) => s.release(key, token).await,
            #[cfg(feature = "redis")]
            Backend::Redis(s) => s.release(key, token).await,
        }
    }

    fn release_detached(&self, key: StoreKey, token: LeaseToken) {
        match &self.0 {
            Backend::Memory(s) => s.release_detached(key, token),
            #[cfg(feature = "redis")]
            Backend::Redis(s) => s.release_detached(key, token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn responses_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert("location", HeaderValue::from_static("/payments/1"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        let res = StoredResponse {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from_static(b"{\"id\":1}"),
        };
        let back = StoredResponse::decode(&Bytes::from(res.encode())).unwrap();
        assert_eq!(back, res);
        assert!(StoredResponse::decode(&Bytes::from_static(b"BWI1\x00")).is_err());
        assert!(StoredResponse::decode(&Bytes::from_static(b"nope")).is_err());
        let mut truncated = res.encode();
        truncated.truncate(12);
        assert!(StoredResponse::decode(&Bytes::from(truncated)).is_err());
    }

    /// What bulwark at commit 5d833a1 wrote for `responses_round_trip`'s response, before the
    /// byte codec was shared: both sides of that change read each other's records.
    const WRITTEN_BY_5D833A1: &str = concat!(
        "4257493100c900000003000000086c6f636174696f6e0000000b2f7061796d656e74732f310000000a736574",
        "2d636f6f6b696500000003613d310000000a7365742d636f6f6b696500000003623d327b226964223a317d",
    );

    #[test]
    fn records_written_before_the_shared_codec_read_back_and_write_the_same_bytes() {
        let old: Vec<u8> = (0..WRITTEN_BY_5D833A1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&WRITTEN_BY_5D833A1[i..i + 2], 16).unwrap())
            .collect();
        let res = StoredResponse::decode(&Bytes::from(old.clone())).unwrap();
        assert_eq!(res.status, StatusCode::CREATED);
        assert_eq!(res.headers["location"], "/payments/1");
        assert_eq!(res.headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(res.body, "{\"id\":1}");
        assert_eq!(res.encode(), old);
    }

    #[test]
    fn tokens_differ() {
        let a = LeaseToken::generate();
        let b = LeaseToken::generate();
        assert_ne!(a, b);
    }
}
