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
//! Each layer counts in a `metrics` module of its own, which declares its metrics' keys and label
//! vocabularies; this module holds only what they share: the kept handles, the fixed-vocabulary
//! counter sets, and the crate-wide rejection and store-error counters.
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
pub(crate) struct Vocabulary<T>(Vec<(T, Held<metrics::Counter>)>);

#[cfg(feature = "metrics")]
impl<T: Copy + PartialEq> Vocabulary<T> {
    /// One counter per word, with the key `key` makes for it.
    pub(crate) fn new(words: impl IntoIterator<Item = T>, key: impl Fn(T) -> metrics::Key) -> Self {
        Self(words.into_iter().map(|w| (w, Held::new(&key(w)))).collect())
    }

    /// Counts one for `word`; `otherwise` if it is not in the vocabulary.
    #[inline]
    pub(crate) fn increment(&self, word: T, otherwise: impl FnOnce()) {
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
