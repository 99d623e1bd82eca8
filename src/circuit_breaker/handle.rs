use std::{fmt, sync::Arc, time::Duration};

use super::{CircuitState, state::Breaker};

/// State, metrics and manual control of one breaker. Cheap to clone.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(super) breaker: Arc<Breaker>,
}

/// A snapshot of a breaker's sliding window and counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CircuitBreakerMetrics {
    /// The state.
    pub state: CircuitState,
    /// Calls in the sliding window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Failure rate in percent, once the window holds the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// Slow-call rate in percent, once the window holds the minimum number of calls.
    pub slow_call_rate: Option<f64>,
    /// Calls rejected since the breaker was created.
    pub rejected: u64,
    /// Time left in the open state, when open.
    pub open_remaining: Option<Duration>,
}

impl CircuitBreakerHandle {
    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.breaker.name()
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// A snapshot of the window and counters.
    #[must_use]
    pub fn metrics(&self) -> CircuitBreakerMetrics {
        let (state, t, rejected) = self.breaker.metrics();
        let enough = t.calls > 0 && t.calls >= u64::from(self.breaker.config.minimum_calls);
        let rate = |n: u64| enough.then(|| n as f64 * 100.0 / t.calls as f64);
        CircuitBreakerMetrics {
            state,
            calls: t.calls,
            failures: t.failures,
            slow_calls: t.slow,
            failure_rate: rate(t.failures),
            slow_call_rate: rate(t.slow),
            rejected,
            open_remaining: self.breaker.remaining_open(),
        }
    }

    /// Opens the breaker until [`reset`](Self::reset) or [`force_closed`](Self::force_closed):
    /// every call is rejected.
    pub fn force_open(&self) {
        self.breaker.force_open();
    }

    /// Lets every call through and counts nothing until [`reset`](Self::reset) or
    /// [`force_open`](Self::force_open).
    pub fn force_closed(&self) {
        self.breaker.force_closed();
    }

    /// Back to closed with an empty window and the open time back to its base value.
    pub fn reset(&self) {
        self.breaker.reset();
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish()
    }
}
