//! The memory store's clock: tokio's, so that an application's tests (and ours) drive the
//! limiter with `#[tokio::test(start_paused = true)]` and `tokio::time::advance`. Outside a
//! paused runtime (and always without tokio's `test-util` feature) `tokio::time::Instant::now()`
//! is `std::time::Instant::now()`, the monotonic clock.

use tokio::time::Instant;

/// A quota's time zero.
pub(crate) type Origin = Instant;

/// Reads tokio's clock as nanoseconds since an origin.
pub(crate) struct Clock;

impl Clock {
    /// Now, as the origin of a quota's times.
    pub(crate) fn origin() -> Origin {
        Instant::now()
    }

    /// Nanoseconds from `origin` to now (0 if the clock reads earlier, which it never should);
    /// saturates after about 584 years.
    #[inline]
    pub(crate) fn nanos_since(origin: Origin) -> u64 {
        let d = Instant::now().saturating_duration_since(origin);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let origin = Clock::origin();
        assert_eq!(Clock::nanos_since(origin), 0);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(Clock::nanos_since(origin), 1_500_000_000);
    }
}
