//! Simulated upstreams with fault injection: the recommendation service and the dashboard's
//! `user`, `posts` and `notifications` services. `POST /admin/chaos` sets each one's failure
//! rate and added latency at run time.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

/// The names `POST /admin/chaos` accepts as `target`.
pub(crate) const TARGETS: [&str; 4] = ["recommendations", "user", "posts", "notifications"];

/// One upstream's injected faults.
#[derive(Debug, Default)]
pub(crate) struct Chaos {
    /// Failure probability as `f32` bits (0.0 to 1.0).
    failure_rate: AtomicU32,
    latency_ms: AtomicU64,
}

/// Why a simulated call failed.
#[derive(Debug)]
pub(crate) struct Injected;

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected failure")
    }
}

impl std::error::Error for Injected {}

impl Chaos {
    pub(crate) fn set(&self, failure_rate: f32, latency_ms: u64) {
        self.failure_rate
            .store(failure_rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        self.latency_ms.store(latency_ms, Ordering::Relaxed);
    }

    pub(crate) fn failure_rate(&self) -> f32 {
        f32::from_bits(self.failure_rate.load(Ordering::Relaxed))
    }

    pub(crate) fn latency_ms(&self) -> u64 {
        self.latency_ms.load(Ordering::Relaxed)
    }

    /// One call: waits the injected latency, then fails with the injected probability.
    pub(crate) async fn call(&self) -> Result<(), Injected> {
        let latency = self.latency_ms();
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let rate = self.failure_rate();
        if rate >= 1.0 || (rate > 0.0 && random_unit() < rate) {
            Err(Injected)
        } else {
            Ok(())
        }
    }
}

/// Every simulated upstream.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    pub(crate) recommendations: Chaos,
    pub(crate) user: Chaos,
    pub(crate) posts: Chaos,
    pub(crate) notifications: Chaos,
}

impl Upstreams {
    pub(crate) fn get(&self, target: &str) -> Option<&Chaos> {
        match target {
            "recommendations" => Some(&self.recommendations),
            "user" => Some(&self.user),
            "posts" => Some(&self.posts),
            "notifications" => Some(&self.notifications),
            _ => None,
        }
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
}

/// A uniform number in [0, 1), from a per-thread xorshift seeded by the OS.
fn random_unit() -> f32 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        (x >> 40) as f32 / (1u64 << 24) as f32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn chaos_fails_and_delays_as_set() {
        let c = Chaos::default();
        assert!(c.call().await.is_ok());
        c.set(1.0, 0);
        assert!(c.call().await.is_err());
        c.set(0.0, 250);
        let start = tokio::time::Instant::now();
        assert!(c.call().await.is_ok());
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        c.set(7.0, 0);
        assert_eq!(c.failure_rate(), 1.0, "clamped");
    }

    #[test]
    fn random_is_in_range_and_spread() {
        let n = 10_000;
        let below_half = (0..n).filter(|_| random_unit() < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
        assert!((0..n).all(|_| (0.0..1.0).contains(&random_unit())));
    }
}
