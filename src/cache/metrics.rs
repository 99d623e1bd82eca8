//! The cache's counters: `bulwark_cache_requests_total`, `_stored_total` and
//! `_evictions_total` (see the [catalogue](crate::metrics)).

#[cfg(feature = "metrics")]
use crate::metrics::Held;

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
