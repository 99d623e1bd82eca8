use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderName, request};
use tower_layer::Layer;

use super::{
    Cache,
    policy::{CacheSettings, Mode},
    shared::{KeyFn, Shared},
    store::CacheStore,
};
use crate::{ConfigError, StoreError};

/// A response cache with HTTP semantics and request coalescing. See the [module docs](super).
///
/// The cache state (store, in-flight table) is created with the layer: every clone of the layer
/// and every service it makes share it. Builder methods return a layer with fresh in-flight state,
/// so take [`handle`](Self::handle) after configuring.
#[must_use]
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl CacheLayer {
    /// A cache in policy mode (RFC 9111 shared-cache rules from the responses' own headers, no
    /// heuristic freshness) keeping its entries in `store`.
    pub fn new(store: CacheStore) -> Self {
        // `None`: the default key, which the hit path makes without allocating.
        let key: KeyFn = None;
        Self {
            shared: Arc::new(Shared::new(CacheSettings::new(Mode::Policy), store, key)),
        }
    }

    fn with(self, f: impl FnOnce(&mut CacheSettings)) -> Self {
        let mut cfg = self.shared.cfg.clone();
        f(&mut cfg);
        Self {
            shared: Arc::new(Shared::new(
                cfg,
                self.shared.store.clone(),
                self.shared.key.clone(),
            )),
        }
    }

    /// Forced-TTL mode: every `2xx` answer to a `GET` (except `206`) is fresh for `ttl`, whatever
    /// its caching headers say, for handlers that set none. The never-store rules still apply
    /// (`Set-Cookie`, `private`, `no-store`, credentials, bulwark answers, large bodies, and
    /// `text/event-stream`, which is passed through as it streams). A stored answer's head goes
    /// out once its whole body has arrived (up to the body limit): put routes that stream
    /// slowly (long polls, exports) outside the layer. Client
    /// request directives (`no-cache`, `max-age`) are ignored in this mode: the point is to
    /// protect the handler.
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|c| c.mode = Mode::Forced(ttl))
    }

    /// Policy mode (the default): freshness from `Cache-Control` (`s-maxage`, `max-age`),
    /// `Expires`, `Age` and `Date`, as a shared cache.
    pub fn policy(self) -> Self {
        self.with(|c| c.mode = Mode::Policy)
    }

    /// The cache's identifier in `Cache-Status` (default `bulwark`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless `name` is a non-empty structured-field token
    /// (letters, digits and `!#$%&'*+-.^_`|~:/`, starting with a letter or `*`).
    pub fn name(self, name: &str) -> Result<Self, ConfigError> {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c));
        if !valid {
            return Err(ConfigError::invalid(
                "cache name",
                "must be a structured-field token, e.g. `edge-cache`",
            ));
        }
        let value = http::HeaderValue::from_str(name)
            .map_err(|_| ConfigError::invalid("cache name", "not a header value"))?;
        Ok(self.with(|c| c.name = value))
    }

    /// Heuristic freshness (RFC 9111 section 4.2.2) for responses with `Last-Modified` and no
    /// explicit lifetime: `fraction` of the time since the last modification (0.1 is usual).
    /// Off (0) by default.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] unless `0.0 <= fraction <= 1.0`.
    pub fn heuristic_freshness(self, fraction: f32) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ConfigError::invalid(
                "heuristic_freshness",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(self.with(|c| c.heuristic = fraction))
    }

    /// Honours the RFC 9213 targeted field `CDN-Cache-Control`: when a response has it, it
    /// replaces `Cache-Control` (and `Expires`) for this cache.
    pub fn cdn_cache_control(self) -> Self {
        self.target_field(HeaderName::from_static("cdn-cache-control"))
    }

    /// Honours `field` as this cache's targeted cache-control field (RFC 9213), e.g.
    /// `Bulwark-Cache-Control`.
    pub fn target_field(self, field: HeaderName) -> Self {
        self.with(|c| c.target = Some(field))
    }

    /// Stores answers to requests with `Authorization` or `Cookie` even when the response does not
    /// say `public`, `s-maxage` or `must-revalidate`, and serves stored answers to such requests.
    /// Only for handlers whose answers do not depend on who asks. Off by default.
    pub fn allow_authorized(self, allow: bool) -> Self {
        self.with(|c| c.allow_authorized = allow)
    }

    /// Serves a stale entry for up to `window` after it went stale while one background request
    /// refreshes it, for responses that do not set `stale-while-revalidate` themselves (never for
    /// `must-revalidate`, `proxy-revalidate` or `no-cache`). Off by default. A refresh that
    /// takes longer than [`coalesce_wait`](Self::coalesce_wait) is given up (a `WARN` event),
    /// so the next stale request starts another; refreshes are not counted as requests.
    pub fn stale_while_revalidate(self, window: Duration) -> Self {
        self.with(|c| c.stale_while_revalidate = window)
    }

    /// Serves a stale entry for up to `window` after it went stale when the inner service fails
    /// (`Err` or a 5xx answer), for responses that do not set `stale-if-error` themselves (same
    /// exceptions as above). Off by default.
    pub fn stale_if_error(self, window: Duration) -> Self {
        self.with(|c| c.stale_if_error = window)
    }

    /// How long an entry with a validator (`ETag`, `Last-Modified`) is kept after it went stale,
    /// for conditional revalidation (default 5 minutes).
    pub fn validator_retention(self, retention: Duration) -> Self {
        self.with(|c| c.validator_retention = retention)
    }

    /// Bodies larger than `bytes` are streamed through untouched and not stored (default 1 MiB).
    pub fn max_body_bytes(self, bytes: usize) -> Self {
        self.with(|c| c.max_body = bytes)
    }

    /// How long a request waits for a concurrent identical miss before calling the inner service
    /// itself (default 10 s).
    pub fn coalesce_wait(self, wait: Duration) -> Self {
        self.with(|c| c.coalesce_wait = wait)
    }

    /// Makes the base key of each request with `key` instead of the default
    /// (`GET <authority><path>?<query>`); `None` bypasses the cache for that request. The key
    /// must not depend on the method: `HEAD` is answered from the `GET` entry, and unsafe
    /// requests invalidate the key their URI makes. `Vary` is handled on top of the key.
    pub fn key<F>(self, key: F) -> Self
    where
        F: Fn(&request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        let key: KeyFn = Some(Arc::new(key));
        Self {
            shared: Arc::new(Shared::new(
                self.shared.cfg.clone(),
                self.shared.store.clone(),
                key,
            )),
        }
    }

    /// A handle to this layer's cache: purge by key or prefix.
    #[must_use]
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Purges a [`CacheLayer`]'s entries. Cheap to clone.
#[derive(Clone)]
pub struct CacheHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("shared", &self.shared)
            .finish()
    }
}

impl CacheHandle {
    /// The base key the layer makes for a request head (`None`: the request bypasses the cache).
    #[must_use]
    pub fn key_for(&self, parts: &request::Parts) -> Option<String> {
        self.shared.make_key(parts)
    }

    /// Removes the entry under `key`, and all its `Vary` variants with it (their keys start with
    /// `key` and a NUL; for Redis that is a `SCAN`, as [`purge_prefix`](Self::purge_prefix)).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store failed.
    pub async fn purge(&self, key: &str) -> Result<(), StoreError> {
        let store = &self.shared.store.inner;
        store.remove(key).await?;
        store.remove_prefix(&format!("{key}\0")).await.map(drop)
    }

    /// Removes every entry whose key starts with `prefix`; returns how many entries (variants
    /// and indexes count one each).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store failed.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        self.shared.store.inner.remove_prefix(prefix).await
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &CacheStore {
        &self.shared.store
    }
}
