//! Every metric bulwark records, through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`, on by default; without it nothing is recorded and nothing is paid).
//! Install any `metrics` recorder (e.g. `metrics-exporter-prometheus`) to collect them.
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
/// Rejections are what an attacker makes us produce, so their counter's keys are built once
/// (in shared form, see [`retained`]) for every kind, not per rejection as `counter!` would.
#[inline]
pub(crate) fn rejection(kind: &'static str) {
    #[cfg(feature = "metrics")]
    {
        static KEYS: std::sync::LazyLock<Vec<(&'static str, metrics::Key)>> =
            std::sync::LazyLock::new(|| {
                crate::Rejection::KINDS
                    .iter()
                    .map(|&kind| (kind, rejection_key(kind)))
                    .collect()
            });
        static METADATA: metrics::Metadata<'static> =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let count = |key: &metrics::Key| {
            metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
        };
        match KEYS.iter().find(|(k, _)| *k == kind) {
            Some((_, key)) => count(key),
            None => count(&rejection_key(kind)),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
}

#[cfg(feature = "metrics")]
fn rejection_key(kind: &'static str) -> metrics::Key {
    retained(&metrics::Key::from_parts(
        "bulwark_rejections_total",
        vec![metrics::Label::from_static_parts("rejection", kind)],
    ))
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
    key: std::sync::Arc<metrics::Key>,
}

impl BreakerRejections {
    /// The counter of the breaker named `breaker`.
    pub(crate) fn new(breaker: &std::sync::Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        {
            Self {
                key: std::sync::Arc::new(retained(&metrics::Key::from_parts(
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
        metrics::with_recorder(|r| {
            r.register_counter(&self.key, &BREAKER_METADATA)
                .increment(1);
        });
    }
}

#[cfg(feature = "metrics")]
static BREAKER_METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The counters of one rate limiter. Labels are the limiter's name and fixed words, never a
/// request's key. The metric keys are built once per limiter (and on rename), so counting a
/// decision allocates nothing.
pub(crate) struct RateLimitMetrics {
    #[cfg(feature = "metrics")]
    keys: Box<[metrics::Key; 6]>,
}

#[cfg(feature = "metrics")]
static RATE_LIMIT_METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

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
                retained(&Key::from_parts(
                    name,
                    vec![label(), Label::from_static_parts(k, v)],
                ))
            };
            let requests = "bulwark_rate_limit_requests_total";
            let fallbacks = "bulwark_rate_limit_store_fallbacks_total";
            Self {
                keys: Box::new([
                    with(requests, "decision", "allowed"),
                    with(requests, "decision", "rejected"),
                    with(fallbacks, "policy", "local"),
                    with(fallbacks, "policy", "fail_open"),
                    with(fallbacks, "policy", "fail_closed"),
                    retained(&Key::from_parts(
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
        metrics::with_recorder(|r| {
            r.register_counter(&self.keys[which], &RATE_LIMIT_METADATA)
                .increment(n);
        });
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
/// `keys` caches the metric keys of the routes seen, so a request builds no label set and
/// allocates nothing once its route, method and status class have been seen.
#[inline]
pub(crate) fn http_request(
    keys: &HttpKeys,
    method: &'static str,
    route: &str,
    status: Option<http::StatusCode>,
    elapsed: std::time::Duration,
) {
    #[cfg(feature = "metrics")]
    {
        static METADATA: metrics::Metadata<'static> =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let class = status.map_or(STATUS_CLASSES.len() - 1, |s| {
            usize::from((s.as_u16() / 100).clamp(1, 5) - 1)
        });
        let record = |key: &metrics::Key| {
            metrics::with_recorder(|r| r.register_histogram(key, &METADATA))
                .record(elapsed.as_secs_f64());
        };
        let slot = HTTP_METHODS
            .iter()
            .position(|m| *m == method)
            .map_or(HTTP_METHODS.len(), |i| i)
            * STATUS_CLASSES.len()
            + class;
        // The common case: the route is known; no reference count is touched.
        if let Some(slots) = keys.routes.load().get(route) {
            record(slots[slot].get_or_init(|| http_key(method, route, class)));
            return;
        }
        match keys.add(route) {
            Some(slots) => record(slots[slot].get_or_init(|| http_key(method, route, class))),
            None => record(&http_key(method, route, class)),
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (keys, method, route, status, elapsed);
}

/// The methods with a slot in [`HttpKeys`]; any other (`_OTHER`) takes the last one.
#[cfg(feature = "metrics")]
const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

#[cfg(feature = "metrics")]
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

#[cfg(feature = "metrics")]
type HttpSlots = std::sync::Arc<[std::sync::OnceLock<metrics::Key>]>;

#[cfg(feature = "metrics")]
fn http_key(method: &'static str, route: &str, class: usize) -> metrics::Key {
    retained(&metrics::Key::from_parts(
        "http_server_request_duration_seconds",
        vec![
            metrics::Label::new("method", method),
            metrics::Label::new("route", route.to_owned()),
            metrics::Label::new("status_class", STATUS_CLASSES[class]),
        ],
    ))
}

/// `key` in the form a recorder can keep without copying it: recorders that store keys
/// (metrics-exporter-prometheus does, on every registration) call `Key::to_retained`, which
/// copies owned labels and names into new shared allocations each time. Keys kept by a layer
/// are made shared once, here, so that each registration is a reference-count increment.
#[cfg(feature = "metrics")]
fn retained(key: &metrics::Key) -> metrics::Key {
    key.to_retained()
}

/// The request-duration histogram's keys by route, one per method and status class, built on
/// first use. Read without a lock (a copy-on-write map swapped whole when a route is first
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
}

impl HttpKeys {
    /// Routes are templates (`/payments/{id}`), so a service has a few dozen; the bound only
    /// guards against a router that reports raw paths.
    #[cfg(feature = "metrics")]
    const MAX_ROUTES: usize = 1_024;

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
        let slots: HttpSlots = (0..(HTTP_METHODS.len() + 1) * STATUS_CLASSES.len())
            .map(|_| std::sync::OnceLock::new())
            .collect();
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
pub(crate) fn fallback(reason: &'static str, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("bulwark_fallbacks_total", "reason" => reason, "outcome" => outcome)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (reason, outcome);
}

/// The counters of one cache layer: `bulwark_cache_requests_total` per outcome and
/// `bulwark_cache_stored_total`, labelled with the cache's name. The metric keys are built once
/// per layer, so counting a request allocates nothing.
pub(crate) struct CacheMetrics {
    #[cfg(feature = "metrics")]
    keys: Box<[metrics::Key]>,
}

#[cfg(feature = "metrics")]
static CACHE_METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl CacheMetrics {
    /// The counters of the cache named `cache`; `outcomes` are the `outcome` label values, in the
    /// order [`request`](Self::request) is called with.
    pub(crate) fn new(cache: &std::sync::Arc<str>, outcomes: &[&'static str]) -> Self {
        #[cfg(feature = "metrics")]
        {
            use metrics::{Key, Label};
            let label = || Label::new("cache", cache.clone());
            let mut keys: Vec<Key> = outcomes
                .iter()
                .map(|o| {
                    retained(&Key::from_parts(
                        "bulwark_cache_requests_total",
                        vec![label(), Label::from_static_parts("outcome", o)],
                    ))
                })
                .collect();
            keys.push(retained(&Key::from_parts(
                "bulwark_cache_stored_total",
                vec![label()],
            )));
            Self {
                keys: keys.into_boxed_slice(),
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
        if let Some(key) = self.keys.get(which) {
            metrics::with_recorder(|r| r.register_counter(key, &CACHE_METADATA).increment(1));
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
        self.count(self.keys.len() - 1);
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
pub(crate) fn idempotency(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("bulwark_idempotency_requests_total", "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// The evaluation counters of one defined flag, keyed in advance (when the flags snapshot is
/// built), so counting an evaluation allocates nothing. The recorder is looked up at each
/// evaluation, so a recorder installed after the flags were defined still sees them.
pub(crate) struct FlagCounters {
    #[cfg(feature = "metrics")]
    keys: Box<[metrics::Key]>,
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
            let keys = FLAG_RESULTS
                .iter()
                .map(|&(enabled, reason)| {
                    retained(&metrics::Key::from_parts(
                        "bulwark_flag_evaluations_total",
                        vec![
                            metrics::Label::new("flag", label.clone()),
                            metrics::Label::new("result", if enabled { "on" } else { "off" }),
                            metrics::Label::new("reason", reason.otel_value()),
                        ],
                    ))
                })
                .collect();
            Self { keys }
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
        {
            static METADATA: metrics::Metadata<'static> =
                metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
            match FLAG_RESULTS.iter().position(|&r| r == (enabled, reason)) {
                Some(i) => metrics::with_recorder(|r| r.register_counter(&self.keys[i], &METADATA))
                    .increment(1),
                None => flag_evaluation(None, enabled, reason.otel_value()),
            }
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
