//! The GCRA (generic cell rate algorithm) of one quota, over its key table.
//!
//! A key's state is one number, its theoretical arrival time (TAT): when its bucket would be
//! full again. With `T` the time one request takes to come back (`period / rate`) and a burst
//! of `b`, a request of cost `n` at time `now` fits if `max(TAT, now) + n·T ≤ now + b·T`, and
//! then moves the TAT to `max(TAT, now) + n·T`; otherwise it must wait until that holds. One
//! compare-and-swap per request, no refill task, no lock (this is the algorithm governor and
//! tower-governor use, written here over our own table and clock).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::{Quota, metrics::RateLimitMetrics, table::KeyTable};
use crate::{RateLimitInfo, clock::Monotonic};

/// What the GCRA decided for one quota.
pub(super) enum Gcra {
    /// Allowed; the key's new TAT and the time it was decided at.
    Allowed { tat: u64, now: u64 },
    /// Refused; the wait until the request would fit.
    Refused { wait: u64 },
}

/// One quota of a limiter: its settings, its clock origin and its key table.
pub(crate) struct QuotaState {
    pub(crate) quota: Quota,
    /// `period / rate`, ns: the time one request takes to come back (GCRA's `T`).
    pub(crate) emission: u64,
    /// The effective burst.
    pub(crate) burst: u32,
    /// `emission × burst`, ns: how far ahead of now a key's TAT may run once a request is
    /// counted (GCRA's `τ + T`).
    pub(super) tolerance: u64,
    pub(super) table: Arc<KeyTable>,
    pub(super) origin: Monotonic,
}

impl QuotaState {
    pub(super) fn new(quota: Quota, cap: usize) -> Self {
        let emission = quota.emission_nanos();
        let burst = quota.burst_size();
        Self {
            quota,
            emission,
            burst: burst.get(),
            tolerance: emission.saturating_mul(u64::from(burst.get())),
            table: Arc::new(KeyTable::new(cap)),
            origin: Monotonic::start(),
        }
    }

    /// Nanoseconds since the origin, counted from 1. (A stored TAT is never 0, "no state": it
    /// is at least one request's weight past some `now`, and a refund floors it at 1, "long
    /// ago". Counting from 1 keeps that floor at or before every `now`: from 0, a request
    /// refunded at the first instant left its bucket a nanosecond in the future.)
    #[inline]
    pub(super) fn now(&self) -> u64 {
        self.origin.nanos().saturating_add(1)
    }

    /// The time `cost` requests take to come back.
    pub(super) fn weight(&self, cost: u32) -> u64 {
        self.emission.saturating_mul(u64::from(cost))
    }

    /// The GCRA for `cost` requests (at most the burst) of `key`, now: allowed if the key's
    /// TAT, once this request's weight is added, is at most `tolerance` ahead of now.
    #[inline]
    pub(super) fn decide(&self, key: u64, cost: u32) -> Gcra {
        let weight = self.weight(cost);
        let tolerance = self.tolerance;
        let decided = self.table.update(key, |stored| {
            // The clock is read after the state: a state stored by another thread was computed
            // at a time no later than this one. Read before it, a thread delayed between the
            // two reads saw a bucket fuller than it was by the delay, and at the edge of the
            // burst refused a request that fit (found by the loom test below).
            let now = self.now();
            // No state: a full bucket.
            let tat = if stored == 0 { now } else { stored };
            // The request fits once `tat + weight <= now + tolerance`.
            let earliest = tat.saturating_add(weight).saturating_sub(tolerance);
            if now < earliest {
                return Err(earliest - now);
            }
            let next = tat.max(now).saturating_add(weight);
            Ok(((next, now), next))
        });
        match decided {
            Ok((tat, now)) => Gcra::Allowed { tat, now },
            Err(wait) => Gcra::Refused { wait },
        }
    }

    /// Requests left in the bucket of a key whose TAT is `tat` at `now`.
    pub(super) fn remaining(&self, tat: u64, now: u64) -> u64 {
        now.saturating_add(self.tolerance)
            .saturating_sub(tat)
            .min(self.tolerance)
            / self.emission
    }

    pub(crate) fn info(&self, remaining: u64, reset: Duration) -> RateLimitInfo {
        RateLimitInfo::new(
            self.quota.shared_name().clone(),
            u64::from(self.quota.rate().get()),
            self.quota.period(),
            remaining,
            reset,
        )
    }

    /// The headers' view of an allowed key: requests left and time until its bucket is full.
    pub(super) fn allowed_info(&self, tat: u64, now: u64) -> RateLimitInfo {
        self.info(
            self.remaining(tat, now),
            Duration::from_nanos(tat.saturating_sub(now)),
        )
    }

    /// Prunes if the table asked for it and no other thread is at it (`limiter` and `metrics`:
    /// the limiter's name and counters, for the overflow warning and count). The check is one
    /// relaxed load on every request; the rest is out of line.
    #[inline]
    pub(super) fn maybe_prune(&self, limiter: &str, metrics: &RateLimitMetrics) {
        if self.table.prune_wanted.load(Ordering::Relaxed) {
            self.prune_wanted(limiter, metrics);
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn prune_wanted(&self, limiter: &str, metrics: &RateLimitMetrics) {
        let table = &*self.table;
        if table.pruning.swap(true, Ordering::Acquire) {
            return;
        }
        let now = self.now();
        let full = table.len.load(Ordering::Relaxed) >= table.cap.load(Ordering::Relaxed);
        let grown = table.inserts_since_prune.load(Ordering::Relaxed) >= table.prune_every();
        let overflowed = table.overflowed.load(Ordering::Relaxed);
        let reported = table.overflow_reported.swap(overflowed, Ordering::Relaxed);
        if overflowed > reported {
            metrics.overflow(overflowed - reported);
            if reported == 0 || full && now >= table.next_full_prune.load(Ordering::Relaxed) {
                tracing::warn!(
                    target: "bulwark::rate_limit",
                    limiter = %limiter,
                    quota = %self.quota.name(),
                    max_keys = table.cap.load(Ordering::Relaxed),
                    "rate limiter key table full: new keys share one overflow bucket"
                );
            }
        }
        if grown || full && now >= table.next_full_prune.load(Ordering::Relaxed) {
            self.prune_now(now);
        }
        table.prune_wanted.store(false, Ordering::Relaxed);
        table.pruning.store(false, Ordering::Release);
    }

    pub(super) fn prune_now(&self, now: u64) {
        let table = &*self.table;
        let before = table.len.load(Ordering::Relaxed);
        table.retain_recent(now);
        let after = table.len.load(Ordering::Relaxed);
        table.shrink_if_sparse(after);
        table.inserts_since_prune.store(0, Ordering::Relaxed);
        table
            .next_full_prune
            .store(now.saturating_add(1_000_000_000), Ordering::Relaxed);
        tracing::debug!(
            target: "bulwark::rate_limit",
            quota = %self.quota.name(),
            before,
            after,
            "rate limiter key table pruned"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn quota(rate: u32, burst: u32) -> QuotaState {
        let q = Quota::per_second(NonZeroU32::new(rate).unwrap())
            .burst(NonZeroU32::new(burst).unwrap());
        QuotaState::new(q, 100)
    }

    /// A full bucket lets the burst through at one instant, then refuses with the wait until
    /// one request's weight has come back; after that wait the next request fits.
    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_per_emission_interval() {
        let q = quota(10, 3);
        assert_eq!(q.emission, 100_000_000, "a tenth of a second");
        for i in 0..3 {
            assert!(
                matches!(q.decide(7, 1), Gcra::Allowed { .. }),
                "request {i}"
            );
        }
        let Gcra::Refused { wait } = q.decide(7, 1) else {
            panic!("the burst is spent")
        };
        assert_eq!(wait, q.emission);
        tokio::time::advance(Duration::from_nanos(wait)).await;
        assert!(matches!(q.decide(7, 1), Gcra::Allowed { .. }));
        assert!(matches!(q.decide(7, 1), Gcra::Refused { .. }));
        // Another key has a bucket of its own.
        assert!(matches!(q.decide(8, 3), Gcra::Allowed { .. }));
    }

    /// A refund gives back exactly what the request took, even for a request decided at the
    /// quota's first nanosecond (found by `tests/model_rate_limit.rs`: the refund left the
    /// bucket one nanosecond in the future, so the next request saw one request fewer left).
    #[tokio::test(start_paused = true)]
    async fn a_refund_at_the_first_instant_restores_the_bucket() {
        let q = quota(10, 3);
        assert!(matches!(q.decide(1, 1), Gcra::Allowed { .. }));
        q.table.refund(1, q.weight(1));
        let Gcra::Allowed { tat, now } = q.decide(1, 1) else {
            panic!("fits")
        };
        assert_eq!(
            q.remaining(tat, now),
            2,
            "as if the refunded request never came"
        );
        assert_eq!(tat - now, q.weight(1));
    }

    /// A request of cost `n` weighs `n` requests, and what is left is read off the TAT.
    #[tokio::test(start_paused = true)]
    async fn costs_weigh_and_remaining_counts_down() {
        let q = quota(10, 5);
        let Gcra::Allowed { tat, now } = q.decide(1, 2) else {
            panic!("fits")
        };
        assert_eq!(tat - now, q.weight(2));
        assert_eq!(q.remaining(tat, now), 3);
        let Gcra::Allowed { tat, now } = q.decide(1, 3) else {
            panic!("fits exactly")
        };
        assert_eq!(q.remaining(tat, now), 0);
        let Gcra::Refused { wait } = q.decide(1, 2) else {
            panic!("empty")
        };
        assert_eq!(wait, q.weight(2), "two requests' weight must come back");
    }
}

/// The GCRA's compare-and-swap under every interleaving of three threads (loom; run with
/// `RUSTFLAGS="--cfg bulwark_loom" cargo test --release --lib loom_`, see RELIABILITY.md).
#[cfg(all(test, bulwark_loom))]
mod loom_tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::rate_limit::table::GLOBAL;

    /// Three requests race for a burst of two on one key: two are allowed, never three, and
    /// the refused one waits a whole emission interval. (With the clock read before the state,
    /// a delayed thread was refused after one request, with a wait of a few hundred ns.)
    #[test]
    fn loom_a_burst_is_never_exceeded() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        let mut m = loom::model::Builder::new();
        m.preemption_bound = Some(3);
        m.check(move || {
            r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let q = Quota::per_hour(NonZeroU32::new(1).unwrap()).burst(NonZeroU32::new(2).unwrap());
            let q = Arc::new(QuotaState::new(q, 16));
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let q = q.clone();
                    loom::thread::spawn(move || match q.decide(GLOBAL, 1) {
                        Gcra::Allowed { .. } => None,
                        Gcra::Refused { wait } => Some(wait),
                    })
                })
                .collect();
            let refused: Vec<u64> = threads
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect();
            assert_eq!(refused.len(), 1, "two of three allowed");
            // Not a sliver: a refusal because the clock was read before a later thread's state
            // would wait only the gap between the two reads.
            assert!(
                refused[0] > q.emission / 2,
                "it waits for an emission interval: {} ns of {}",
                refused[0],
                q.emission
            );
        });
        eprintln!(
            "GCRA burst: {} interleavings",
            runs.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
