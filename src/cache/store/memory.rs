use std::{fmt, sync::Arc, time::Duration};

use moka::{notification::RemovalCause, sync::Cache};

use super::{Entry, Store, StoreFuture};

/// The in-process cache store: a [moka](https://docs.rs/moka) cache bounded by bytes (each entry
/// weighed by [`Entry::weight`] plus its key), each entry expiring after its own
/// [`Entry::time_to_keep`]. Cheap to clone; clones share the entries.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<Arc<str>, Entry>,
}

struct PerEntry;

impl moka::Expiry<Arc<str>, Entry> for PerEntry {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        value: &Entry,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.time_to_keep())
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        value: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.time_to_keep())
    }
}

impl MemoryStore {
    /// A store that holds at most `max_bytes` bytes of entries.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Arc<str>, value: &Entry| {
                u32::try_from(key.len() + value.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntry)
            .eviction_listener(|key, _, cause| {
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                tracing::trace!(
                    target: "bulwark::cache",
                    key = &*crate::redact::Redactor::key(&key),
                    cause,
                    "cache entry evicted"
                );
                crate::cache::metrics::cache_evicted("memory", cause);
            })
            .build();
        Self { cache }
    }

    /// The bytes held now (after running pending maintenance, so it is exact).
    #[must_use]
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// The number of entries held now (after running pending maintenance).
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.cache.policy().max_capacity())
            .finish_non_exhaustive()
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>> {
        let found = self.cache.get(key);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn get_now(&self, key: &str) -> Option<Entry> {
        self.cache.get(key)
    }

    fn put<'a>(&'a self, key: &'a str, entry: Entry) -> StoreFuture<'a, ()> {
        self.cache.insert(Arc::from(key), entry);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.cache.invalidate(key);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        let mut n = 0;
        // A full scan: purges are rare administrative operations, and moka's own
        // `invalidate_entries_if` would need a predicate registry on every read.
        let keys: Vec<Arc<str>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| Arc::clone(&*k))
            .collect();
        for k in keys {
            self.cache.invalidate(&k);
            n += 1;
        }
        Box::pin(std::future::ready(Ok(n)))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
