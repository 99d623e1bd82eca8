use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header, request,
    response,
};
use http_body::Body;
use tokio::sync::watch;
use tower_service::Service;

use super::{
    clock::{Clock, Wall, system_nanos},
    conditional::{not_modified, take_client_validators},
    directives::Directives,
    entry::{LastValue, Stored},
    freshness::Freshness,
    future::ResponseFuture,
    policy::{Config, is_restricted, plain},
    status::{CACHE_STATUS, CacheOutcome, CacheStatus},
    storable::{Decision, decide},
    store::{CacheStore, Entry, EntryKind},
    vary::vary_key,
};
use crate::{
    StoreError,
    body::ResponseBody,
    redact::Redactor,
    rejection::{UPSTREAM_BROKE_OFF, problem_response},
};

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
fn default_key_in<'b>(parts: &request::Parts, buf: &'b mut [u8; KEY_BUF]) -> Option<&'b str> {
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
const KEY_BUF: usize = 256;

#[derive(Clone)]
enum FlightState {
    Pending,
    Done(Option<Entry>),
}

/// State shared by every clone of a layer and every service it made.
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) store: CacheStore,
    pub(crate) key: KeyFn,
    pub(crate) clock: Clock,
    /// In-flight inner calls by key, for coalescing. Bounded by the number of requests in flight:
    /// an entry lives exactly as long as its leader's call.
    flights: Mutex<HashMap<String, Arc<watch::Sender<FlightState>>>>,
    /// Flights that ended with an entry stored, ever. A request that missed and then finds no
    /// flight to join looks again if this moved since its lookup: the flight it missed may
    /// have stored its entry and left the table in between.
    landed: AtomicU64,
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
    pub(crate) fn new(cfg: Config, store: CacheStore, key: KeyFn) -> Self {
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
            flights: Mutex::new(HashMap::new()),
            landed: AtomicU64::new(0),
            next_index: AtomicU64::new(seed),
            last_status: LastValue::default(),
        }
    }

    fn name(&self) -> &str {
        &self.label
    }

    /// The request's base key; `None` bypasses the cache.
    pub(crate) fn make_key(&self, parts: &request::Parts) -> Option<String> {
        match &self.key {
            Some(key) => key(parts),
            None => default_key(parts),
        }
    }

    fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = flights.get(key) {
            return Join::Wait(tx.subscribe());
        }
        let tx = Arc::new(watch::Sender::new(FlightState::Pending));
        flights.insert(key.to_owned(), tx.clone());
        Join::Lead(FlightGuard {
            shared: self.clone(),
            key: key.to_owned(),
            tx,
            done: false,
        })
    }

    /// The synchronous fast path of `GET` and `HEAD`: a fresh entry the store finds at once
    /// ([`Store::get_now`](super::Store::get_now)) is served without boxing a future. Anything
    /// else (a range request, no entry found at once, a stale or unusable one) goes on to
    /// [`cached`] with the base key if it was made: the same decisions, in the same order.
    ///
    /// A hit answers with the request's own extension map, emptied: the request ends here, and
    /// its map's allocations (a box and a table) then carry the answer's `CacheStatus` instead
    /// of two new ones.
    fn hit_now<B>(&self, parts: &mut request::Parts) -> Result<Response<ResponseBody<B>>, BaseKey> {
        let plain = plain(&parts.headers);
        if !plain && parts.headers.contains_key(header::RANGE) {
            return Err(BaseKey::NotMade);
        }
        let mut buf = [0u8; KEY_BUF];
        let base: std::borrow::Cow<'_, str> = match &self.key {
            None => match default_key_in(parts, &mut buf) {
                Some(k) => k.into(),
                None => return Err(BaseKey::NotMade),
            },
            Some(key) => match key(parts) {
                Some(k) => k.into(),
                None => return Err(BaseKey::Made(None)),
            },
        };
        let Some(entry) = self.store.inner.get_now(&base) else {
            return Err(BaseKey::Made(Some(base.into_owned())));
        };
        let (entry, variant) = match &*entry.0 {
            EntryKind::Response(_) => (entry, None),
            EntryKind::Index { id, vary, .. } => {
                let key = variant_key(&base, *id, &vary_key(vary, &parts.headers));
                match self.store.inner.get_now(&key) {
                    Some(v) if v.as_response().is_some() => (v, Some(key)),
                    _ => return Err(BaseKey::Made(Some(base.into_owned()))),
                }
            }
        };
        let stored = entry.as_response().expect("checked above");
        let now = self.clock.now();
        if stored.freshness_for(&self.cfg, parts, now, plain) != Freshness::Fresh {
            return Err(BaseKey::Made(Some(base.into_owned())));
        }
        let key = variant.as_deref().unwrap_or(&base);
        // A plain request has no conditional fields: never a 304.
        let not_modified = !plain && stored.not_modified_for(parts);
        let (mut res, status) = serve_as(
            self,
            stored,
            parts,
            CacheStatus::new(CacheOutcome::Hit),
            now,
            key,
            not_modified,
        );
        let mut extensions = std::mem::take(&mut parts.extensions);
        extensions.clear();
        extensions.insert(status);
        *res.extensions_mut() = extensions;
        Ok(res)
    }

    async fn lookup(&self, base: &str, headers: &HeaderMap) -> Result<Lookup, StoreError> {
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
    async fn put(&self, base: &str, index: Option<&IndexInfo>, stored: Stored) -> (Entry, bool) {
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

    fn store_failed(&self, e: &StoreError) {
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
    fn report(&self, status: CacheStatus, headers: &mut HeaderMap, key: Option<&str>) {
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
    fn count(&self, status: CacheStatus, key: Option<&str>) {
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
    static QUIET: bool;
}

fn variant_key(base: &str, id: u64, vary_key: &str) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(base.len() + 20 + vary_key.len());
    key.push_str(base);
    let _ = write!(key, "\u{0}{id:x}\u{0}");
    key.push_str(vary_key);
    key
}

/// A `Vary` index as read: its id, header names and retention.
type IndexInfo = (u64, Vec<HeaderName>, std::time::Duration);

enum Lookup {
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

/// Whether the fast path already made the request's base key (`None`: the key hook declined).
enum BaseKey {
    NotMade,
    Made(Option<String>),
}

enum Join {
    Lead(FlightGuard),
    Wait(watch::Receiver<FlightState>),
}

/// The leader of a coalesced call. Publishes its entry (or `None`: waiters call on their own)
/// and leaves the flight table, also when its future is dropped.
struct FlightGuard {
    shared: Arc<Shared>,
    key: String,
    tx: Arc<watch::Sender<FlightState>>,
    done: bool,
}

impl FlightGuard {
    fn finish(mut self, entry: Option<Entry>) {
        self.complete(entry);
    }

    fn complete(&mut self, entry: Option<Entry>) {
        if self.done {
            return;
        }
        self.done = true;
        if entry.is_some() {
            // Before leaving the table: whoever then finds no flight sees this (see `landed`).
            self.shared.landed.fetch_add(1, Ordering::Release);
        }
        {
            let mut flights = self
                .shared
                .flights
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if flights
                .get(&self.key)
                .is_some_and(|tx| Arc::ptr_eq(tx, &self.tx))
            {
                flights.remove(&self.key);
            }
        }
        self.tx.send_replace(FlightState::Done(entry));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.complete(None);
    }
}

/// The service made by [`CacheLayer`](super::CacheLayer).
#[must_use]
pub struct Cache<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
}

crate::macros::define_inner_service_accessors!(Cache<S>);

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Methods that are safe (RFC 9110 section 9.2.1): they never invalidate.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Cache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let method = req.method().clone();
        if method == Method::GET || method == Method::HEAD {
            let (mut parts, body) = req.into_parts();
            let base = match self.shared.hit_now(&mut parts) {
                Ok(res) => return ResponseFuture::ready(res),
                Err(BaseKey::Made(None)) => {
                    // The key hook declined: nothing to look up or store.
                    let future = self.inner.call(Request::from_parts(parts, body));
                    return ResponseFuture::bypass(future, self.shared.clone(), "key");
                }
                Err(base) => base,
            };
            // The instance that was polled ready serves this request; a fresh clone stays.
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::cached(Box::pin(cached(
                self.shared.clone(),
                inner,
                parts,
                body,
                base,
            )));
        }
        let keys = if is_safe(&method) {
            None
        } else {
            Some(InvalidationTarget::of(&self.shared, &req))
        };
        ResponseFuture::forward(self.inner.call(req), self.shared.clone(), keys)
    }
}

/// What a successful unsafe request invalidates (RFC 9111 section 4.4): its target URI, and the
/// URIs in `Location` and `Content-Location` when they are on the same host.
pub(crate) struct InvalidationTarget {
    key: Option<String>,
    host: Option<HeaderValue>,
    authority: Option<http::uri::Authority>,
}

impl InvalidationTarget {
    fn of<B>(shared: &Shared, req: &Request<B>) -> Self {
        let mut parts = Request::new(()).into_parts().0;
        parts.uri = req.uri().clone();
        parts.headers = req
            .headers()
            .get(header::HOST)
            .map(|h| {
                let mut m = HeaderMap::with_capacity(1);
                m.insert(header::HOST, h.clone());
                m
            })
            .unwrap_or_default();
        Self {
            key: shared.make_key(&parts),
            host: req.headers().get(header::HOST).cloned(),
            authority: req.uri().authority().cloned(),
        }
    }

    pub(crate) fn keys(self, shared: &Shared, res: &HeaderMap) -> Vec<String> {
        let mut keys: Vec<String> = self.key.into_iter().collect();
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = res
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = match uri.authority() {
                None => true,
                Some(a) => {
                    self.authority.as_ref() == Some(a)
                        || self
                            .host
                            .as_ref()
                            .is_some_and(|h| h.as_bytes() == a.as_str().as_bytes())
                }
            };
            if !same_host || uri.path().is_empty() {
                continue;
            }
            let mut parts = Request::new(()).into_parts().0;
            parts.uri = uri;
            if let Some(h) = &self.host {
                parts.headers.insert(header::HOST, h.clone());
            }
            if let Some(k) = shared.make_key(&parts) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    pub(crate) fn report(shared: &Shared, parts: &mut response::Parts) {
        let mut s = CacheStatus::new(CacheOutcome::Method);
        s.fwd_status = Some(parts.status.as_u16());
        shared.report(s, &mut parts.headers, None);
        parts.extensions.insert(s);
    }
}

/// A copy of the request head without its extensions, for the decisions made after the call.
fn head_of(parts: &request::Parts) -> request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// `entry`, which another request's call stored, served as `collapsed` if it is fresh for
/// this request.
fn serve_collapsed<B>(
    shared: &Shared,
    entry: &Entry,
    req: &request::Parts,
    key: &str,
) -> Option<Response<ResponseBody<B>>> {
    let now = shared.clock.now();
    let stored = entry.as_response().expect("found entries are responses");
    (stored.freshness(&shared.cfg, req, now) == Freshness::Fresh).then(|| {
        serve(
            shared,
            stored,
            req,
            CacheStatus::new(CacheOutcome::Collapsed),
            now,
            key,
        )
    })
}

/// Serves a stored response: `304` when the client's own conditional request matches, else the
/// stored answer (without its body for `HEAD`), with `Age` and `Cache-Status`.
fn serve<B>(
    shared: &Shared,
    stored: &Stored,
    req: &request::Parts,
    status: CacheStatus,
    now: Wall,
    key: &str,
) -> Response<ResponseBody<B>> {
    let not_modified = stored.not_modified_for(req);
    let (mut res, status) = serve_as(shared, stored, req, status, now, key, not_modified);
    res.extensions_mut().insert(status);
    res
}

/// [`serve`], told whether the answer is `304`; the answer's `CacheStatus` is returned beside
/// it for the caller to attach (into an extension map it may already have).
fn serve_as<B>(
    shared: &Shared,
    stored: &Stored,
    req: &request::Parts,
    mut status: CacheStatus,
    now: Wall,
    key: &str,
    not_modified: bool,
) -> (Response<ResponseBody<B>>, CacheStatus) {
    let (code, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, ResponseBody::empty())
    } else if req.method == Method::HEAD {
        (stored.status, ResponseBody::empty())
    } else {
        (stored.status, ResponseBody::full(stored.body.clone()))
    };
    let age = stored.age(now);
    if status.ttl.is_none() && status.outcome != CacheOutcome::Stale {
        status.ttl = Some(stored.ttl(now));
    }
    let headers = match status.ttl {
        // A plain fresh hit: the same header map for every hit of this entry within a second,
        // cloned instead of built (no formatting, no hashing of names).
        Some(ttl) if !not_modified && status == CacheStatus::hit(ttl) => {
            let name = shared.name();
            let headers = stored.hit_values.headers(name, age, ttl, || {
                let mut headers = stored.headers.clone();
                headers.insert(header::AGE, HeaderValue::from(age));
                status.write(name, &mut headers);
                headers
            });
            shared.count(status, Some(key));
            headers
        }
        _ => {
            let mut headers = stored.headers.clone();
            if not_modified {
                headers.remove(header::CONTENT_LENGTH);
            }
            headers.insert(header::AGE, HeaderValue::from(age));
            shared.report(status, &mut headers, Some(key));
            headers
        }
    };
    let mut res = Response::new(body);
    *res.status_mut() = code;
    *res.headers_mut() = headers;
    (res, status)
}

/// Passes an inner answer through, with `Cache-Status`.
/// A response the cache passed by (`fwd=bypass`, with `detail`).
pub(crate) fn bypassed<B>(
    shared: &Shared,
    parts: response::Parts,
    body: ResponseBody<B>,
    detail: &'static str,
) -> Response<ResponseBody<B>> {
    let mut status = CacheStatus::new(CacheOutcome::Bypass);
    status.detail = Some(detail);
    pass(shared, parts, body, status, None)
}

fn pass<B>(
    shared: &Shared,
    mut parts: response::Parts,
    body: ResponseBody<B>,
    mut status: CacheStatus,
    key: Option<&str>,
) -> Response<ResponseBody<B>> {
    status.fwd_status.get_or_insert(parts.status.as_u16());
    shared.report(status, &mut parts.headers, key);
    parts.extensions.insert(status);
    Response::from_parts(parts, body)
}

/// [`pass`] for the answer to a request forwarded without the client's conditionals (see
/// `take_client_validators`): when they match it, the client gets `304 Not Modified` and no
/// body, as the origin would have answered.
fn answer<B>(
    shared: &Shared,
    head: &request::Parts,
    mut parts: response::Parts,
    body: ResponseBody<B>,
    mut status: CacheStatus,
    key: &str,
) -> Response<ResponseBody<B>> {
    if not_modified(parts.status, &parts.headers, head) {
        status.fwd_status = Some(parts.status.as_u16());
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        return pass(shared, parts, ResponseBody::empty(), status, Some(key));
    }
    pass(shared, parts, body, status, Some(key))
}

fn gateway_timeout<B>(shared: &Shared, key: &str) -> Response<ResponseBody<B>> {
    let status = CacheStatus::new(CacheOutcome::OnlyIfCached);
    let mut res = problem_response(
        StatusCode::GATEWAY_TIMEOUT,
        "The request asked for a stored answer only (only-if-cached), and none is usable.",
    );
    shared.report(status, res.headers_mut(), Some(key));
    res.extensions_mut().insert(status);
    res
}

fn bad_gateway<B>(shared: &Shared, outcome: CacheOutcome, key: &str) -> Response<ResponseBody<B>> {
    let mut status = CacheStatus::new(outcome);
    status.detail = Some("upstream-body-failed");
    let mut res = problem_response(StatusCode::BAD_GATEWAY, UPSTREAM_BROKE_OFF);
    shared.report(status, res.headers_mut(), Some(key));
    res.extensions_mut().insert(status);
    res
}

enum Buffered<B: Body> {
    Done(Bytes),
    TooLarge(Bytes, std::pin::Pin<Box<B>>),
    Failed,
}

/// Reads a body up to `limit` bytes; a longer one comes back with what was read so far, so it can
/// still be streamed to the client.
async fn buffer<B: Body<Data = Bytes>>(body: B, limit: usize) -> Buffered<B> {
    let mut body = Box::pin(body);
    if body.size_hint().lower() > limit as u64 {
        return Buffered::TooLarge(Bytes::new(), body);
    }
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut len = 0usize;
    loop {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => break,
            Some(Err(_)) => return Buffered::Failed,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                len += data.len();
                match (&mut first, &mut buf) {
                    (None, None) => first = Some(data),
                    (Some(f), None) => {
                        let mut b =
                            BytesMut::with_capacity(len.min(limit).max(f.len() + data.len()));
                        b.extend_from_slice(f);
                        b.extend_from_slice(&data);
                        first = None;
                        buf = Some(b);
                    }
                    (_, Some(b)) => b.extend_from_slice(&data),
                }
                if len > limit {
                    let so_far = match (first, buf) {
                        (_, Some(b)) => b.freeze(),
                        (Some(f), None) => f,
                        (None, None) => Bytes::new(),
                    };
                    return Buffered::TooLarge(so_far, body);
                }
            }
        }
    }
    Buffered::Done(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// What the request was doing when it called the inner service.
struct Forwarded {
    base: String,
    key: String,
    index: Option<IndexInfo>,
    guard: Option<FlightGuard>,
    outcome: CacheOutcome,
    /// The stale entry being revalidated, and whether the request carries its validators.
    stale: Option<(Entry, bool)>,
}

/// The origin answered the stale entry's conditional request with a `304` whose `ETag` is not
/// the stored one's: a stored answer without an `ETag`, revalidated by `If-Modified-Since` on a
/// server that now sends one (a deploy, or servers behind a load balancer that differ), or an
/// origin that matches `If-None-Match` loosely. That `304` must not refresh the entry (RFC 9111,
/// section 4.3.4), and the client, whose own conditionals it does not satisfy, must not get it:
/// it asked for the whole answer, and the conditional fields were the cache's. The request's
/// body is gone, so the cache cannot ask again without them; the origin has said that nothing
/// changed since what the cache holds, so the client gets that, marked
/// `fwd=stale; fwd-status=304; detail=validator-mismatch`. The entry is dropped, so the next
/// request fetches the whole answer and stores it with the origin's current validator.
async fn not_modified_elsewhere<B>(
    shared: &Shared,
    head: &request::Parts,
    stored: &Stored,
    key: &str,
    now: Wall,
) -> Response<ResponseBody<B>> {
    if let Err(e) = shared.store.inner.remove(key).await {
        shared.store_failed(&e);
    }
    let mut status = CacheStatus::new(CacheOutcome::Stale);
    status.fwd_status = Some(304);
    status.detail = Some("validator-mismatch");
    serve(shared, stored, head, status, now, key)
}

/// Turns the inner answer into the client's: stores it when it may (buffering its body), serves
/// the stale entry on errors where allowed, refreshes it on `304`.
async fn settle<B>(
    shared: &Arc<Shared>,
    head: &request::Parts,
    res: Response<B>,
    mut fwd: Forwarded,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let now = shared.clock.now();
    let (parts, body) = res.into_parts();
    let fwd_status = parts.status.as_u16();
    if let Some((entry, added)) = &fwd.stale {
        let stored = entry.as_response().expect("stale entries are responses");
        if parts.status == StatusCode::NOT_MODIFIED && *added && stored.matches_not_modified(&parts)
        {
            let refreshed = stored.refreshed_head(&parts);
            let mut status = CacheStatus::new(CacheOutcome::Stale);
            status.fwd_status = Some(304);
            return match decide(&shared.cfg, head, &refreshed, now.system()) {
                Ok(decision) => {
                    let new = decision.into_stored(&refreshed, stored.body.clone());
                    let (entry, ok) = shared.put(&fwd.base, fwd.index.as_ref(), new).await;
                    status.stored = ok;
                    let res = serve(
                        shared,
                        entry.as_response().expect("response"),
                        head,
                        status,
                        now,
                        &fwd.key,
                    );
                    if let Some(g) = fwd.guard.take() {
                        g.finish(ok.then_some(entry));
                    }
                    res
                }
                Err(why) => {
                    status.detail = Some(why.as_str());
                    let served = stored.with_headers(refreshed.headers.clone());
                    serve(shared, &served, head, status, now, &fwd.key)
                }
            };
        }
        // Not the stored representation: the client's own conditionals are checked against the
        // one the `304` names (as if it were a full answer with those fields).
        if parts.status == StatusCode::NOT_MODIFIED
            && *added
            && !not_modified(StatusCode::OK, &parts.headers, head)
        {
            return not_modified_elsewhere(shared, head, stored, &fwd.key, now).await;
        }
        if parts.status.is_server_error() && stored.may_serve_on_error(now) {
            let mut status = CacheStatus::new(CacheOutcome::StaleIfError);
            status.fwd_status = Some(fwd_status);
            return serve(shared, stored, head, status, now, &fwd.key);
        }
    }
    let mut status = CacheStatus::new(fwd.outcome);
    status.fwd_status = Some(fwd_status);
    let decision: Decision = match decide(&shared.cfg, head, &parts, now.system()) {
        Ok(d) => d,
        Err(why) => {
            status.detail = Some(why.as_str());
            return answer(
                shared,
                head,
                parts,
                ResponseBody::new(body),
                status,
                &fwd.key,
            );
        }
    };
    match buffer(body, shared.cfg.max_body).await {
        Buffered::Done(bytes) => {
            let stored = decision.into_stored(&parts, bytes.clone());
            let (entry, ok) = shared.put(&fwd.base, fwd.index.as_ref(), stored).await;
            status.stored = ok;
            if let Some(g) = fwd.guard.take() {
                g.finish(ok.then_some(entry));
            }
            answer(
                shared,
                head,
                parts,
                ResponseBody::full(bytes),
                status,
                &fwd.key,
            )
        }
        Buffered::TooLarge(prefix, rest) => {
            status.detail = Some("too-large");
            answer(
                shared,
                head,
                parts,
                ResponseBody::prefixed(prefix, rest),
                status,
                &fwd.key,
            )
        }
        Buffered::Failed => {
            if let Some((entry, _)) = &fwd.stale {
                let stored = entry.as_response().expect("response");
                if stored.may_serve_on_error(now) {
                    let mut status = CacheStatus::new(CacheOutcome::StaleIfError);
                    status.fwd_status = Some(fwd_status);
                    return serve(shared, stored, head, status, now, &fwd.key);
                }
            }
            bad_gateway(shared, fwd.outcome, &fwd.key)
        }
    }
}

/// The whole cached path for `GET` and `HEAD`.
async fn cached<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    mut parts: request::Parts,
    body: ReqB,
    base: BaseKey,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    let bypass = |detail: &'static str| {
        let mut s = CacheStatus::new(CacheOutcome::Bypass);
        s.detail = Some(detail);
        s
    };
    if parts.headers.contains_key(header::RANGE) {
        let res = inner.call(Request::from_parts(parts, body)).await?;
        let (p, b) = res.into_parts();
        return Ok(pass(
            &shared,
            p,
            ResponseBody::new(b),
            bypass("range"),
            None,
        ));
    }
    let base = match base {
        BaseKey::Made(base) => base,
        BaseKey::NotMade => shared.make_key(&parts),
    };
    let Some(base) = base else {
        let res = inner.call(Request::from_parts(parts, body)).await?;
        let (p, b) = res.into_parts();
        return Ok(pass(&shared, p, ResponseBody::new(b), bypass("key"), None));
    };
    let only_if_cached =
        Directives::parse(parts.headers.get_all(header::CACHE_CONTROL)).only_if_cached;
    let landed = shared.landed.load(Ordering::Acquire);
    let lookup = match shared.lookup(&base, &parts.headers).await {
        Ok(l) => l,
        Err(e) => {
            shared.store_failed(&e);
            let res = inner.call(Request::from_parts(parts, body)).await?;
            let (p, b) = res.into_parts();
            return Ok(pass(
                &shared,
                p,
                ResponseBody::new(b),
                bypass("store-unavailable"),
                Some(&base),
            ));
        }
    };
    let now = shared.clock.now();
    let is_head = parts.method == Method::HEAD;
    let (key, index, outcome, stale) = match lookup {
        Lookup::Found { key, entry, index } => {
            let stored = entry.as_response().expect("found entries are responses");
            match stored.freshness(&shared.cfg, &parts, now) {
                Freshness::Fresh => {
                    return Ok(serve(
                        &shared,
                        stored,
                        &parts,
                        CacheStatus::new(CacheOutcome::Hit),
                        now,
                        &key,
                    ));
                }
                Freshness::Unusable => {
                    let outcome = if stored.vary.is_empty() {
                        CacheOutcome::Miss
                    } else {
                        CacheOutcome::VaryMiss
                    };
                    (key, index, outcome, None)
                }
                Freshness::Stale { by_request } => {
                    if only_if_cached {
                        return Ok(gateway_timeout(&shared, &key));
                    }
                    if !by_request && stored.may_serve_while_revalidating(now) {
                        let res = serve(
                            &shared,
                            stored,
                            &parts,
                            CacheStatus::new(CacheOutcome::StaleWhileRevalidate),
                            now,
                            &key,
                        );
                        // Refresh in the background (once: the flight table says whether a
                        // refresh is already running). Without a tokio runtime to spawn on, the
                        // stale answer is still served and the next request refreshes in line.
                        let can_spawn = tokio::runtime::Handle::try_current().is_ok();
                        if !is_head && can_spawn {
                            if let Join::Lead(guard) = shared.join(&key) {
                                let head = head_of(&parts);
                                let key_for_log = key.clone();
                                take_client_validators(&mut parts.headers);
                                let added = stored.add_validators(&mut parts.headers);
                                let fut = inner.call(Request::from_parts(parts, body));
                                let shared2 = shared.clone();
                                let fwd = Forwarded {
                                    base,
                                    key,
                                    index,
                                    guard: Some(guard),
                                    outcome: CacheOutcome::Stale,
                                    stale: Some((entry.clone(), added)),
                                };
                                // Bounded like a coalesced wait: a refresh that hangs would
                                // hold the flight (every later miss waiting on it, no other
                                // refresh started) for as long as it hangs. Dropped, its guard
                                // ends the flight. Its answer was counted when the stale one
                                // was served, so storing it reports nothing (`QUIET`).
                                let deadline = shared.cfg.coalesce_wait;
                                tokio::spawn(QUIET.scope(true, async move {
                                    let refresh = async {
                                        if let Ok(res) = fut.await {
                                            // Nobody reads the refreshed answer; what mattered
                                            // was storing it.
                                            drop(settle(&shared2, &head, res, fwd).await);
                                        }
                                    };
                                    if tokio::time::timeout(deadline, refresh).await.is_err() {
                                        tracing::warn!(
                                            target: "bulwark::cache",
                                            cache = shared2.name(),
                                            key = &*Redactor::key(&key_for_log),
                                            "stale-while-revalidate refresh timed out"
                                        );
                                    }
                                }));
                            }
                        }
                        return Ok(res);
                    }
                    let outcome = if by_request {
                        CacheOutcome::Request
                    } else {
                        CacheOutcome::Stale
                    };
                    (key, index, outcome, Some(entry.clone()))
                }
            }
        }
        Lookup::Miss { key, index } => {
            let outcome = if index.is_some() {
                CacheOutcome::VaryMiss
            } else {
                CacheOutcome::Miss
            };
            (key, index, outcome, None)
        }
    };
    if only_if_cached {
        return Ok(gateway_timeout(&shared, &key));
    }
    if is_head {
        // HEAD is answered from the stored GET; it never fills the cache itself.
        let res = inner.call(Request::from_parts(parts, body)).await?;
        let (p, b) = res.into_parts();
        let mut s = CacheStatus::new(outcome);
        s.detail = Some("head");
        return Ok(pass(&shared, p, ResponseBody::new(b), s, Some(&key)));
    }
    let restricted = is_restricted(&shared.cfg, &parts.headers);
    let guard = if restricted {
        // Answers to requests with credentials are rarely shareable: never make others wait.
        None
    } else {
        match shared.join(&key) {
            Join::Lead(g) if shared.landed.load(Ordering::Acquire) != landed => {
                // A flight landed since our lookup, perhaps the one for this key, between our
                // miss and our joining: look again before calling.
                if let Ok(Lookup::Found { entry, .. }) = shared.lookup(&base, &parts.headers).await
                {
                    if let Some(res) = serve_collapsed(&shared, &entry, &parts, &key) {
                        g.finish(Some(entry));
                        return Ok(res);
                    }
                }
                Some(g)
            }
            Join::Lead(g) => Some(g),
            Join::Wait(mut rx) => {
                let waited = tokio::time::timeout(
                    shared.cfg.coalesce_wait,
                    rx.wait_for(|s| matches!(s, FlightState::Done(_))),
                )
                .await;
                if let Ok(Ok(state)) = waited {
                    let got = match &*state {
                        FlightState::Done(Some(e)) => Some(e.clone()),
                        _ => None,
                    };
                    drop(state);
                    if let Some(res) = got.and_then(|e| serve_collapsed(&shared, &e, &parts, &key))
                    {
                        return Ok(res);
                    }
                }
                // The leader's answer was not shareable (or too slow): call on our own.
                None
            }
        }
    };
    // The client's own head: its conditional fields decide whether it gets a 304. They are
    // taken off the forwarded request, so that the answer can be stored (see
    // `take_client_validators`); the stale entry's own validators go in their place.
    let head = head_of(&parts);
    take_client_validators(&mut parts.headers);
    let added = match &stale {
        Some(e) => e
            .as_response()
            .expect("response")
            .add_validators(&mut parts.headers),
        None => false,
    };
    let fwd = Forwarded {
        base,
        key,
        index,
        guard,
        outcome,
        stale: stale.map(|e| (e, added)),
    };
    match inner.call(Request::from_parts(parts, body)).await {
        Ok(res) => Ok(settle(&shared, &head, res, fwd).await),
        Err(e) => {
            if let Some((entry, _)) = &fwd.stale {
                let stored = entry.as_response().expect("response");
                let now = shared.clock.now();
                if stored.may_serve_on_error(now) {
                    tracing::warn!(
                        target: "bulwark::cache",
                        key = &*Redactor::key(&fwd.key),
                        "inner service failed; serving stale (stale-if-error)"
                    );
                    return Ok(serve(
                        &shared,
                        stored,
                        &head,
                        CacheStatus::new(CacheOutcome::StaleIfError),
                        now,
                        &fwd.key,
                    ));
                }
            }
            Err(e)
        }
    }
}
