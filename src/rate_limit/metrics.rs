//! The limiter's counters: `bulwark_rate_limit_requests_total`, `_store_fallbacks_total` and
//! `_overflow_total` (see the [catalogue](crate::metrics)).

#[cfg(feature = "metrics")]
use crate::metrics::Held;

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
    #[cfg(feature = "redis")]
    const FALLBACK_LOCAL: usize = 2;
    #[cfg(feature = "redis")]
    const FALLBACK_OPEN: usize = 3;
    #[cfg(feature = "redis")]
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
    #[cfg(feature = "redis")]
    pub(crate) fn store_fallback(&self, policy: super::store::FailurePolicy) {
        let which = match policy {
            super::store::FailurePolicy::Local => Self::FALLBACK_LOCAL,
            super::store::FailurePolicy::FailOpen => Self::FALLBACK_OPEN,
            super::store::FailurePolicy::FailClosed => Self::FALLBACK_CLOSED,
        };
        self.count(which, 1);
    }
    /// `n` requests sent to the shared overflow bucket of a full key table.
    pub(crate) fn overflow(&self, n: u64) {
        self.count(Self::OVERFLOW, n);
    }
}
