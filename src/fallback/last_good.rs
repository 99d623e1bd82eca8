//! [`LastGood`]: the last good response per key, replayed when a trigger fires.

use std::{
    fmt,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, Method, Response, Version,
    header::{self, HeaderValue},
    request,
};
use http_body::Body;
use moka::sync::Cache;

use super::{
    FallbackReason, FallbackSource,
    source::{
        NoAnswer,
        sealed::{Answer, Source},
    },
};
use crate::{
    ConfigError,
    clock::Monotonic,
    marker::StandIn,
    stored::{StoredResponse, end_to_end, is_hop_by_hop},
};

/// The key a request's last good response is kept under. `None`: this request's responses are
/// neither kept nor replayed (a secondary fallback, if any, answers instead).
///
/// Implemented by [`MethodAndUri`] (the default) and by closures
/// `Fn(&http::request::Parts) -> Option<K>`. The key sees the whole request head, extensions
/// included, so it can add a tenant, a principal, or a header the response varies on.
///
/// ```
/// use bulwark::fallback::LastGood;
///
/// // One entry per path and `x-tenant`, for GET only; the query is ignored.
/// let last_good = LastGood::builder()
///     .key(|head: &http::request::Parts| {
///         (head.method == http::Method::GET).then(|| {
///             (head.uri.path().to_owned(), head.headers.get("x-tenant").cloned())
///         })
///     })
///     .build()
///     .unwrap();
/// # let _ = last_good;
/// ```
pub trait LastGoodKey: Clone + Send + Sync + 'static {
    /// The key type.
    type Key: Hash + Eq + Send + Sync + 'static;

    /// The key for a request, if its responses should be kept.
    fn key(&self, head: &request::Parts) -> Option<Self::Key>;
}

impl<F, K> LastGoodKey for F
where
    F: Fn(&request::Parts) -> Option<K> + Clone + Send + Sync + 'static,
    K: Hash + Eq + Send + Sync + 'static,
{
    type Key = K;

    #[inline]
    fn key(&self, head: &request::Parts) -> Option<K> {
        self(head)
    }
}

/// The default [`LastGoodKey`]: method and effective request URI, for `GET` and `HEAD` requests
/// without an `Authorization` header.
///
/// The key is one string, `"<method> <authority><path>?<query>"`, with the authority from the
/// URI or else the `Host` header (as the [cache](crate::cache)'s default key), so that two
/// virtual hosts served by one router never share an entry. One string hashes in one pass.
///
/// Other methods get no key: replaying the answer of an earlier `POST` to a new one (a payment
/// "accepted" for a payment that never ran) is worse than failing. Requests with
/// `Authorization` get none either, so an answer for one bearer of credentials is not replayed
/// to another. Cookies are not looked at (most browser requests carry some): if answers depend
/// on a cookie (a session) or another header, use a key that includes it, or one user's answer
/// may be replayed to another.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MethodAndUri;

impl LastGoodKey for MethodAndUri {
    type Key = String;

    #[inline]
    fn key(&self, head: &request::Parts) -> Option<String> {
        let safe = head.method == Method::GET || head.method == Method::HEAD;
        if !safe || head.headers.contains_key(header::AUTHORIZATION) {
            return None;
        }
        let method = head.method.as_str();
        let (authority, target) = crate::key::request_target(head);
        let mut key = String::with_capacity(method.len() + 1 + authority.len() + target.len());
        key.push_str(method);
        key.push(' ');
        key.push_str(authority);
        key.push_str(target);
        Some(key)
    }
}

/// The default for [`LastGoodBuilder::max_body_bytes`]: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The default for [`LastGoodBuilder::capacity`]: 1 000 entries.
pub const DEFAULT_CAPACITY: u64 = 1_000;

/// The last good response for each key, replayed as the fallback.
///
/// The layer offers it every response that passed through without a trigger firing; it keeps
/// one when **all** of these hold:
/// - the request has a [key](LastGoodKey) (by default: a `GET` or `HEAD` without
///   `Authorization`, keyed by method, host, path and query);
/// - the status is 2xx but not 206 (a part of a resource), and the layer's classifier calls it
///   a success;
/// - it is no bulwark answer: no [`Rejection`](crate::Rejection), no [`FallbackReason`] extension, no
///   `bulwark-fallback` header (an inner fallback's answer is not a good response);
/// - it has no `Set-Cookie` and no `Cache-Control: no-store` or `private`;
/// - its body's size hint says it has at most [`max_body_bytes`](LastGoodBuilder::max_body_bytes).
///   A body of unknown length (chunked, streamed) or a larger one is passed through untouched and
///   not kept: it cannot be buffered without the risk of holding too much.
///
/// Kept responses are buffered with [`to_bytes_limited`](crate::body::to_bytes_limited) and
/// passed on from the buffer, so their head goes out once the whole body has arrived. Hop-by-hop
/// headers and `x-request-id` are not kept. If a body fails while it is buffered, its bytes are
/// gone: that is an inner failure (reason `error`), and without a fallback answer the original
/// becomes a 502 with a problem+json body.
///
/// An answer identical to the one kept for its key (status, version, body and kept fields) is
/// not written again, so a busy route's steady answer costs one lookup, not a cache write. With
/// [`refresh_after`](LastGoodBuilder::refresh_after), a key's good responses are not even
/// buffered for a while after one was kept: they stream through untouched.
///
/// Memory is bounded: at most [`capacity`](LastGoodBuilder::capacity) entries (a moka cache with
/// TinyLFU admission and LRU eviction), each at most `max_body_bytes` of body. The store is made
/// here, once: every clone of it, of the layer, and every service the layer makes share it.
///
/// A replay carries `Cache-Control: no-store` in place of the kept `Cache-Control` and
/// `Expires` (its validators stay): it is an old answer, and a CDN or browser must not keep it
/// for the freshness the origin gave it when it was current, after the origin has recovered.
///
/// With nothing kept for a request, it has no answer; chain a secondary fallback with
/// [`or`](FallbackSource::or) for that case.
///
/// ```
/// use bulwark::fallback::{FallbackLayer, LastGood, StaticResponse};
/// use http::Response;
///
/// let layer = FallbackLayer::last_good(LastGood::new(1_000)?)
///     .or(StaticResponse::new(Response::new(r#"["bestseller"]"#)));
/// # let _ = layer;
/// # Ok::<_, bulwark::ConfigError>(())
/// ```
pub struct LastGood<X: LastGoodKey = MethodAndUri> {
    cache: Cache<Arc<X::Key>, Arc<Kept>>,
    /// With `refresh_after`: the key whose answer was last kept or found unchanged, and that
    /// answer. A busy route's requests between refreshes find their answer's age here, by a
    /// key comparison, instead of by a cache lookup (hashing the key, and recording the read
    /// for eviction). Shared by every clone, as the cache is.
    recent: Arc<ArcSwapOption<Recent<X::Key>>>,
    key: X,
    max_body: usize,
    /// [`LastGoodBuilder::refresh_after`], in nanoseconds (0: offer every good response).
    refresh: u64,
    /// What `Kept::at` counts from.
    origin: Monotonic,
}

/// A key and the answer kept for it: [`LastGood`]'s most recently kept.
type Recent<K> = (Arc<K>, Arc<Kept>);

/// A kept response, and when it was last found current.
struct Kept {
    stored: StoredResponse,
    version: Version,
    /// Nanoseconds from the store's origin: when this answer was kept, or last seen again
    /// unchanged.
    at: AtomicU64,
    /// Set once the cache no longer holds it (evicted, replaced or invalidated), so that
    /// `LastGood::recent` does not speak for it any more.
    gone: AtomicBool,
}

impl std::ops::Deref for Kept {
    type Target = StoredResponse;

    fn deref(&self) -> &StoredResponse {
        &self.stored
    }
}

impl LastGood {
    /// A store of up to `capacity` entries, with the default key and body limit.
    ///
    /// # Errors
    ///
    /// If `capacity` is 0.
    pub fn new(capacity: u64) -> Result<Self, ConfigError> {
        Self::builder().capacity(capacity).build()
    }

    /// A builder, to set the key or the body limit.
    pub fn builder() -> LastGoodBuilder {
        LastGoodBuilder {
            capacity: DEFAULT_CAPACITY,
            max_body: DEFAULT_MAX_BODY_BYTES,
            refresh: Duration::ZERO,
            key: MethodAndUri,
        }
    }
}

impl<X: LastGoodKey> LastGood<X> {
    /// How many responses are kept. Runs the cache's pending maintenance first, so it is exact
    /// but not free: for tests and admin pages, not for every request.
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Forgets every kept response.
    pub fn clear(&self) {
        // The cache tells its eviction listener later, in its maintenance.
        self.recent.store(None);
        self.cache.invalidate_all();
    }
}

impl<X: LastGoodKey> Clone for LastGood<X> {
    /// Cheap: the clone shares the store.
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            recent: self.recent.clone(),
            key: self.key.clone(),
            max_body: self.max_body,
            refresh: self.refresh,
            origin: self.origin,
        }
    }
}

impl<X: LastGoodKey> fmt::Debug for LastGood<X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGood")
            .field("key", &std::any::type_name::<X>())
            .field("capacity", &self.cache.policy().max_capacity())
            .field("max_body_bytes", &self.max_body)
            .field("refresh_after", &Duration::from_nanos(self.refresh))
            .finish_non_exhaustive()
    }
}

/// Builds a [`LastGood`] store. From [`LastGood::builder`].
#[derive(Clone)]
#[must_use]
pub struct LastGoodBuilder<X = MethodAndUri> {
    capacity: u64,
    max_body: usize,
    refresh: Duration,
    key: X,
}

impl<X> fmt::Debug for LastGoodBuilder<X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastGoodBuilder")
            .field("capacity", &self.capacity)
            .field("max_body_bytes", &self.max_body)
            .field("refresh_after", &self.refresh)
            .field("key", &std::any::type_name::<X>())
            .finish()
    }
}

impl<X: LastGoodKey> LastGoodBuilder<X> {
    /// At most this many entries (default [`DEFAULT_CAPACITY`]). Must be at least 1.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Keep only responses whose body is known to be at most this many bytes (default
    /// [`DEFAULT_MAX_BODY_BYTES`]). Must be at least 1.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Once a response is kept for a key, pass that key's good responses through untouched
    /// (streamed: not buffered, not compared, not kept) for `interval` after it; the first one
    /// after that is offered again, and an unchanged answer then starts a new interval without a
    /// write. Default zero: every good response is offered.
    ///
    /// A busy route's answers then cost a comparison with the key most recently kept (a cache
    /// lookup for other keys) instead of being buffered whole before their first byte goes
    /// out, and the answer replayed on a failure lags the newest good one by at most `interval`
    /// (plus however long ago the route last answered well). Its entry is then marked as used,
    /// for eviction, once per interval rather than once per request. The clock is tokio's, so
    /// tests with paused time drive it.
    pub fn refresh_after(mut self, interval: Duration) -> Self {
        self.refresh = interval;
        self
    }

    /// Keys responses with `key` instead of [`MethodAndUri`].
    pub fn key<X2: LastGoodKey>(self, key: X2) -> LastGoodBuilder<X2> {
        LastGoodBuilder {
            capacity: self.capacity,
            max_body: self.max_body,
            refresh: self.refresh,
            key,
        }
    }

    /// Makes the store.
    ///
    /// # Errors
    ///
    /// If the capacity or the body limit is 0.
    pub fn build(self) -> Result<LastGood<X>, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::invalid("capacity", "must be > 0"));
        }
        if self.max_body == 0 {
            return Err(ConfigError::invalid("max_body_bytes", "must be > 0"));
        }
        Ok(LastGood {
            cache: Cache::builder()
                .name("bulwark-fallback-last-good")
                .max_capacity(self.capacity)
                .eviction_listener(|_, kept: Arc<Kept>, _| {
                    kept.gone.store(true, Ordering::Relaxed);
                })
                .build(),
            recent: Arc::default(),
            key: self.key,
            max_body: self.max_body,
            refresh: crate::clock::nanos(self.refresh),
            origin: Monotonic::start(),
        })
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether the response may be kept as a last good response: see [`LastGood`]'s list. The
/// classifier's verdict is checked by the caller.
pub(crate) fn storable<B: Body>(res: &Response<B>, limit: usize) -> bool {
    // 206 answers a `Range` request only: replayed to a plain GET it would pass for the whole.
    let h = res.headers();
    if !res.status().is_success()
        || res.status() == http::StatusCode::PARTIAL_CONTENT
        || StandIn::is_rejection_or_fallback(res.extensions(), h)
        || h.contains_key(header::SET_COOKIE)
    {
        return false;
    }
    let forbidden = |v: &HeaderValue| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|d| {
                let d = d.trim();
                let name = d.split('=').next().unwrap_or(d).trim();
                name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("private")
            })
        })
    };
    if h.get_all(header::CACHE_CONTROL).iter().any(forbidden) {
        return false;
    }
    res.body()
        .size_hint()
        .upper()
        .is_some_and(|upper| upper <= limit as u64)
}

/// Whether [`LastGood`] leaves `name` out of what it keeps: the hop-by-hop fields
/// ([`is_hop_by_hop`]), which belong to the old connection, and `x-request-id`, which belongs
/// to the old request. Fields named in `Connection` are left out too, by [`kept_headers`].
fn not_kept(name: &HeaderName) -> bool {
    is_hop_by_hop(name) || name == X_REQUEST_ID
}

/// The fields of `headers` that [`LastGood`] keeps, in their order: the end-to-end ones
/// ([`end_to_end`]) but `x-request-id`.
fn kept_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = end_to_end(headers);
    if headers.contains_key(&X_REQUEST_ID) {
        kept.remove(&X_REQUEST_ID);
    }
    kept
}

/// Whether `kept` is what [`kept_headers`] makes of `new`: the same fields with the same values
/// in the same order, walked side by side (no lookups). A `new` with a `Connection` field is
/// reported as different (rare; it is then simply kept again), as is one whose fields came in
/// another order.
fn same_kept_headers(kept: &HeaderMap, new: &HeaderMap) -> bool {
    if new.contains_key(header::CONNECTION) {
        return false;
    }
    let mut kept = kept.iter();
    for (name, value) in new.iter().filter(|(name, _)| !not_kept(name)) {
        match kept.next() {
            Some((k, v)) if k == name && v == value => {}
            _ => return false,
        }
    }
    kept.next().is_none()
}

impl<X: LastGoodKey> LastGood<X> {
    /// Nanoseconds since the store was made, on tokio's clock.
    fn now(&self) -> u64 {
        self.origin.nanos()
    }
}

impl<X: LastGoodKey> Source for LastGood<X> {
    type Memo = Option<X::Key>;

    #[inline]
    fn memo(&self, head: &request::Parts, _: bool) -> Option<X::Key> {
        self.key.key(head)
    }

    fn store_limit(&self, memo: &Option<X::Key>) -> Option<usize> {
        let key = memo.as_ref()?;
        if self.refresh == 0 {
            return Some(self.max_body);
        }
        let current = |kept: &Kept| {
            let at = kept.at.load(Ordering::Relaxed);
            self.now() < at.saturating_add(self.refresh)
        };
        let recent = self.recent.load();
        let kept_current = match recent.as_deref() {
            Some((recent, kept)) if **recent == *key && !kept.gone.load(Ordering::Relaxed) => {
                current(kept)
            }
            _ => self.cache.get(key).is_some_and(|kept| current(&kept)),
        };
        (!kept_current).then_some(self.max_body)
    }

    fn remember(&self, memo: Option<X::Key>, head: &http::response::Parts, body: &Bytes) {
        let Some(key) = memo else { return };
        if body.len() > self.max_body {
            return;
        }
        // A busy route gives the same answer again and again. Keeping an identical answer
        // anew would change nothing but cost a header copy, an allocation and a cache write
        // (with the old entry's deferred drop) per request; the lookup also marks the entry as
        // used, for eviction, as the write would.
        let now = if self.refresh == 0 { 0 } else { self.now() };
        let kept = match self.cache.get(&key) {
            Some(kept)
                if kept.status == head.status
                    && kept.version == head.version
                    && kept.body == *body
                    && same_kept_headers(&kept.headers, &head.headers) =>
            {
                if self.refresh == 0 {
                    return;
                }
                kept.at.store(now, Ordering::Relaxed);
                kept
            }
            _ => {
                let kept = Arc::new(Kept {
                    stored: StoredResponse {
                        status: head.status,
                        headers: kept_headers(&head.headers),
                        body: body.clone(),
                    },
                    version: head.version,
                    at: AtomicU64::new(now),
                    gone: AtomicBool::new(false),
                });
                let key = Arc::new(key);
                if self.refresh != 0 {
                    self.recent
                        .store(Some(Arc::new((key.clone(), kept.clone()))));
                }
                self.cache.insert(key, kept);
                return;
            }
        };
        // Offered at most once per `refresh_after` for this key.
        self.recent.store(Some(Arc::new((Arc::new(key), kept))));
    }

    fn answer(&self, _: FallbackReason, memo: Option<X::Key>, _: Bytes) -> Answer {
        let found = memo.and_then(|key| self.cache.get(&key));
        Box::pin(std::future::ready(match found {
            Some(stored) => {
                let mut res = stored.to_response(stored.version);
                let headers = res.headers_mut();
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.remove(header::EXPIRES);
                Ok(res)
            }
            None => Err(NoAnswer::NothingStored.into()),
        }))
    }
}

impl<X: LastGoodKey> FallbackSource for LastGood<X> {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn res(status: u16, body: &'static str) -> Response<Full<Bytes>> {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    #[test]
    fn only_plain_good_small_responses_are_storable() {
        assert!(storable(&res(200, "ok"), 2));
        assert!(!storable(&res(200, "ok!"), 2), "over the limit");
        assert!(!storable(&res(404, ""), 2));
        assert!(!storable(&res(503, ""), 2));
        let mut r = res(200, "");
        r.headers_mut()
            .insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        assert!(!storable(&r, 2));
        for cc in [
            "no-store",
            "max-age=5, private",
            "private=\"x\"",
            "No-Store",
        ] {
            let mut r = res(200, "");
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
            assert!(!storable(&r, 2), "{cc}");
        }
        let mut r = res(200, "");
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, public"),
        );
        assert!(storable(&r, 2));
        let mut r = res(200, "");
        r.headers_mut().insert(
            crate::fallback::BULWARK_FALLBACK.clone(),
            FallbackReason::Error.header_value(),
        );
        assert!(!storable(&r, 2));
        let mut r = res(200, "");
        r.extensions_mut().insert(FallbackReason::Status);
        assert!(!storable(&r, 2));
        assert!(storable(&Response::new(Empty::<Bytes>::new()), 1));
    }

    #[test]
    fn the_default_key_is_for_safe_anonymous_requests() {
        let head = |method: Method, auth: bool| {
            let mut b = http::Request::builder().method(method).uri("/a?b=1");
            if auth {
                b = b.header(header::AUTHORIZATION, "Bearer x");
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            MethodAndUri.key(&head(Method::GET, false)).as_deref(),
            Some("GET /a?b=1")
        );
        assert!(MethodAndUri.key(&head(Method::HEAD, false)).is_some());
        assert!(MethodAndUri.key(&head(Method::POST, false)).is_none());
        assert!(MethodAndUri.key(&head(Method::GET, true)).is_none());
    }

    #[test]
    fn the_default_key_tells_virtual_hosts_apart() {
        let key = |uri: &str, host: Option<&str>| {
            let mut b = http::Request::get(uri);
            if let Some(host) = host {
                b = b.header(header::HOST, host);
            }
            MethodAndUri.key(&b.body(()).unwrap().into_parts().0)
        };
        let a = key("/menu", Some("a.example"));
        assert_eq!(a.as_deref(), Some("GET a.example/menu"));
        assert_ne!(a, key("/menu", Some("b.example")), "HTTP/1.1: by Host");
        assert_eq!(
            key("https://a.example/menu?x=1", Some("ignored.example")).as_deref(),
            Some("GET a.example/menu?x=1"),
            "absolute form (HTTP/2): by the URI's authority"
        );
        assert_ne!(key("/menu", None), key("/menu?x=1", None));
        assert_eq!(
            MethodAndUri
                .key(
                    &http::Request::head("/menu")
                        .body(())
                        .unwrap()
                        .into_parts()
                        .0
                )
                .as_deref(),
            Some("HEAD /menu")
        );
    }

    #[test]
    fn zero_settings_are_config_errors() {
        let err = LastGood::new(0).unwrap_err();
        assert_eq!(err.to_string(), "invalid capacity: must be > 0");
        let err = LastGood::builder().max_body_bytes(0).build().unwrap_err();
        assert_eq!(err.to_string(), "invalid max_body_bytes: must be > 0");
    }

    #[test]
    fn hop_by_hop_headers_and_request_ids_are_not_kept() {
        let lg = LastGood::new(10).unwrap();
        let head = http::Request::get("/").body(()).unwrap().into_parts().0;
        let (mut parts, ()) = Response::new(()).into_parts();
        for (n, v) in [
            ("connection", "x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("x-request-id", "old"),
            ("content-type", "text/plain"),
        ] {
            parts.headers.insert(n, HeaderValue::from_static(v));
        }
        lg.remember(lg.memo(&head, false), &parts, &Bytes::from_static(b"hi"));
        assert_eq!(lg.entry_count(), 1);
        let stored = lg.cache.get(&"GET /".to_owned()).unwrap();
        let names: Vec<_> = stored.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }

    /// With `refresh_after`, the most recently kept answer is checked without a cache lookup;
    /// once the cache drops it (here invalidated, as eviction would), it no longer counts as
    /// kept, so the key's next good answer is offered again.
    #[test]
    fn the_recent_answer_stops_counting_once_the_cache_drops_it() {
        let lg = LastGood::builder()
            .refresh_after(Duration::from_secs(3600))
            .build()
            .unwrap();
        let head = http::Request::get("/").body(()).unwrap().into_parts().0;
        let (parts, ()) = Response::new(()).into_parts();
        assert_eq!(lg.store_limit(&lg.memo(&head, false)), Some(lg.max_body));
        lg.remember(lg.memo(&head, false), &parts, &Bytes::from_static(b"[1]"));
        assert_eq!(
            lg.store_limit(&lg.memo(&head, false)),
            None,
            "kept just now"
        );
        let other = http::Request::get("/other")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(lg.store_limit(&lg.memo(&other, false)), Some(lg.max_body));

        lg.cache.invalidate(&"GET /".to_owned());
        lg.cache.run_pending_tasks();
        assert_eq!(lg.store_limit(&lg.memo(&head, false)), Some(lg.max_body));
        lg.remember(lg.memo(&head, false), &parts, &Bytes::from_static(b"[2]"));
        assert_eq!(lg.cache.get(&"GET /".to_owned()).unwrap().body, "[2]");
        assert_eq!(lg.store_limit(&lg.memo(&head, false)), None);
    }

    #[test]
    fn an_identical_answer_keeps_the_entry_and_a_different_one_replaces_it() {
        let lg = LastGood::new(10).unwrap();
        let head = http::Request::get("/").body(()).unwrap().into_parts().0;
        let key = "GET /";
        let parts = |status: u16, headers: &[(&'static str, &'static str)]| {
            let (mut parts, ()) = Response::new(()).into_parts();
            parts.status = http::StatusCode::from_u16(status).unwrap();
            for (n, v) in headers {
                parts.headers.append(*n, HeaderValue::from_static(v));
            }
            parts
        };
        let keep = |p: &http::response::Parts, body: &'static str| {
            lg.remember(
                lg.memo(&head, false),
                p,
                &Bytes::from_static(body.as_bytes()),
            );
            lg.cache.get(&key.to_owned()).unwrap()
        };
        let base = [
            ("content-type", "application/json"),
            ("vary", "a"),
            ("vary", "b"),
        ];
        let first = keep(&parts(200, &base), "[1]");
        // Only fields that are not kept differ: the entry stays.
        let mut same = base.to_vec();
        same.extend([("x-request-id", "r-2"), ("transfer-encoding", "chunked")]);
        assert!(Arc::ptr_eq(&first, &keep(&parts(200, &same), "[1]")));
        // ... wherever they come.
        let interleaved = [
            ("x-request-id", "r-3"),
            ("content-type", "application/json"),
            ("proxy-status", "edge"),
            ("vary", "a"),
            ("keep-alive", "timeout=5"),
            ("vary", "b"),
        ];
        assert!(Arc::ptr_eq(&first, &keep(&parts(200, &interleaved), "[1]")));
        // Any kept difference replaces it: body, status, a value, the values' order, a field
        // more or less, and a `Connection` header (compared conservatively).
        let mut last = first;
        // (status, fields, body)
        type Answer<'a> = (u16, &'a [(&'static str, &'static str)], &'static str);
        let different: [Answer<'_>; 7] = [
            (200, &base, "[2]"),
            (203, &base, "[2]"),
            (
                203,
                &[("content-type", "text/plain"), ("vary", "a"), ("vary", "b")],
                "[2]",
            ),
            (
                203,
                &[("content-type", "text/plain"), ("vary", "b"), ("vary", "a")],
                "[2]",
            ),
            (203, &[("content-type", "text/plain"), ("vary", "b")], "[2]"),
            (
                203,
                &[
                    ("content-type", "text/plain"),
                    ("vary", "b"),
                    ("etag", "\"1\""),
                ],
                "[2]",
            ),
            (
                203,
                &[
                    ("content-type", "text/plain"),
                    ("vary", "b"),
                    ("etag", "\"1\""),
                    ("connection", "close"),
                ],
                "[2]",
            ),
        ];
        for (status, headers, body) in different {
            let next = keep(&parts(status, headers), body);
            assert!(!Arc::ptr_eq(&last, &next), "{status} {headers:?} {body}");
            assert_eq!(
                (next.status.as_u16(), &*next.body),
                (status, body.as_bytes())
            );
            last = next;
        }
    }
}
