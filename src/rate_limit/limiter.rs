//! The in-process limiter: every quota of a layer checked together, and the state every clone
//! of a layer shares. Both stores decide with it: the memory store always, the Redis store when
//! its failure policy falls back to this instance.

use std::{
    hash::{BuildHasher, RandomState},
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;

use super::{
    Quota,
    gcra::{Gcra, QuotaState},
    metrics::RateLimitMetrics,
    quota::check_quotas,
    table::{GLOBAL, KeyTableStats},
};
use crate::{ConfigError, RateLimitInfo, Rejection};

/// The default cap on keys per quota.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

/// The quotas a limiter enforces now, with its name: swapped as a whole at run time.
pub(crate) struct QuotaSet {
    pub(crate) name: Arc<str>,
    pub(crate) quotas: Box<[Arc<QuotaState>]>,
    pub(crate) metrics: RateLimitMetrics,
}

impl QuotaSet {
    /// Decides one request of `cost` for table key `key` against every quota.
    ///
    /// All quotas must allow it. A request refused by one quota gives back what it took from
    /// the quotas that allowed it, so a refused request costs nothing; every quota is asked
    /// (and refunded) so that the answer's `Retry-After` is the longest wait among the refusing
    /// quotas.
    pub(crate) fn check(&self, key: u64, cost: NonZeroU32, want_info: bool) -> Verdict {
        if let [q] = &*self.quotas {
            return self.check_one(q, key, cost, want_info);
        }
        let set = self;
        let n = cost.get();
        if let Some(q) = set.quotas.iter().find(|q| n > q.burst) {
            return Verdict::Rejected(too_costly(set, q, n));
        }
        let mut taken = 0u32;
        let mut strictest: Option<(&QuotaState, u64, u64, u64)> = None;
        let mut refused: Option<(&QuotaState, Duration)> = None;
        for (i, q) in set.quotas.iter().enumerate() {
            match q.decide(key, n) {
                Gcra::Allowed { tat, now } => {
                    taken |= 1 << i;
                    let left = q.remaining(tat, now);
                    if strictest.is_none_or(|(_, l, _, _)| left < l) {
                        strictest = Some((q, left, tat, now));
                    }
                }
                Gcra::Refused { wait } => {
                    let wait = Duration::from_nanos(wait);
                    if refused.is_none_or(|(_, w)| wait > w) {
                        refused = Some((q, wait));
                    }
                }
            }
            q.maybe_prune(&set.name, &set.metrics);
        }
        if let Some((q, wait)) = refused {
            for (i, t) in set.quotas.iter().enumerate() {
                if taken & (1 << i) != 0 {
                    t.table.refund(key, t.weight(n));
                }
            }
            return set.refused(q, n, wait);
        }
        set.metrics.allowed();
        Verdict::Allowed(match strictest {
            Some((q, _, tat, now)) if want_info => Some(q.allowed_info(tat, now)),
            _ => None,
        })
    }

    /// The answer to a request of cost `n` that quota `q` refuses for `wait`: counted, logged
    /// (never the key), with the quota's state for the headers.
    fn refused(&self, q: &QuotaState, n: u32, wait: Duration) -> Verdict {
        // Time until the bucket is full: the wait, plus the tolerance this request would have
        // used beyond its own weight.
        let reset = wait + Duration::from_nanos(q.weight(q.burst - n));
        self.metrics.rejected();
        tracing::debug!(
            target: "bulwark::rate_limit",
            limiter = %self.name,
            quota = %q.quota.name(),
            cost = n,
            retry_after_ms = wait.as_millis() as u64,
            "rate limited"
        );
        Verdict::Rejected(Rejection::rate_limited(wait, Some(q.info(0, reset))))
    }
}

impl QuotaSet {
    /// [`check`](Self::check) for a set of one quota (the common case): the same decision,
    /// without the bookkeeping for refunds and the strictest of several quotas.
    #[inline]
    fn check_one(&self, q: &QuotaState, key: u64, cost: NonZeroU32, want_info: bool) -> Verdict {
        let n = cost.get();
        if n > q.burst {
            return Verdict::Rejected(too_costly(self, q, n));
        }
        let verdict = match q.decide(key, n) {
            Gcra::Allowed { tat, now } => {
                self.metrics.allowed();
                Verdict::Allowed(want_info.then(|| q.allowed_info(tat, now)))
            }
            Gcra::Refused { wait } => self.refused(q, n, Duration::from_nanos(wait)),
        };
        q.maybe_prune(&self.name, &self.metrics);
        verdict
    }
}

/// What a limiter decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Go ahead; the strictest quota's state, if asked for.
    Allowed(Option<RateLimitInfo>),
    /// Answer this instead.
    Rejected(Rejection),
}

/// The state shared by every clone of one layer and every service it makes.
pub(crate) struct Limiter {
    pub(crate) current: ArcSwap<QuotaSet>,
    hasher: RandomState,
    max_keys: AtomicUsize,
    /// Serialises updates (rename, new quotas, new cap); requests never take it.
    update: Mutex<()>,
    pub(crate) warned_missing_key: AtomicBool,
}

impl Limiter {
    /// A limiter for `quotas`, which the caller has checked.
    pub(crate) fn new(quotas: Vec<Quota>) -> Self {
        let name: Arc<str> = Arc::from("default");
        let set = QuotaSet {
            metrics: RateLimitMetrics::new(&name),
            name,
            quotas: quotas
                .into_iter()
                .map(|q| Arc::new(QuotaState::new(q, DEFAULT_MAX_KEYS)))
                .collect(),
        };
        Self {
            current: ArcSwap::from_pointee(set),
            hasher: RandomState::new(),
            max_keys: AtomicUsize::new(DEFAULT_MAX_KEYS),
            update: Mutex::new(()),
            warned_missing_key: AtomicBool::new(false),
        }
    }

    /// The table key of a request key.
    #[inline]
    pub(crate) fn hash_key<Q: std::hash::Hash>(&self, key: &Q) -> u64 {
        if size_of::<Q>() == 0 {
            // A key type with one value (the global key): every request shares one bucket,
            // so there is nothing to hash.
            return GLOBAL;
        }
        let h = self.hasher.hash_one(key);
        // Clear of the reserved buckets and of the global key's slot.
        if h <= GLOBAL { h + 3 } else { h }
    }

    pub(crate) fn name(&self) -> Arc<str> {
        self.current.load().name.clone()
    }

    pub(crate) fn rename(&self, name: Arc<str>) {
        let _guard = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.load_full();
        self.current.store(Arc::new(QuotaSet {
            metrics: RateLimitMetrics::new(&name),
            name,
            quotas: cur.quotas.clone(),
        }));
    }

    pub(crate) fn set_max_keys(&self, max_keys: usize) {
        let _guard = self.update.lock().unwrap_or_else(|e| e.into_inner());
        self.max_keys.store(max_keys, Ordering::Relaxed);
        for q in self.current.load().quotas.iter() {
            q.table.cap.store(max_keys, Ordering::Relaxed);
        }
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys.load(Ordering::Relaxed)
    }

    /// Replaces the quotas. A quota equal to a current one (same name, rate, period and burst)
    /// keeps its state; others start empty.
    pub(crate) fn set_quotas(&self, quotas: Vec<Quota>) -> Result<(), ConfigError> {
        check_quotas(&quotas)?;
        let _guard = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.load_full();
        let cap = self.max_keys.load(Ordering::Relaxed);
        let quotas = quotas
            .into_iter()
            .map(|q| {
                cur.quotas
                    .iter()
                    .find(|s| s.quota == q)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(QuotaState::new(q, cap)))
            })
            .collect();
        self.current.store(Arc::new(QuotaSet {
            name: cur.name.clone(),
            metrics: RateLimitMetrics::new(&cur.name),
            quotas,
        }));
        Ok(())
    }

    /// Runs a prune of every table now, whatever the thresholds.
    pub(crate) fn prune(&self) {
        for q in self.current.load().quotas.iter() {
            if !q.table.pruning.swap(true, Ordering::Acquire) {
                q.prune_now(q.now());
                q.table.pruning.store(false, Ordering::Release);
            }
        }
    }
}

/// A request that costs more than a quota's whole burst can never pass: refuse it at once,
/// with the quota in the headers (its `q` is below the cost) and a warning in the log.
pub(crate) fn too_costly(set: &QuotaSet, q: &QuotaState, cost: u32) -> Rejection {
    set.metrics.rejected();
    tracing::warn!(
        target: "bulwark::rate_limit",
        limiter = %set.name,
        quota = %q.quota.name(),
        cost,
        burst = q.burst,
        "request costs more than the quota's burst: it can never be allowed"
    );
    let period = q.quota.period();
    Rejection::rate_limited(period, Some(q.info(0, period)))
}

impl Limiter {
    pub(crate) fn table_stats(&self) -> Vec<KeyTableStats> {
        self.current
            .load()
            .quotas
            .iter()
            .map(|q| {
                let (keys, capacity, max_keys, overflowed) = q.table.stats();
                KeyTableStats {
                    quota: q.quota.name().to_owned(),
                    keys,
                    capacity,
                    max_keys,
                    overflowed,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn allowed(v: &Verdict) -> bool {
        matches!(v, Verdict::Allowed(_))
    }

    #[tokio::test(start_paused = true)]
    async fn refused_requests_are_refunded_by_the_other_quotas() {
        let second = Quota::per_second(n(10)).named("second");
        let lim = Limiter::new(vec![
            second.clone(),
            Quota::per_minute(n(3)).named("minute"),
        ]);
        let set = lim.current.load_full();
        for _ in 0..3 {
            assert!(allowed(&set.check(7, n(1), false)));
        }
        // The minute quota refuses these; the second quota must not be charged for them.
        for _ in 0..20 {
            assert!(!allowed(&set.check(7, n(1), false)));
        }
        // Keep only the second quota (same settings, so same state), at the same instant:
        // 10 - 3 = 7 requests left there.
        lim.set_quotas(vec![second]).unwrap();
        let set = lim.current.load_full();
        for i in 0..7 {
            assert!(allowed(&set.check(7, n(1), false)), "request {i}");
        }
        assert!(!allowed(&set.check(7, n(1), false)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_capped_and_pruned() {
        let lim = Limiter::new(vec![Quota::per_second(n(1))]);
        lim.set_max_keys(100);
        let set = lim.current.load();
        // Table keys as `hash_key` makes them: above the global key's slot.
        for k in GLOBAL + 1..GLOBAL + 1_001 {
            let _ = set.check(k, n(1), false);
        }
        let stats = &lim.table_stats()[0];
        assert!(stats.keys <= 101, "{stats:?}");
        assert!(stats.overflowed >= 900, "{stats:?}");
        // Idle for two emission intervals: everything can go.
        tokio::time::advance(Duration::from_secs(2)).await;
        lim.prune();
        assert_eq!(lim.table_stats()[0].keys, 0);
        // And new keys get their own buckets again.
        assert!(allowed(&set.check(5_000, n(1), false)));
        assert!(!allowed(&set.check(5_000, n(1), false)));
        assert!(allowed(&set.check(5_001, n(1), false)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_key_has_its_own_slot() {
        let lim = Limiter::new(vec![Quota::per_second(n(1))]);
        let set = lim.current.load();
        assert!(allowed(&set.check(GLOBAL, n(1), false)));
        assert!(!allowed(&set.check(GLOBAL, n(1), false)));
        assert_eq!(lim.table_stats()[0].keys, 1);
        // Idle long enough: pruning forgets it like any key, and it starts full again.
        tokio::time::advance(Duration::from_secs(2)).await;
        lim.prune();
        assert_eq!(lim.table_stats()[0].keys, 0);
        assert!(allowed(&set.check(GLOBAL, n(1), false)));
        assert!(!allowed(&set.check(GLOBAL, n(1), false)));
    }

    #[test]
    fn hashed_keys_avoid_the_reserved_buckets() {
        let lim = Limiter::new(vec![Quota::per_second(n(1))]);
        for k in 0..10_000u32 {
            assert!(lim.hash_key(&k) > GLOBAL);
        }
    }
}
