//! Every metric bulwark records, through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`, on by default; without it nothing is recorded and nothing is paid).
//! Install any `metrics` recorder (e.g. `metrics-exporter-prometheus`) to collect them.
//!
//! The metrics recorded per request keep their handles from the **global** recorder
//! (`metrics::set_global_recorder`, which exporters' `install` calls) instead of registering
//! on every request, which cost more than some layers. A layer built before the recorder was
//! installed records into it all the same; a thread-local recorder (`with_local_recorder`, as
//! in tests) gets everything recorded under it, registered per use. A kept handle is registered
//! again once it is a second old, so an exporter's idle timeout (which drops a metric that has
//! not changed for that long) never leaves a layer counting into a dropped metric, as long as
//! that timeout is over a second.
//!
//! Every label has a bounded set of values: layer and breaker names are configuration, kinds
//! and reasons are fixed vocabularies, and routes are templates (axum's `MatchedPath`), never raw
//! paths, keys or client addresses.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `http_server_request_duration_seconds` | histogram (seconds) | `method` (or `_OTHER`), `route` (template, empty when unknown), `status_class` (`2xx`..., or `error` when the request ended without a response: the inner service failed or the request was cancelled) |
//! | `bulwark_rejections_total` | counter | `rejection` ([`Rejection::kind`](crate::Rejection::kind)) |
//! | `bulwark_store_errors_total` | counter | `store`, `operation` |
//! | `bulwark_rate_limit_requests_total` | counter | `limiter`, `decision` (`allowed`, `rejected`; decisions made without the store under a failure policy too) |
//! | `bulwark_rate_limit_store_fallbacks_total` | counter | `limiter`, `policy` (`local`, `fail_open`, `fail_closed`) |
//! | `bulwark_rate_limit_overflow_total` | counter | `limiter` |
//! | `bulwark_circuit_breaker_state` | gauge | `breaker`; 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed (not set by per-key breakers) |
//! | `bulwark_circuit_breaker_rejections_total` | counter | `breaker` (a per-key breaker counts under its layer's name): calls refused while open, forced open, or half-open with every probe out |
//! | `bulwark_circuit_breaker_transitions_total` | counter | `breaker` (a per-key breaker counts under its layer's name), `to` ([`CircuitState::as_str`](crate::circuit_breaker::CircuitState::as_str)) |
//! | `bulwark_fallbacks_total` | counter | `reason` ([`FallbackReason`](crate::fallback::FallbackReason)), `outcome` (`answered`, `failed`) |
//! | `bulwark_cache_requests_total` | counter | `cache` (its `Cache-Status` name), `outcome` ([`CacheOutcome::as_str`](crate::cache::CacheOutcome::as_str): `hit`, `miss`, `stale`, `bypass`, ...) |
//! | `bulwark_cache_stored_total` | counter | `cache` |
//! | `bulwark_cache_evictions_total` | counter | `store` (`memory`), `cause` (`size`, `expired`) |
//! | `bulwark_idempotency_requests_total` | counter | `outcome` (`new`, `replayed`, `in_flight`, `mismatch`, `not_replayable`, `released`, `lease_lost`, `store_error`) |
//! | `bulwark_flag_evaluations_total` | counter | `flag` (first 256 flag names, then `_other`; `_unknown` for undefined flags), `result` (`on`, `off`), `reason` ([`Reason::otel_value`](crate::flag::Reason::otel_value)) |
//! | `bulwark_flag_reloads_total` | counter | `source` (`file`, `redis`) |
//! | `bulwark_flag_reload_errors_total` | counter | `source` (`file`, `redis`); the last good flags were kept |
//!
//! For a Prometheus histogram (rather than a summary) of request durations, give the exporter
//! the OpenTelemetry bucket boundaries: 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
//! 1, 2.5, 5, 7.5, 10 seconds (the shop example does).

/// One rejection answered.
///
/// Rejections are what an attacker makes us produce, so their counters are [`Held`] for every
/// kind, not registered per rejection as `counter!` would.
#[inline]
pub(crate) fn rejection(kind: &'static str) {
    #[cfg(feature = "metrics")]
    {
        static COUNTERS: std::sync::LazyLock<Vocabulary<&str>> = std::sync::LazyLock::new(|| {
            Vocabulary::new(crate::Rejection::KINDS, |kind| {
                metrics::Key::from_parts(
                    "bulwark_rejections_total",
                    vec![metrics::Label::from_static_parts("rejection", kind)],
                )
            })
        });
        COUNTERS.increment(kind, || {
            metrics::counter!("bulwark_rejections_total", "rejection" => kind).increment(1);
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
}

/// The counters of one metric over a fixed vocabulary of label values (`T`), each [`Held`].
#[cfg(feature = "metrics")]
struct Vocabulary<T>(Vec<(T, Held<metrics::Counter>)>);

#[cfg(feature = "metrics")]
impl<T: Copy + PartialEq> Vocabulary<T> {
    fn new(words: impl IntoIterator<Item = T>, key: impl Fn(T) -> metrics::Key) -> Self {
        Self(words.into_iter().map(|w| (w, Held::new(&key(w)))).collect())
    }

    /// Counts one for `word`; `otherwise` if it is not in the vocabulary.
    #[inline]
    fn increment(&self, word: T, otherwise: impl FnOnce()) {
        match self.0.iter().find(|(w, _)| *w == word) {
            Some((_, counter)) => counter.increment(1),
            None => otherwise(),
        }
    }
}

/// One store operation failed.
#[inline]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn store_error(store: &'static str, operation: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("bulwark_store_errors_total", "store" => store, "operation" => operation)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (store, operation);
}

/// A breaker entered `state` (also its gauge's value at creation).
#[inline]
pub(crate) fn breaker_state(
    name: &std::sync::Arc<str>,
    state: crate::circuit_breaker::CircuitState,
) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("bulwark_circuit_breaker_state", "breaker" => name.to_string())
        .set(state.as_gauge());
    #[cfg(not(feature = "metrics"))]
    let _ = (name, state);
}

/// A breaker moved to `to`; its state gauge is set too if `gauge`.
#[inline]
pub(crate) fn breaker_transition(
    name: &std::sync::Arc<str>,
    to: crate::circuit_breaker::CircuitState,
    gauge: bool,
) {
    if gauge {
        breaker_state(name, to);
    }
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "bulwark_circuit_breaker_transitions_total",
        "breaker" => name.to_string(),
        "to" => to.as_str()
    )
    .increment(1);
}

/// The rejection counter of one breaker, its key built once: an open breaker may refuse many
/// requests a second. A per-key layer's breakers share their layer's (a clone).
#[derive(Clone)]
pub(crate) struct BreakerRejections {
    #[cfg(feature = "metrics")]
    counter: std::sync::Arc<Held<metrics::Counter>>,
}

impl BreakerRejections {
    /// The counter of the breaker named `breaker`.
    pub(crate) fn new(breaker: &std::sync::Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        {
            Self {
                counter: std::sync::Arc::new(Held::new(&metrics::Key::from_parts(
                    "bulwark_circuit_breaker_rejections_total",
                    vec![metrics::Label::new("breaker", breaker.clone())],
                ))),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = breaker;
            Self {}
        }
    }

    /// One call refused.
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    #[inline]
    pub(crate) fn count(&self) {
        #[cfg(feature = "metrics")]
        self.counter.increment(1);
    }
}

/// The counters of one rate limiter. Labels are the limiter's name and fixed words, never a
/// request's key. The metric keys are built once per limiter (and on rename), so counting a
/// decision allocates nothing.
pub(crate) struct RateLimitMetrics {
    #[cfg(feature = "metrics")]
    counters: Box<[Held<metrics::Counter>; 6]>,
}

impl RateLimitMetrics {
    const ALLOWED: usize = 0;
    const REJECTED: usize = 1;
    const FALLBACK_LOCAL: usize = 2;
    const FALLBACK_OPEN: usize = 3;
    const FALLBACK_CLOSED: usize = 4;
    const OVERFLOW: usize = 5;

    /// The counters of the limiter named `limiter`.
    pub(crate) fn new(limiter: &std::sync::Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        {
            use metrics::{Key, Label};
            let label = || Label::new("limiter", limiter.clone());
            let with = |name: &'static str, k: &'static str, v: &'static str| {
                Held::new(&Key::from_parts(
                    name,
                    vec![label(), Label::from_static_parts(k, v)],
                ))
            };
            let requests = "bulwark_rate_limit_requests_total";
            let fallbacks = "bulwark_rate_limit_store_fallbacks_total";
            Self {
                counters: Box::new([
                    with(requests, "decision", "allowed"),
                    with(requests, "decision", "rejected"),
                    with(fallbacks, "policy", "local"),
                    with(fallbacks, "policy", "fail_open"),
                    with(fallbacks, "policy", "fail_closed"),
                    Held::new(&Key::from_parts(
                        "bulwark_rate_limit_overflow_total",
                        vec![label()],
                    )),
                ]),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = limiter;
            Self {}
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    fn count(&self, which: usize, n: u64) {
        #[cfg(feature = "metrics")]
        self.counters[which].increment(n);
        #[cfg(not(feature = "metrics"))]
        let _ = (which, n);
    }

    /// One request allowed.
    #[inline]
    pub(crate) fn allowed(&self) {
        self.count(Self::ALLOWED, 1);
    }

    /// One request rejected (quota exhausted, or a cost above the burst).
    #[inline]
    pub(crate) fn rejected(&self) {
        self.count(Self::REJECTED, 1);
    }

    /// One decision made without the shared store, following `policy`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn store_fallback(&self, policy: StoreFallback) {
        let which = match policy {
            StoreFallback::Local => Self::FALLBACK_LOCAL,
            StoreFallback::FailOpen => Self::FALLBACK_OPEN,
            StoreFallback::FailClosed => Self::FALLBACK_CLOSED,
        };
        self.count(which, 1);
    }

    /// `n` requests sent to the shared overflow bucket of a full key table.
    pub(crate) fn overflow(&self, n: u64) {
        self.count(Self::OVERFLOW, n);
    }
}

/// What a rate limiter did without its shared store (the `policy` label).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum StoreFallback {
    Local,
    FailOpen,
    FailClosed,
}

/// One HTTP request served, for the `http_server_request_duration_seconds` histogram;
/// `status` is `None` when the request ended without a response (status class `error`).
///
/// `keys` keeps the [`Held`] histograms of the routes seen, so a request builds no label set and
/// allocates nothing once its route, method and status class have been seen.
#[inline]
pub(crate) fn http_request(
    keys: &HttpKeys,
    method: HttpMethod,
    route: &str,
    status: Option<http::StatusCode>,
    elapsed: std::time::Duration,
) {
    #[cfg(feature = "metrics")]
    {
        let class = status.map_or(STATUS_CLASSES.len() - 1, |s| {
            usize::from((s.as_u16() / 100).clamp(1, 5) - 1)
        });
        let seconds = elapsed.as_secs_f64();
        let held = || Held::new(&http_key(method, route, class));
        let slot = method.slot() * STATUS_CLASSES.len() + class;
        // A request no route matched (a 404 flood, say) has its own slots: no map lookup, and
        // no comparison of empty strings, whose `memcmp` reads through a dangling pointer
        // (an assisted masked load on x86, ~90 ns).
        if route.is_empty() {
            keys.unrouted.get_or_init(HttpKeys::slots)[slot]
                .get_or_init(held)
                .record(seconds);
            return;
        }
        // The common case: the route is known; no reference count is touched.
        if let Some(slots) = keys.routes.load().get(route) {
            slots[slot].get_or_init(held).record(seconds);
            return;
        }
        match keys.add(route) {
            Some(slots) => slots[slot].get_or_init(held).record(seconds),
            None => metrics::with_recorder(|r| {
                <metrics::Histogram as Handle>::register(r, &http_key(method, route, class))
                    .record(seconds);
            }),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (keys, method, route, status, elapsed);
}

/// A request's method as OpenTelemetry reports it: one of the nine standard methods, or
/// `_OTHER`. The request log's `http.request.method` field and the duration histogram's
/// `method` label and slot all come from this one table, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpMethod(u8);

impl HttpMethod {
    /// The labels, by index; `_OTHER` last.
    const LABELS: [&'static str; 10] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
    ];

    /// `_OTHER`: a method that is not one of the standard nine.
    pub(crate) const OTHER: Self = Self(9);

    /// The method of a request.
    pub(crate) fn of(m: &http::Method) -> Self {
        use http::Method;
        Self(match *m {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::CONNECT => 5,
            Method::OPTIONS => 6,
            Method::TRACE => 7,
            Method::PATCH => 8,
            _ => return Self::OTHER,
        })
    }

    /// The OpenTelemetry value: the method's name, or `_OTHER`.
    pub(crate) fn label(self) -> &'static str {
        Self::LABELS[usize::from(self.0)]
    }

    /// Its index among [`HttpKeys`]' slots.
    #[cfg(feature = "metrics")]
    fn slot(self) -> usize {
        usize::from(self.0)
    }
}

#[cfg(feature = "metrics")]
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

#[cfg(feature = "metrics")]
type HttpSlots = std::sync::Arc<[std::sync::OnceLock<Held<metrics::Histogram>>]>;

#[cfg(feature = "metrics")]
fn http_key(method: HttpMethod, route: &str, class: usize) -> metrics::Key {
    metrics::Key::from_parts(
        "http_server_request_duration_seconds",
        vec![
            metrics::Label::new("method", method.label()),
            metrics::Label::new("route", route.to_owned()),
            metrics::Label::new("status_class", STATUS_CLASSES[class]),
        ],
    )
}

/// `key` in the form a recorder can keep without copying it: recorders that store keys
/// (metrics-exporter-prometheus does, on every registration) call `Key::to_retained`, which
/// copies owned labels and names into new shared allocations each time. Keys kept by a layer
/// are made shared once, here, so that each registration is a reference-count increment.
#[cfg(feature = "metrics")]
fn retained(key: &metrics::Key) -> metrics::Key {
    key.to_retained()
}

/// A metric's key with its handle, kept between requests.
///
/// Registering a metric with a recorder on every request costs a registry lookup: with
/// metrics-exporter-prometheus about 400 instructions for a counter and 800 for the
/// three-label request histogram (its `Key` comparison sorts the labels), more than the rest of
/// some layers. So the handle the **global** recorder gives is kept and reused, as the `metrics`
/// documentation recommends; only handles of the global recorder, because it lives for the
/// whole process while a thread-local one (tests) may be dropped and another made at its address.
/// A kept handle is registered again once it is a second old: an exporter may drop a metric that
/// has not changed for its idle timeout, and a handle kept past that would count into nothing.
/// Any metric that was idle that long is at least a second old, so its first use after the gap
/// registers it again (an idle timeout under one second could lose up to a second of counts).
#[cfg(feature = "metrics")]
pub(crate) struct Held<H> {
    key: metrics::Key,
    handle: arc_swap::ArcSwapOption<Registration<H>>,
}

#[cfg(feature = "metrics")]
struct Registration<H> {
    handle: H,
    /// When it is to be registered again (a comparison per use, not a subtraction).
    until: std::time::Instant,
}

/// What a [`Held`] keeps: a counter or a histogram handle.
#[cfg(feature = "metrics")]
pub(crate) trait Handle: Sized {
    fn register(recorder: &dyn metrics::Recorder, key: &metrics::Key) -> Self;
}

#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

#[cfg(feature = "metrics")]
impl Handle for metrics::Counter {
    fn register(recorder: &dyn metrics::Recorder, key: &metrics::Key) -> Self {
        recorder.register_counter(key, &METADATA)
    }
}

#[cfg(feature = "metrics")]
impl Handle for metrics::Histogram {
    fn register(recorder: &dyn metrics::Recorder, key: &metrics::Key) -> Self {
        recorder.register_histogram(key, &METADATA)
    }
}

#[cfg(feature = "metrics")]
impl<H: Handle> Held<H> {
    /// A kept handle is registered again once it is this old.
    const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

    pub(crate) fn new(key: &metrics::Key) -> Self {
        Self {
            key: retained(key),
            handle: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Runs `f` with the current recorder's handle for this metric.
    #[inline]
    fn with(&self, f: impl FnOnce(&H)) {
        metrics::with_recorder(|recorder| {
            if !global::is(recorder) {
                return f(&H::register(recorder, &self.key));
            }
            let now = std::time::Instant::now();
            if let Some(kept) = &*self.handle.load() {
                if now < kept.until {
                    return f(&kept.handle);
                }
            }
            let handle = H::register(recorder, &self.key);
            f(&handle);
            let until = now + Self::REFRESH;
            self.handle
                .store(Some(std::sync::Arc::new(Registration { handle, until })));
        });
    }
}

#[cfg(feature = "metrics")]
impl Held<metrics::Counter> {
    #[inline]
    pub(crate) fn increment(&self, n: u64) {
        self.with(|c| c.increment(n));
    }
}

#[cfg(feature = "metrics")]
impl Held<metrics::Histogram> {
    #[inline]
    pub(crate) fn record(&self, value: f64) {
        self.with(|h| h.record(value));
    }
}

/// Which recorder is the global one.
///
/// `metrics` says which recorder is current, not whether it is the global one. A thread that
/// never set a local recorder sees the global one (or the no-op recorder, which is zero-sized,
/// until one is installed), so a thread of our own is asked, once it is installed: the global
/// recorder is set once and lives until the process ends, so its address names it for good.
/// Asking blocks the caller while a thread starts (tens of microseconds): once when the global
/// recorder is first seen, and at most once a second while only a local recorder is in use.
#[cfg(feature = "metrics")]
mod global {
    use std::sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    };

    static ADDRESS: OnceLock<usize> = OnceLock::new();
    /// When the next look may be taken, in milliseconds from [`START`] (at most one a second).
    static NEXT_LOOK: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<std::time::Instant> = OnceLock::new();

    fn address(recorder: &dyn metrics::Recorder) -> usize {
        std::ptr::from_ref(recorder).cast::<()>() as usize
    }

    /// Whether `recorder` is the global recorder. A zero-sized recorder (the no-op one) never
    /// is: zero-sized values need not have addresses of their own.
    #[inline]
    pub(super) fn is(recorder: &dyn metrics::Recorder) -> bool {
        if let Some(global) = ADDRESS.get() {
            return *global == address(recorder) && std::mem::size_of_val(recorder) > 0;
        }
        if std::mem::size_of_val(recorder) == 0 {
            return false;
        }
        look();
        ADDRESS.get() == Some(&address(recorder))
    }

    /// Asks a new thread (which has no local recorder) for the global recorder, at most once a
    /// second: until it is installed, a non-zero-sized recorder seen here is a local one.
    #[cold]
    fn look() {
        let start = START.get_or_init(std::time::Instant::now);
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = NEXT_LOOK.load(Ordering::Relaxed);
        if now < next
            || NEXT_LOOK
                .compare_exchange(next, now + 1_000, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let found = std::thread::Builder::new()
            .name("bulwark-metrics".into())
            .spawn(|| {
                metrics::with_recorder(|r| (std::mem::size_of_val(r) > 0).then(|| address(r)))
            })
            .ok()
            .and_then(|t| t.join().ok())
            .flatten();
        if let Some(found) = found {
            let _ = ADDRESS.set(found);
        }
    }
}

/// The request-duration histograms by route ([`Held`]), one per method and status class, made
/// on first use. Read without a lock (a copy-on-write map swapped whole when a route is first
/// seen); bounded at [`HttpKeys::MAX_ROUTES`] routes, past which keys are built per request.
#[derive(Default)]
pub(crate) struct HttpKeys {
    #[cfg(feature = "metrics")]
    /// Route templates from the application's router (at most [`HttpKeys::MAX_ROUTES`]).
    routes: arc_swap::ArcSwap<
        std::collections::HashMap<Box<str>, HttpSlots, crate::name_hash::NameHash>,
    >,
    #[cfg(feature = "metrics")]
    grow: std::sync::Mutex<()>,
    /// The slots of requests no route matched.
    #[cfg(feature = "metrics")]
    unrouted: std::sync::OnceLock<HttpSlots>,
}

impl HttpKeys {
    /// Routes are templates (`/payments/{id}`), so a service has a few dozen; the bound only
    /// guards against a router that reports raw paths.
    #[cfg(feature = "metrics")]
    const MAX_ROUTES: usize = 1_024;

    /// One route's slots: a histogram handle per method (and `_OTHER`) and status class, each
    /// registered on first use.
    #[cfg(feature = "metrics")]
    fn slots() -> HttpSlots {
        (0..HttpMethod::LABELS.len() * STATUS_CLASSES.len())
            .map(|_| std::sync::OnceLock::new())
            .collect()
    }

    /// Adds `route` (first seen), unless the bound is reached.
    #[cfg(feature = "metrics")]
    fn add(&self, route: &str) -> Option<HttpSlots> {
        let _grow = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.routes.load_full();
        if let Some(slots) = current.get(route) {
            return Some(slots.clone());
        }
        if current.len() >= Self::MAX_ROUTES {
            return None;
        }
        let slots = Self::slots();
        let mut next = (*current).clone();
        next.insert(route.into(), slots.clone());
        self.routes.store(std::sync::Arc::new(next));
        Some(slots)
    }
}

impl std::fmt::Debug for HttpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpKeys").finish_non_exhaustive()
    }
}

/// One fallback ran: `outcome` is `answered`, or `failed` when the original result went out.
#[inline]
pub(crate) fn fallback(reason: crate::fallback::FallbackReason, answered: bool) {
    #[cfg(feature = "metrics")]
    {
        use crate::fallback::FallbackReason;
        fn outcome(answered: bool) -> &'static str {
            if answered { "answered" } else { "failed" }
        }
        // A failing dependency makes every request a fallback: held, like rejections.
        static COUNTERS: std::sync::LazyLock<Vocabulary<(FallbackReason, bool)>> =
            std::sync::LazyLock::new(|| {
                let all = FallbackReason::ALL
                    .iter()
                    .flat_map(|&r| [(r, true), (r, false)]);
                Vocabulary::new(all, |(reason, answered)| {
                    metrics::Key::from_parts(
                        "bulwark_fallbacks_total",
                        vec![
                            metrics::Label::from_static_parts("reason", reason.as_str()),
                            metrics::Label::from_static_parts("outcome", outcome(answered)),
                        ],
                    )
                })
            });
        COUNTERS.increment((reason, answered), || {
            metrics::counter!(
                "bulwark_fallbacks_total",
                "reason" => reason.as_str(),
                "outcome" => outcome(answered)
            )
            .increment(1);
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (reason, answered);
}

/// The counters of one cache layer: `bulwark_cache_requests_total` per outcome and
/// `bulwark_cache_stored_total`, labelled with the cache's name. The metric keys are built once
/// per layer, so counting a request allocates nothing.
pub(crate) struct CacheMetrics {
    #[cfg(feature = "metrics")]
    counters: Box<[Held<metrics::Counter>]>,
}

impl CacheMetrics {
    /// The counters of the cache named `cache`; `outcomes` are the `outcome` label values, in the
    /// order [`request`](Self::request) is called with.
    pub(crate) fn new(cache: &std::sync::Arc<str>, outcomes: &[&'static str]) -> Self {
        #[cfg(feature = "metrics")]
        {
            use metrics::{Key, Label};
            let label = || Label::new("cache", cache.clone());
            let mut counters: Vec<_> = outcomes
                .iter()
                .map(|o| {
                    Held::new(&Key::from_parts(
                        "bulwark_cache_requests_total",
                        vec![label(), Label::from_static_parts("outcome", o)],
                    ))
                })
                .collect();
            counters.push(Held::new(&Key::from_parts(
                "bulwark_cache_stored_total",
                vec![label()],
            )));
            Self {
                counters: counters.into_boxed_slice(),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (cache, outcomes);
            Self {}
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    #[inline]
    fn count(&self, which: usize) {
        #[cfg(feature = "metrics")]
        if let Some(counter) = self.counters.get(which) {
            counter.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = which;
    }

    /// One request passed through the cache, with the outcome at index `outcome` of the list the
    /// counters were made with.
    #[inline]
    pub(crate) fn request(&self, outcome: usize) {
        self.count(outcome);
    }

    /// One answer stored.
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    #[inline]
    pub(crate) fn stored(&self) {
        #[cfg(feature = "metrics")]
        self.count(self.counters.len() - 1);
    }
}

/// One cache entry evicted by its store.
#[inline]
pub(crate) fn cache_evicted(store: &'static str, cause: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("bulwark_cache_evictions_total", "store" => store, "cause" => cause)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (store, cause);
}

/// One keyed request's outcome in the idempotency layer.
#[inline]
pub(crate) fn idempotency(outcome: crate::idempotency::Outcome) {
    #[cfg(feature = "metrics")]
    {
        use crate::idempotency::Outcome;
        static COUNTERS: std::sync::LazyLock<Vocabulary<Outcome>> =
            std::sync::LazyLock::new(|| {
                Vocabulary::new(Outcome::ALL, |outcome| {
                    metrics::Key::from_parts(
                        "bulwark_idempotency_requests_total",
                        vec![metrics::Label::from_static_parts(
                            "outcome",
                            outcome.as_str(),
                        )],
                    )
                })
            });
        COUNTERS.increment(outcome, || {
            metrics::counter!(
                "bulwark_idempotency_requests_total",
                "outcome" => outcome.as_str()
            )
            .increment(1);
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// The evaluation counters of one defined flag, [`Held`] from when the flags snapshot is built,
/// so counting an evaluation allocates nothing; a recorder installed after the flags were
/// defined still sees them.
pub(crate) struct FlagCounters {
    #[cfg(feature = "metrics")]
    counters: Box<[Held<metrics::Counter>]>,
}

#[cfg(feature = "metrics")]
const FLAG_RESULTS: [(bool, crate::flag::Reason); 8] = {
    use crate::flag::Reason;
    [
        (true, Reason::Static),
        (false, Reason::Disabled),
        (true, Reason::TargetingMatch),
        (false, Reason::TargetingMatch),
        (true, Reason::Split),
        (false, Reason::Split),
        (true, Reason::Default),
        (false, Reason::Default),
    ]
};

impl FlagCounters {
    pub(crate) fn new(label: &std::sync::Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        {
            let counters = FLAG_RESULTS
                .iter()
                .map(|&(enabled, reason)| {
                    Held::new(&metrics::Key::from_parts(
                        "bulwark_flag_evaluations_total",
                        vec![
                            metrics::Label::new("flag", label.clone()),
                            metrics::Label::new("result", if enabled { "on" } else { "off" }),
                            metrics::Label::new("reason", reason.otel_value()),
                        ],
                    ))
                })
                .collect();
            Self { counters }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = label;
            Self {}
        }
    }

    /// One evaluation of this flag.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    pub(crate) fn record(&self, enabled: bool, reason: crate::flag::Reason) {
        #[cfg(feature = "metrics")]
        match FLAG_RESULTS.iter().position(|&r| r == (enabled, reason)) {
            Some(i) => self.counters[i].increment(1),
            None => flag_evaluation(None, enabled, reason.otel_value()),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (enabled, reason);
    }
}

/// One feature-flag evaluation. `label` is the flag's bounded label (`None` for a flag that
/// is not defined, counted as `_unknown` so arbitrary names cannot grow the label set).
#[inline]
pub(crate) fn flag_evaluation(
    label: Option<&std::sync::Arc<str>>,
    enabled: bool,
    reason: &'static str,
) {
    #[cfg(feature = "metrics")]
    {
        let flag: metrics::SharedString = match label {
            Some(l) => l.clone().into(),
            None => metrics::SharedString::const_str("_unknown"),
        };
        metrics::counter!(
            "bulwark_flag_evaluations_total",
            "flag" => flag,
            "result" => if enabled { "on" } else { "off" },
            "reason" => reason
        )
        .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (label, enabled, reason);
}

/// One flag reload from `source` (`file`, `redis`): applied, or failed (last flags kept).
#[inline]
pub(crate) fn flag_reload(source: &'static str, ok: bool) {
    #[cfg(feature = "metrics")]
    if ok {
        metrics::counter!("bulwark_flag_reloads_total", "source" => source).increment(1);
    } else {
        metrics::counter!("bulwark_flag_reload_errors_total", "source" => source).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (source, ok);
}

#[cfg(test)]
mod tests {
    use super::HttpMethod;
    use http::Method;

    /// Each standard method's index names that method; anything else is `_OTHER`.
    #[test]
    fn a_method_is_labelled_by_its_own_name() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::CONNECT,
            Method::OPTIONS,
            Method::TRACE,
            Method::PATCH,
        ] {
            assert_eq!(HttpMethod::of(&m).label(), m.as_str());
            assert_ne!(HttpMethod::of(&m), HttpMethod::OTHER);
        }
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(HttpMethod::of(&purge), HttpMethod::OTHER);
        assert_eq!(HttpMethod::OTHER.label(), "_OTHER");
    }
}
