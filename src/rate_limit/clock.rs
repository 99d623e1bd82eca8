//! governor's clock traits over `tokio::time::Instant`, so that tests drive the memory store
//! with `#[tokio::test(start_paused = true)]` and `tokio::time::advance`. Outside a paused
//! runtime (and without tokio's `test-util` feature) `tokio::time::Instant::now()` is
//! `std::time::Instant::now()`.

use std::{ops::Add, time::Duration};

use governor::{
    clock::{Clock, Reference},
    nanos::Nanos,
};

/// A point in tokio time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, rhs: Nanos) -> Self {
        // Saturates rather than panics on an absurd offset.
        Self(
            self.0
                .checked_add(Duration::from_nanos(rhs.as_u64()))
                .unwrap_or(self.0),
        )
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        let d = self.0.saturating_duration_since(earlier.0);
        Nanos::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(
            self.0
                .checked_sub(Duration::from_nanos(duration.as_u64()))
                .unwrap_or(self.0),
        )
    }
}

/// tokio's clock, for governor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    #[inline]
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = TokioClock;
        let a = clock.now();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        let b = clock.now();
        assert_eq!(b.duration_since(a), Nanos::from(1_500_000_000u64));
        assert_eq!(a.duration_since(b), Nanos::from(0u64));
        assert_eq!(a + Nanos::from(1_500_000_000u64), b);
        assert_eq!(b.saturating_sub(Nanos::from(1_500_000_000u64)), a);
    }
}
