//! The breaker's metrics: `bulwark_circuit_breaker_state`, `_transitions_total` and
//! `_rejections_total` (see the [catalogue](crate::metrics)).

use super::CircuitState;
#[cfg(feature = "metrics")]
use crate::metrics::Held;

/// A breaker entered `state` (also its gauge's value at creation).
#[inline]
pub(crate) fn breaker_state(name: &std::sync::Arc<str>, state: CircuitState) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("bulwark_circuit_breaker_state", "breaker" => name.to_string())
        .set(state.as_gauge());
    #[cfg(not(feature = "metrics"))]
    let _ = (name, state);
}

/// A breaker moved to `to`; its state gauge is set too if `gauge`.
#[inline]
pub(crate) fn breaker_transition(name: &std::sync::Arc<str>, to: CircuitState, gauge: bool) {
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
