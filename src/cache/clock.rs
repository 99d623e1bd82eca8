//! The cache's clock: wall-clock time that follows tokio's clock.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use crate::clock::{Monotonic, nanos};

/// The cache's clock: wall-clock time that follows tokio's clock, so tests can pause and advance
/// it (`tokio::time::pause`), while production sees ordinary `SystemTime`.
///
/// It is the wall time at a base instant plus tokio's time since then. While tokio's clock
/// follows the real one (always, outside a paused runtime), the wall time at the base is read
/// again from the system once a second, so a process that started before its clock was set
/// (NTP not yet synchronised) or whose clock is stepped later follows the system within a
/// second, instead of keeping the error for its whole life: entries it writes to a shared
/// store carry absolute times. Once tokio's clock is seen running apart from the real one (a
/// test advanced it), the base is left alone, so virtual time stays continuous.
#[derive(Debug)]
pub(crate) struct Clock {
    base: Monotonic,
    real_base: std::time::Instant,
    /// The wall time at `base`, in nanoseconds since the Unix epoch.
    wall_at_base: AtomicU64,
    /// Nanoseconds of tokio time since `base` at which to read the system's clock again.
    next_sync: AtomicU64,
    /// The system's clock ([`system_nanos`]; a test's own in tests).
    system: fn() -> u64,
}

impl Clock {
    /// How often the wall time is read again.
    const SYNC_EVERY: u64 = 1_000_000_000;
    /// How far tokio's clock may be from the real one for it to count as the real one: far
    /// above the time between two clock reads, far below any step a test makes.
    const REAL_WITHIN: u64 = 20_000_000;

    pub(crate) fn new() -> Self {
        Self::with_system(system_nanos)
    }

    pub(crate) fn with_system(system: fn() -> u64) -> Self {
        let base = Monotonic::start();
        let real_base = std::time::Instant::now();
        Self {
            base,
            real_base,
            wall_at_base: AtomicU64::new(system()),
            next_sync: AtomicU64::new(Self::SYNC_EVERY),
            system,
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> Wall {
        let since = self.base.nanos();
        if since >= self.next_sync.load(Ordering::Relaxed) {
            self.sync(since);
        }
        Wall(
            self.wall_at_base
                .load(Ordering::Relaxed)
                .saturating_add(since),
        )
    }

    /// Reads the system's clock again if tokio's clock is the real one. Two threads may both
    /// get here; each stores a whole value, so either result is right.
    #[cold]
    pub(crate) fn sync(&self, since: u64) {
        self.next_sync
            .store(since.saturating_add(Self::SYNC_EVERY), Ordering::Relaxed);
        let real = nanos(self.real_base.elapsed());
        if real.abs_diff(since) < Self::REAL_WITHIN {
            let wall = (self.system)().saturating_sub(since);
            self.wall_at_base.store(wall, Ordering::Relaxed);
        }
    }
}

/// A wall-clock time in nanoseconds since the Unix epoch (0 before it, saturating far after
/// it): what the clock gives and entries keep, so that a hit's freshness, `Age` and TTL are
/// integer arithmetic. (A `SystemTime` difference normalises two `timespec`s and returns a
/// `Result`: with the addition that made `now`, about 30 ns of every hit.) Converted to a
/// `SystemTime` only for RFC 9111 policy calls, on the policy mode's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Wall(u64);

impl Wall {
    /// The time `t` is.
    pub(crate) fn of(t: SystemTime) -> Self {
        Self(t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, nanos))
    }

    /// The time `d` after the Unix epoch.
    pub(crate) fn from_epoch(d: Duration) -> Self {
        Self(nanos(d))
    }

    /// How long after the Unix epoch this is.
    pub(crate) fn since_epoch(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// This time as the standard library's type (for RFC 9111 policy calls).
    pub(crate) fn system(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.since_epoch()
    }

    /// The time `d` later.
    pub(crate) fn after(self, d: Duration) -> Self {
        Self(self.0.saturating_add(nanos(d)))
    }

    /// Nanoseconds from `earlier` to this time; zero if `earlier` is later.
    pub(crate) fn nanos_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The system's wall time in nanoseconds since the Unix epoch (0 before it).
pub(crate) fn system_nanos() -> u64 {
    Wall::of(SystemTime::now()).0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000_000;
    const T0: u64 = 1_800_000_000_000_000_000;

    pub(crate) fn secs_since(t0: u64, t: SystemTime) -> f64 {
        let t = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as f64;
        (t - t0 as f64) / 1e9
    }

    /// A process whose system clock is stepped (NTP synchronised late) follows it within a
    /// second instead of keeping its start-up error.
    #[test]
    pub(crate) fn the_clock_follows_a_stepped_system_clock() {
        static SYSTEM: AtomicU64 = AtomicU64::new(T0);
        let clock = Clock::with_system(|| SYSTEM.load(Ordering::Relaxed));
        assert!(secs_since(T0, clock.now().system()) < 1.0);
        SYSTEM.store(T0 + HOUR, Ordering::Relaxed);
        // The next read past the sync interval (brought forward here, not waited for).
        clock.next_sync.store(0, Ordering::Relaxed);
        let after = secs_since(T0, clock.now().system());
        assert!((3_600.0..3_601.0).contains(&after), "{after}");
    }

    /// Time a test advances is kept: the system's clock is not read back over it.
    #[tokio::test(start_paused = true)]
    async fn advanced_time_stays_continuous() {
        static SYSTEM: AtomicU64 = AtomicU64::new(T0);
        let clock = Clock::with_system(|| SYSTEM.load(Ordering::Relaxed));
        tokio::time::advance(Duration::from_secs(30)).await;
        SYSTEM.store(T0 + HOUR, Ordering::Relaxed);
        assert_eq!(secs_since(T0, clock.now().system()), 30.0);
        clock.next_sync.store(0, Ordering::Relaxed);
        assert_eq!(secs_since(T0, clock.now().system()), 30.0);
    }
}
