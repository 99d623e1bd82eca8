//! The fault schedule: drawn from the seed before the run (and printed), then applied at its
//! times, each fault's real start and end kept on the [`Timeline`] the invariants read.

use std::{
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

/// SplitMix64: small, seedable, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub(crate) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    /// SIGKILL, down for the duration, restarted empty (no persistence).
    RedisKill(Duration),
    /// SIGSTOP for the duration, then SIGCONT: slow rather than down, data kept.
    RedisPause(Duration),
    /// Killed and started again at once: back within a moment, with no data.
    RedisEmpty,
    /// A shop instance killed (SIGKILL) and restarted after the duration.
    ShopKill { instance: usize, down: Duration },
    /// An upstream's failure rate and added latency changed on every shop for the duration.
    Upstream {
        target: &'static str,
        failure_rate: f32,
        latency_ms: u64,
        lasts: Duration,
    },
}

impl Fault {
    /// How long the fault lasts once applied.
    pub(crate) fn lasts(&self) -> Duration {
        match self {
            Self::RedisKill(d) | Self::RedisPause(d) => *d,
            Self::RedisEmpty => Duration::ZERO,
            Self::ShopKill { down, .. } => *down,
            Self::Upstream { lasts, .. } => *lasts,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |d: &Duration| d.as_secs_f64();
        match self {
            Self::RedisKill(d) => write!(f, "redis killed, restarted empty after {:.1} s", s(d)),
            Self::RedisPause(d) => write!(f, "redis paused (SIGSTOP) for {:.1} s", s(d)),
            Self::RedisEmpty => f.write_str("redis restarted empty at once"),
            Self::ShopKill { instance, down } => {
                write!(
                    f,
                    "shop {instance} killed, restarted after {:.1} s",
                    s(down)
                )
            }
            Self::Upstream {
                target,
                failure_rate,
                latency_ms,
                lasts,
            } => write!(
                f,
                "upstream {target}: {:.0} % failures, +{latency_ms} ms, for {:.1} s",
                failure_rate * 100.0,
                s(lasts)
            ),
        }
    }
}

/// A fault and when (after the start) it begins.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    pub(crate) at: Duration,
    pub(crate) fault: Fault,
}

/// The longest added latency an upstream fault sets (a route bound reads it).
pub(crate) const MAX_UPSTREAM_LATENCY_MS: u64 = 300;
/// No fault in the first seconds (warm-up) ...
pub(crate) const WARM_UP: Duration = Duration::from_secs(5);
/// ... nor in the last ones, so every layer is back on Redis when the run ends.
pub(crate) const QUIET_END: Duration = Duration::from_secs(8);

/// The schedule for a run of `duration` with `instances` shops: faults one after another with
/// 3 to 6 s of calm between, every kind drawn once before any is drawn again.
pub(crate) fn plan(seed: u64, duration: Duration, instances: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let mut bag: Vec<u8> = Vec::new();
    let mut planned = Vec::new();
    let mut t = WARM_UP;
    loop {
        if bag.is_empty() {
            bag = vec![0, 1, 2, 3, 4];
        }
        let kind = bag.swap_remove(rng.below(bag.len() as u64) as usize);
        let fault = match kind {
            0 => Fault::RedisKill(rng.millis(1_000, 5_000)),
            1 => Fault::RedisPause(rng.millis(1_000, 5_000)),
            2 => Fault::RedisEmpty,
            3 => Fault::ShopKill {
                instance: rng.below(instances as u64) as usize,
                down: rng.millis(1_000, 3_000),
            },
            _ => {
                let targets = ["recommendations", "user", "posts", "notifications"];
                Fault::Upstream {
                    target: targets[rng.below(4) as usize],
                    failure_rate: 0.3 + rng.below(71) as f32 / 100.0,
                    latency_ms: rng.below(MAX_UPSTREAM_LATENCY_MS + 1),
                    lasts: rng.millis(3_000, 8_000),
                }
            }
        };
        let gap = rng.millis(3_000, 6_000);
        if t + fault.lasts() + QUIET_END > duration {
            break;
        }
        let next = t + fault.lasts() + gap;
        planned.push(Planned { at: t, fault });
        t = next;
    }
    planned
}

/// A stretch of time during which something was wrong.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

impl Window {
    /// Whether `[from, to]` meets this window widened by `margin` on both sides.
    pub(crate) fn meets(&self, from: Instant, to: Instant, margin: Duration) -> bool {
        from <= self.end + margin && to + margin >= self.start
    }
}

/// What happened, when: written by the fault task, read by the invariants.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    inner: Mutex<Events>,
}

/// See [`Timeline`].
#[derive(Debug, Default, Clone)]
pub(crate) struct Events {
    /// Redis away or slow: from the fault until it answers again.
    pub(crate) store: Vec<Window>,
    /// When Redis lost its data.
    pub(crate) data_losses: Vec<Instant>,
    /// Shop `instance` down: from its kill until it listens again.
    pub(crate) shop_down: Vec<(usize, Window)>,
    /// Upstream faults.
    pub(crate) upstream: Vec<Window>,
}

impl Timeline {
    pub(crate) fn record(&self, f: impl FnOnce(&mut Events)) {
        f(&mut self.inner.lock().unwrap());
    }

    pub(crate) fn events(&self) -> Events {
        self.inner.lock().unwrap().clone()
    }

    /// Whether Redis was away at any moment in `[from, to]` (with a margin).
    pub(crate) fn store_fault_meets(&self, from: Instant, to: Instant, margin: Duration) -> bool {
        self.inner
            .lock()
            .unwrap()
            .store
            .iter()
            .any(|w| w.meets(from, to, margin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_with_every_kind_and_calm_at_both_ends() {
        let ten_minutes = Duration::from_secs(600);
        let a = plan(7, ten_minutes, 2);
        assert_eq!(a, plan(7, ten_minutes, 2), "same seed, same schedule");
        assert_ne!(a, plan(8, ten_minutes, 2));
        assert!(a.len() > 50, "{}", a.len());
        assert!(a.first().unwrap().at >= WARM_UP);
        for p in &a {
            assert!(p.at + p.fault.lasts() + QUIET_END <= ten_minutes);
            if let Fault::ShopKill { instance, .. } = p.fault {
                assert!(instance < 2);
            }
        }
        for pair in a.windows(2) {
            let gap = pair[1].at - (pair[0].at + pair[0].fault.lasts());
            assert!(gap >= Duration::from_secs(3), "{gap:?}");
        }
        // One minute still sees every kind: the bag gives each once before any again.
        let minute = plan(1, Duration::from_secs(60), 2);
        assert!(minute.len() >= 5, "{minute:?}");
        let kinds: std::collections::HashSet<_> = minute
            .iter()
            .take(5)
            .map(|p| std::mem::discriminant(&p.fault))
            .collect();
        assert_eq!(kinds.len(), 5, "{minute:?}");
    }

    #[test]
    fn windows_meet_with_a_margin() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let w = Window {
            start: t + 10 * s,
            end: t + 12 * s,
        };
        assert!(w.meets(t + 11 * s, t + 11 * s, Duration::ZERO));
        assert!(!w.meets(t, t + 9 * s, Duration::ZERO));
        assert!(w.meets(t, t + 9 * s, s));
        assert!(!w.meets(t + 14 * s, t + 15 * s, s));
        assert!(w.meets(t + 13 * s, t + 15 * s, s));
    }
}
