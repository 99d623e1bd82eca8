//! The crate's monotonic clock: tokio's, read as nanoseconds since a time zero.
//!
//! Every layer that measures time between requests (the limiter's GCRA, the breaker's windows
//! and waits, the last good answer's age, the cache's wall clock) reads it here, so that an
//! application's tests (and ours) drive them all with `#[tokio::test(start_paused = true)]` and
//! `tokio::time::advance`. Outside a paused runtime (and always without tokio's `test-util`
//! feature) `tokio::time::Instant::now()` is `std::time::Instant::now()`, the monotonic clock.
//! Times kept as `u64` nanoseconds fit in one atomic and compare without a `Result`.

use std::time::Duration;

use tokio::time::Instant;

/// A time zero on tokio's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Monotonic(Instant);

impl Monotonic {
    /// Now, as a time zero.
    pub(crate) fn start() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds from this time zero to now (0 if the clock reads earlier, which it never
    /// should); saturates after about 584 years.
    #[inline]
    pub(crate) fn nanos(self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.0))
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let zero = Monotonic::start();
        assert_eq!(zero.nanos(), 0);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(zero.nanos(), 1_500_000_000);
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(nanos(Duration::from_nanos(7)), 7);
        assert_eq!(nanos(Duration::from_secs(3)), 3_000_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
