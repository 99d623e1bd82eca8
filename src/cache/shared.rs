//! The state every clone of a cache layer shares: settings, store, key hook, counters; and
//! the store I/O on it (lookups through `Vary` indexes, writes, invalidation, reporting).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use http::{HeaderMap, HeaderName, HeaderValue, request};

use super::{
    clock::{Clock, system_nanos},
    coalesce::Flights,
    entry::{LastValue, Stored},
    policy::CacheSettings,
    status::{CACHE_STATUS, CacheOutcome, CacheStatus},
    store::{CacheStore, Entry, EntryKind},
    vary::vary_key,
};
use crate::{StoreError, redact::Redactor};

/// Makes the base key of a request; `None` bypasses the cache. `None` here: [`default_key`].
pub(crate) type KeyFn = Option<Arc<dyn Fn(&request::Parts) -> Option<String> + Send + Sync>>;

/// The default key: `GET <authority><path>?<query>`, the authority from the URI or the `Host`
/// header. `HEAD` requests use the same key (they are answered from the stored `GET`).
pub(crate) fn default_key(parts: &request::Parts) -> Option<String> {
    let (authority, pq) = crate::key::request_target(parts);
    let mut key = String::with_capacity(4 + authority.len() + pq.len());
    key.push_str("GET ");
    key.push_str(authority);
    key.push_str(pq);
    Some(key)
}

/// [`default_key`] written into `buf` when it fits, without allocating.
pub(super) fn default_key_in<'b>(
    parts: &request::Parts,
    buf: &'b mut [u8; KEY_BUF],
) -> Option<&'b str> {
    let (authority, pq) = crate::key::request_target(parts);
    let len = 4 + authority.len() + pq.len();
    let out = buf.get_mut(..len)?;
    let (get, rest) = out.split_at_mut(4);
    get.copy_from_slice(b"GET ");
    let (a, p) = rest.split_at_mut(authority.len());
    a.copy_from_slice(authority.as_bytes());
    p.copy_from_slice(pq.as_bytes());
    // Made of three `str`s: always UTF-8.
    std::str::from_utf8(out).ok()
}

/// The longest default key the hit path makes on the stack.
pub(super) const KEY_BUF: usize = 256;

/// State shared by every clone of a layer and every service it made.
pub(crate) struct Shared {
    pub(crate) cfg: CacheSettings,
    pub(crate) store: CacheStore,
    pub(crate) key: KeyFn,
    pub(crate) clock: Clock,
    /// The inner calls in flight, for coalescing.
    pub(super) flights: Arc<Flights>,
    next_index: AtomicU64,
    /// The cache's counters, their keys built once.
    metrics: super::metrics::CacheMetrics,
    /// The cache's name (`Cache-Status`, logs, metric label).
    label: Arc<str>,
    /// The last `Cache-Status` member written without a previous value, and its value: most
    /// answers of a route repeat one status (a bypass, a miss with the same status code), so
    /// they clone it instead of formatting it again.
    last_status: LastValue<CacheStatus, Option<HeaderValue>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.cfg.name)
            .field("mode", &self.cfg.mode)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(cfg: CacheSettings, store: CacheStore, key: KeyFn) -> Self {
        // Index ids only need to differ between successive indexes of one URL, also across
        // instances sharing a store: start from the wall clock.
        let seed = system_nanos();
        let label: Arc<str> = Arc::from(cfg.name.to_str().unwrap_or("bulwark"));
        let outcomes = CacheOutcome::ALL.map(CacheOutcome::as_str);
        Self {
            metrics: super::metrics::CacheMetrics::new(&label, &outcomes),
            label,
            cfg,
            store,
            key,
            clock: Clock::new(),
            flights: Arc::new(Flights::new()),
            next_index: AtomicU64::new(seed),
            last_status: LastValue::default(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.label
    }

    /// The request's base key; `None` bypasses the cache.
    pub(crate) fn make_key(&self, parts: &request::Parts) -> Option<String> {
        match &self.key {
            Some(key) => key(parts),
            None => default_key(parts),
        }
    }

    pub(super) async fn lookup(
        &self,
        base: &str,
        headers: &HeaderMap,
    ) -> Result<Lookup, StoreError> {
        let Some(entry) = self.store.inner.get(base).await? else {
            return Ok(Lookup::Miss {
                key: base.to_owned(),
                index: None,
            });
        };
        match &*entry.0 {
            EntryKind::Response(_) => Ok(Lookup::Found {
                key: base.to_owned(),
                entry,
                index: None,
            }),
            EntryKind::Index { id, vary, keep_for } => {
                let key = variant_key(base, *id, &vary_key(vary, headers));
                let index = Some((*id, vary.clone(), *keep_for));
                match self.store.inner.get(&key).await? {
                    Some(v) if v.as_response().is_some() => Ok(Lookup::Found {
                        key,
                        entry: v,
                        index,
                    }),
                    _ => Ok(Lookup::Miss { key, index }),
                }
            }
        }
    }

    /// Stores `stored` for `base`, with a `Vary` index when it varies. Returns the entry, and
    /// whether the store took it.
    pub(super) async fn put(
        &self,
        base: &str,
        index: Option<&IndexInfo>,
        stored: Stored,
    ) -> (Entry, bool) {
        let entry;
        let result = if stored.vary.is_empty() {
            entry = Entry::response(stored);
            self.store.inner.put(base, entry.clone()).await
        } else {
            let (id, keep) = match index {
                // The same index: written again, to be kept at least as long as this variant.
                // Retentions are durations from their own write, so the index read says nothing
                // about how long it has left: not writing it when its retention was the longer
                // one let it expire before variants stored later, which became unreachable.
                Some((id, names, keep)) if *names == stored.vary => {
                    (*id, (*keep).max(stored.keep_for))
                }
                // No index, or one for other headers: a new one (old variants become unreachable).
                _ => (
                    self.next_index.fetch_add(1, Ordering::Relaxed),
                    stored.keep_for,
                ),
            };
            let index = Entry::index(id, stored.vary.clone(), keep);
            let id = self.store.inner.put(base, index).await.map(|()| id);
            let key = id
                .as_ref()
                .ok()
                .map(|id| variant_key(base, *id, &stored.vary_key));
            entry = Entry::response(stored);
            match (id, key) {
                (Ok(_), Some(key)) => self.store.inner.put(&key, entry.clone()).await,
                (Err(e), _) => Err(e),
                (Ok(_), None) => Ok(()),
            }
        };
        match result {
            Ok(()) => {
                self.metrics.stored();
                (entry, true)
            }
            Err(e) => {
                self.store_failed(&e);
                (entry, false)
            }
        }
    }

    pub(super) fn store_failed(&self, e: &StoreError) {
        tracing::warn!(
            target: "bulwark::cache",
            cache = self.name(),
            store = self.store.name(),
            operation = e.operation(),
            error = %e,
            "cache store failed; bypassing the cache"
        );
    }

    /// Removes the stored answers for the keys (an unsafe request succeeded, or a purge).
    pub(crate) async fn invalidate(&self, keys: &[String]) {
        for key in keys {
            if let Err(e) = self.store.inner.remove(key).await {
                self.store_failed(&e);
            }
        }
    }

    /// Writes `status` onto `headers` and the extensions, and reports it (metric and event),
    /// unless this is a background refresh (see [`QUIET`]).
    pub(super) fn report(&self, status: CacheStatus, headers: &mut HeaderMap, key: Option<&str>) {
        if headers.contains_key(&CACHE_STATUS) {
            // The answer's own member comes first: nothing to reuse.
            status.write(self.name(), headers);
        } else if let Some(value) = self.status_value(status) {
            headers.insert(CACHE_STATUS.clone(), value);
        }
        if !QUIET.try_with(|quiet| *quiet).unwrap_or(false) {
            self.count(status, key);
        }
    }

    /// `status`'s member as a whole `Cache-Status` value: the last one made if it was for the
    /// same status (a reference-count increment), else made and kept for the next answer.
    fn status_value(&self, status: CacheStatus) -> Option<HeaderValue> {
        self.last_status.get_or_make(
            |last| *last == status,
            || (status, status.value(self.name(), None)),
        )
    }

    /// Reports `status` (metric and event) without writing it.
    pub(super) fn count(&self, status: CacheStatus, key: Option<&str>) {
        self.metrics.request(status.outcome as usize);
        tracing::debug!(
            target: "bulwark::cache",
            cache = self.name(),
            outcome = status.outcome.as_str(),
            stored = status.stored,
            key = key.map(Redactor::key).as_deref(),
            "cache decision"
        );
    }
}

tokio::task_local! {
    /// Set on a stale-while-revalidate refresh's task: the client's request was counted when
    /// the stale answer was served, and the refresh answers nobody, so storing its answer
    /// reports no second request. Read only by [`Shared::report`], never on a plain hit.
    pub(super) static QUIET: bool;
}

pub(super) fn variant_key(base: &str, id: u64, vary_key: &str) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(base.len() + 20 + vary_key.len());
    key.push_str(base);
    let _ = write!(key, "\u{0}{id:x}\u{0}");
    key.push_str(vary_key);
    key
}

/// A `Vary` index as read: its id, header names and retention.
pub(super) type IndexInfo = (u64, Vec<HeaderName>, std::time::Duration);

pub(super) enum Lookup {
    Found {
        key: String,
        entry: Entry,
        index: Option<IndexInfo>,
    },
    Miss {
        key: String,
        index: Option<IndexInfo>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&'static str>) -> request::Parts {
        let mut req = http::Request::get(uri).body(()).unwrap();
        if let Some(h) = host {
            req.headers_mut()
                .insert(http::header::HOST, HeaderValue::from_static(h));
        }
        req.into_parts().0
    }

    #[test]
    fn the_default_key_is_method_authority_and_target() {
        assert_eq!(
            default_key(&parts("/a?b=c", Some("shop.test"))).unwrap(),
            "GET shop.test/a?b=c"
        );
        assert_eq!(
            default_key(&parts("http://api.test/x", None)).unwrap(),
            "GET api.test/x"
        );
    }

    #[test]
    fn the_stack_key_is_the_same_key_or_none_when_too_long() {
        let mut buf = [0u8; KEY_BUF];
        let p = parts("/a?b=c", Some("shop.test"));
        assert_eq!(
            default_key_in(&p, &mut buf),
            default_key(&p).as_deref(),
            "one key, wherever it is made"
        );
        let long = format!("/{}", "x".repeat(KEY_BUF));
        let p = parts(&long, Some("shop.test"));
        let mut buf = [0u8; KEY_BUF];
        assert_eq!(default_key_in(&p, &mut buf), None);
        assert!(default_key(&p).is_some(), "made on the heap instead");
    }

    #[test]
    fn variant_keys_of_one_url_differ_by_index_and_values() {
        let a = variant_key("GET h/x", 1, "\u{1}en");
        assert_ne!(a, variant_key("GET h/x", 2, "\u{1}en"), "a new index");
        assert_ne!(a, variant_key("GET h/x", 1, "\u{1}de"), "another variant");
        assert!(a.starts_with("GET h/x\u{0}"));
    }
}
