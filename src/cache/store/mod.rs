//! Where the cache keeps its entries: the [`Store`] trait, the [`Entry`] it holds, and
//! [`CacheStore`], the cheap handle a [`CacheLayer`](super::CacheLayer) is built with.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use crate::StoreError;

mod codec;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;

use super::entry::Stored;

/// A boxed, sendable future, as [`Store`] methods return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One stored value: a response (with its body and freshness information) or the `Vary` index of
/// a URL. Opaque and cheap to clone; a store moves it around as it is, or as bytes
/// ([`Entry::to_bytes`] / [`Entry::from_bytes`]) if it keeps entries outside the process.
#[derive(Clone)]
pub struct Entry(pub(crate) Arc<EntryKind>);

// Entries live behind an `Arc`; boxing the response would add an allocation per stored entry
// for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum EntryKind {
    /// The header names a URL's responses vary on; variants are stored under keys derived from
    /// the base key, this index's `id` and the request's values of those headers.
    Index {
        id: u64,
        vary: Vec<http::HeaderName>,
        /// As long as the longest-kept variant stored under it.
        keep_for: Duration,
    },
    /// A stored response.
    Response(Stored),
}

impl Entry {
    pub(crate) fn index(id: u64, vary: Vec<http::HeaderName>, keep_for: Duration) -> Self {
        Self(Arc::new(EntryKind::Index { id, vary, keep_for }))
    }

    pub(crate) fn response(stored: Stored) -> Self {
        Self(Arc::new(EntryKind::Response(stored)))
    }

    pub(crate) fn as_response(&self) -> Option<&Stored> {
        match &*self.0 {
            EntryKind::Response(s) => Some(s),
            EntryKind::Index { .. } => None,
        }
    }

    /// About how many bytes the entry takes in memory: body, headers, and bookkeeping. The memory
    /// store weighs entries with it.
    #[must_use]
    pub fn weight(&self) -> usize {
        match &*self.0 {
            EntryKind::Index { vary, .. } => {
                64 + vary.iter().map(|n| n.as_str().len() + 16).sum::<usize>()
            }
            EntryKind::Response(s) => s.weight(),
        }
    }

    /// How long a store should keep the entry, from now. Entries are also checked against the
    /// cache's own clock when read, so a store that keeps them longer is still correct.
    #[must_use]
    pub fn time_to_keep(&self) -> Duration {
        match &*self.0 {
            EntryKind::Index { keep_for, .. } => *keep_for,
            EntryKind::Response(s) => s.time_to_keep(),
        }
    }

    /// The entry as bytes, for stores that keep entries outside the process.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// An entry from bytes made by [`Entry::to_bytes`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Malformed`] if the bytes are not an entry of this version of bulwark.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        codec::decode(bytes)
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            EntryKind::Index { id, vary, keep_for } => f
                .debug_struct("Entry::Index")
                .field("id", id)
                .field("vary", vary)
                .field("keep_for", keep_for)
                .finish(),
            EntryKind::Response(s) => f
                .debug_struct("Entry::Response")
                .field("status", &s.response.status)
                .field("body_len", &s.response.body.len())
                .finish_non_exhaustive(),
        }
    }
}

/// A place to keep cache entries. Implemented by [`MemoryStore`] and (feature `redis`)
/// [`RedisStore`]; implement it to keep entries elsewhere.
///
/// Keys are strings made by the layer (see the [module docs](super#keys)). A failing call returns
/// a [`StoreError`]; the layer then bypasses the cache for that request (the answer is still
/// served) and logs and counts the failure.
pub trait Store: Send + Sync + 'static {
    /// The entry under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>>;
    /// The entry under `key` if the store can find it at once, without waiting (an in-process
    /// store): the layer tries this first and serves a fresh entry found here without boxing a
    /// future. `None` (the default) sends the request down the asynchronous path, which calls
    /// [`get`](Store::get); a store that waits on I/O keeps the default.
    fn get_now(&self, key: &str) -> Option<Entry> {
        let _ = key;
        None
    }
    /// Stores `entry` under `key` for [`Entry::time_to_keep`], replacing any earlier entry.
    fn put<'a>(&'a self, key: &'a str, entry: Entry) -> StoreFuture<'a, ()>;
    /// Removes the entry under `key`.
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
    /// Removes every entry whose key starts with `prefix`; returns how many (if known).
    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64>;
    /// A short name for logs and metric labels: `memory`, `redis`.
    fn name(&self) -> &'static str;
}

/// The store a [`CacheLayer`](super::CacheLayer) keeps its entries in. Cheap to clone; clones share
/// the entries.
#[derive(Clone)]
pub struct CacheStore {
    pub(crate) inner: Arc<dyn Store>,
}

impl CacheStore {
    /// An in-process store holding at most `max_bytes` bytes of entries (bodies, headers and
    /// bookkeeping, weighed by [`Entry::weight`]); the least useful entries are evicted first.
    #[must_use]
    pub fn memory(max_bytes: u64) -> Self {
        Self::custom(MemoryStore::new(max_bytes))
    }

    /// Entries shared by every instance connected to the same Redis, under the handle's key
    /// prefix followed by `cache:`. Redis failures make the layer bypass the cache.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn redis(redis: crate::redis::Redis) -> Self {
        Self::custom(RedisStore::new(redis))
    }

    /// Your own [`Store`].
    #[must_use]
    pub fn custom(store: impl Store) -> Self {
        Self {
            inner: Arc::new(store),
        }
    }

    /// The store's name: `memory`, `redis`, or a custom store's.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.inner.name()
    }
}

impl fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheStore")
            .field("store", &self.inner.name())
            .finish()
    }
}
