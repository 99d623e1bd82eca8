//! The stored entry: a response with everything needed to serve it later, and the small
//! memos that let repeated hits reuse what the last one made.

use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, Uri};
use http_cache_semantics::CachePolicy;

use super::{clock::Wall, directives::initial_age};
use crate::stored::StoredResponse;

/// The stored view of the request a response answered.
#[derive(Debug, Clone)]
pub(crate) struct StoredParts {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

/// A response the layer may store, and everything needed to serve it later.
pub(crate) struct Stored {
    /// The response as kept: status, end-to-end headers, body.
    pub(crate) response: StoredResponse,
    pub(crate) req: StoredParts,
    /// The RFC 9111 policy (policy mode). Entries read back from bytes rebuild it on use.
    pub(crate) policy: Option<Box<CachePolicy>>,
    pub(crate) policy_mode: bool,
    pub(crate) response_time: Wall,
    /// The `Age` the response arrived with, in seconds (read once, not on every hit).
    pub(crate) initial_age: u64,
    pub(crate) fresh_until: Wall,
    pub(crate) keep_for: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) allows_authorized: bool,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) vary_key: String,
    /// The headers of the last fresh hit served from this entry (with `Age` and `Cache-Status`):
    /// hits in the same second (the values change once a second) clone them instead of
    /// formatting both values and inserting them again.
    pub(crate) hit_values: HitMemo,
}

/// The last value made, with what it was made for: a value that repeats (the headers of hits
/// within one second, the `Cache-Status` of answers with one status) is cloned instead of made
/// again. Lock-free; replaced only when the next one is for something else.
pub(crate) struct LastValue<K, V>(arc_swap::ArcSwapOption<(K, V)>);

impl<K, V> Default for LastValue<K, V> {
    fn default() -> Self {
        Self(arc_swap::ArcSwapOption::empty())
    }
}

impl<K, V: Clone> LastValue<K, V> {
    /// The last value if `matches` says it was made for this, else the one `make` returns
    /// (with what it is for), kept for the next call.
    pub(crate) fn get_or_make(
        &self,
        matches: impl FnOnce(&K) -> bool,
        make: impl FnOnce() -> (K, V),
    ) -> V {
        if let Some(last) = &*self.0.load() {
            if matches(&last.0) {
                return last.1.clone();
            }
        }
        let (key, value) = make();
        self.0
            .store(Some(std::sync::Arc::new((key, value.clone()))));
        value
    }
}

/// The headers a fresh hit was last served with (by cache name, `Age` and TTL); see
/// [`Stored::hit_values`].
#[derive(Default)]
pub(crate) struct HitMemo(LastValue<(Box<str>, u64, i64), HeaderMap>);

impl HitMemo {
    /// The headers of a fresh hit by cache `cache` with this `age` and `ttl` (the stored ones,
    /// `Age` and `Cache-Status`), made by `make` unless the last hit had the same.
    pub(crate) fn headers(
        &self,
        cache: &str,
        age: u64,
        ttl: i64,
        make: impl FnOnce() -> HeaderMap,
    ) -> HeaderMap {
        self.0.get_or_make(
            |(c, a, t)| *a == age && *t == ttl && **c == *cache,
            || ((cache.into(), age, ttl), make()),
        )
    }
}

impl Stored {
    pub(crate) fn weight(&self) -> usize {
        // The kept response counts its headers at 8 bytes of bookkeeping each; an entry's
        // headers weigh 16 (their map's slot), and the entry 256 bytes of its own.
        let response = self.response.weight() - 16 + 8 * self.response.headers.len();
        let policy = if self.policy.is_some() {
            // The policy keeps its own copy of the headers.
            let headers = response - self.response.body.len();
            headers + 256
        } else {
            0
        };
        256 + response + policy + self.vary_key.len()
    }

    /// A copy with other headers, to serve (never to store).
    pub(crate) fn with_headers(&self, headers: HeaderMap) -> Self {
        Self {
            initial_age: initial_age(&headers),
            response: StoredResponse {
                status: self.response.status,
                headers,
                body: self.response.body.clone(),
            },
            req: self.req.clone(),
            policy: None,
            policy_mode: false,
            response_time: self.response_time,
            fresh_until: self.fresh_until,
            keep_for: self.keep_for,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            allows_authorized: self.allows_authorized,
            vary: self.vary.clone(),
            vary_key: self.vary_key.clone(),
            hit_values: HitMemo::default(),
        }
    }

    pub(crate) fn time_to_keep(&self) -> Duration {
        self.keep_for
    }

    pub(crate) fn keep_until(&self) -> Wall {
        self.response_time.after(self.keep_for)
    }
}
