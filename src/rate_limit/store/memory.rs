//! The in-process limiter: the GCRA (generic cell rate algorithm) per quota, each quota over
//! a bounded key table, and the shared state every clone of a layer points at.
//!
//! # The algorithm
//!
//! A key's state is one number, its theoretical arrival time (TAT): when its bucket would be
//! full again. With `T` the time one request takes to come back (`period / rate`) and a burst
//! of `b`, a request of cost `n` at time `now` fits if `max(TAT, now) + n·T ≤ now + b·T`, and
//! then moves the TAT to `max(TAT, now) + n·T`; otherwise it must wait until that holds. One
//! compare-and-swap per request, no refill task, no lock (this is the algorithm governor and
//! tower-governor use, written here over our own table and clock).
//!
//! # The key table
//!
//! Keys are not stored: a request's key is hashed with a per-limiter random SipHash key
//! ([`RandomState`]) into a `u64`, and that is what the table holds, next to the key's TAT
//! (one `AtomicU64`). So a table entry is 16 bytes whatever the key type (an API key, a tenant
//! name), raw keys never sit in memory, and a client that cannot see the hash key cannot pick
//! two keys that share a bucket (two keys share one with probability 2^-64 per pair).
//!
//! The table is a [`DashMap`] whose size is capped exactly with one lookup per request, and a
//! request rejected by one quota gives back what it took from the others (a refund).
//!
//! Size: at most `max_keys` entries plus two reserved buckets (the overflow bucket and the
//! bucket of requests without a key). A key that arrives when the table is full shares the
//! overflow bucket with every other such key until pruning makes room. Pruning drops entries
//! whose bucket is full (TAT at or before now: such an entry says nothing a fresh one would
//! not, so pruning never changes a decision). It runs on the request path but amortised: after
//! every `max(max_keys / 8, 64)` insertions, and when a new key finds the table full (then at
//! most once per second of limiter time). After a prune the table's spare capacity is released
//! once it is more than four times the entries.

use std::{
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::{
    ConfigError, RateLimitInfo, Rejection,
    clock::Monotonic,
    rate_limit::{Quota, metrics::RateLimitMetrics, quota::check_quotas},
};

/// The bucket shared by new keys while the table is full.
pub(crate) const OVERFLOW: u64 = 0;
/// The bucket shared by requests without a key (`MissingKey::SharedBucket`).
pub(crate) const UNKEYED: u64 = 1;

/// The key of a key type with one value (the global key): its state has a slot of its own
/// beside the map, so a global limiter never takes the map's shard lock.
pub(crate) const GLOBAL: u64 = UNKEYED + 1;

/// The default cap on keys per quota.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

/// Table keys are SipHash outputs already: hash them as themselves.
#[derive(Default, Clone, Copy)]
struct U64Identity(u64);

impl Hasher for U64Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (keys are `u64`); fold anything else in, just in case.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = DashMap<u64, AtomicU64, BuildHasherDefault<U64Identity>>;

/// One quota's bounded key table. A state is a key's theoretical arrival time (TAT), in
/// nanoseconds since the quota's origin; 0 is "no state".
pub(crate) struct KeyTable {
    map: Map,
    /// The state of [`GLOBAL`].
    global: AtomicU64,
    /// Entries, counted on insert and prune (DashMap's own `len` locks every shard).
    len: AtomicUsize,
    cap: AtomicUsize,
    inserts_since_prune: AtomicUsize,
    prune_wanted: AtomicBool,
    pruning: AtomicBool,
    /// Requests sent to the overflow bucket, ever, and the count last reported.
    overflowed: AtomicU64,
    overflow_reported: AtomicU64,
    /// Limiter time (ns since the table's origin) before which a prune of a full table waits.
    next_full_prune: AtomicU64,
}

impl KeyTable {
    fn new(cap: usize) -> Self {
        Self {
            map: Map::default(),
            global: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
            inserts_since_prune: AtomicUsize::new(0),
            prune_wanted: AtomicBool::new(false),
            pruning: AtomicBool::new(false),
            overflowed: AtomicU64::new(0),
            overflow_reported: AtomicU64::new(0),
            next_full_prune: AtomicU64::new(0),
        }
    }

    fn prune_every(&self) -> usize {
        (self.cap.load(Ordering::Relaxed) / 8).max(64)
    }

    /// Takes a slot for a new key, if the cap allows.
    fn reserve_slot(&self) -> bool {
        let cap = self.cap.load(Ordering::Relaxed);
        if self.len.fetch_add(1, Ordering::Relaxed) < cap {
            true
        } else {
            self.len.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Runs `f` on `key`'s state (on the overflow bucket's if the table is full and `key` is
    /// new), storing what it returns unless the state changed meanwhile (then `f` runs again).
    #[inline]
    fn update<T, E>(&self, key: u64, f: impl Fn(u64) -> Result<(T, u64), E>) -> Result<T, E> {
        if key == GLOBAL {
            return update_one(&self.global, f);
        }
        if let Some(state) = self.map.get(&key) {
            return update_one(&state, f);
        }
        let reserved = key <= UNKEYED;
        let slot = reserved || self.reserve_slot();
        let key = if slot {
            key
        } else {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            self.prune_wanted.store(true, Ordering::Relaxed);
            OVERFLOW
        };
        let mut inserted = false;
        let entry = self.map.entry(key).or_insert_with(|| {
            inserted = true;
            AtomicU64::new(0)
        });
        if inserted {
            if !slot || reserved {
                // A shared bucket: counted, but beyond the cap.
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            if self.inserts_since_prune.fetch_add(1, Ordering::Relaxed) + 1 >= self.prune_every() {
                self.prune_wanted.store(true, Ordering::Relaxed);
            }
        } else if slot && !reserved {
            // Another request inserted this key meanwhile.
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        update_one(&entry, f)
    }

    /// Gives back `amount` ns of GCRA time taken by a request that another quota refused.
    fn refund(&self, key: u64, amount: u64) {
        // 0 means "no state"; 1 is "long ago", a full bucket, as good.
        let give_back = |tat: u64| Some(tat.saturating_sub(amount).max(1));
        if key == GLOBAL {
            let _ = self
                .global
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, give_back);
            return;
        }
        let entry = self.map.get(&key).or_else(|| self.map.get(&OVERFLOW));
        if let Some(state) = entry {
            let _ = state.fetch_update(Ordering::AcqRel, Ordering::Acquire, give_back);
        }
    }

    /// Drops every state at or below `now`: a bucket that is full says nothing a fresh one
    /// would not, so this never changes a decision.
    fn retain_recent(&self, now: u64) {
        let _ = self
            .global
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat != 0 && tat <= now).then_some(0)
            });
        let mut removed = 0usize;
        self.map.retain(|_, state| {
            let keep = *state.get_mut() > now;
            removed += usize::from(!keep);
            keep
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> (usize, usize, usize, u64) {
        let global = usize::from(self.global.load(Ordering::Relaxed) != 0);
        (
            self.len.load(Ordering::Relaxed) + global,
            self.map.capacity(),
            self.cap.load(Ordering::Relaxed),
            self.overflowed.load(Ordering::Relaxed),
        )
    }
}

/// One compare-and-swap step: measure with `f`, store its answer if the state did not change
/// meanwhile, retry otherwise.
#[inline]
fn update_one<T, E>(state: &AtomicU64, f: impl Fn(u64) -> Result<(T, u64), E>) -> Result<T, E> {
    let mut prev = state.load(Ordering::Acquire);
    loop {
        let (result, next) = f(prev)?;
        match state.compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
    }
}

/// What the GCRA decided for one quota.
enum Gcra {
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
    tolerance: u64,
    table: Arc<KeyTable>,
    origin: Monotonic,
}

impl QuotaState {
    fn new(quota: Quota, cap: usize) -> Self {
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

    /// Nanoseconds since the origin. (A stored TAT is never 0, "no state": it is at least one
    /// request's weight past some `now`.)
    #[inline]
    fn now(&self) -> u64 {
        self.origin.nanos()
    }

    /// The time `cost` requests take to come back.
    fn weight(&self, cost: u32) -> u64 {
        self.emission.saturating_mul(u64::from(cost))
    }

    /// The GCRA for `cost` requests (at most the burst) of `key`, now: allowed if the key's
    /// TAT, once this request's weight is added, is at most `tolerance` ahead of now.
    #[inline]
    fn decide(&self, key: u64, cost: u32) -> Gcra {
        let now = self.now();
        let weight = self.weight(cost);
        let tolerance = self.tolerance;
        let decided = self.table.update(key, |stored| {
            // No state: a full bucket.
            let tat = if stored == 0 { now } else { stored };
            // The request fits once `tat + weight <= now + tolerance`.
            let earliest = tat.saturating_add(weight).saturating_sub(tolerance);
            if now < earliest {
                return Err(earliest - now);
            }
            let next = tat.max(now).saturating_add(weight);
            Ok((next, next))
        });
        match decided {
            Ok(tat) => Gcra::Allowed { tat, now },
            Err(wait) => Gcra::Refused { wait },
        }
    }

    /// Requests left in the bucket of a key whose TAT is `tat` at `now`.
    fn remaining(&self, tat: u64, now: u64) -> u64 {
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
    fn allowed_info(&self, tat: u64, now: u64) -> RateLimitInfo {
        self.info(
            self.remaining(tat, now),
            Duration::from_nanos(tat.saturating_sub(now)),
        )
    }

    /// Prunes if the table asked for it and no other thread is at it. The check is one relaxed
    /// load on every request; the rest is out of line.
    #[inline]
    fn maybe_prune(&self, limiter: &QuotaSet) {
        if self.table.prune_wanted.load(Ordering::Relaxed) {
            self.prune_wanted(limiter);
        }
    }

    #[cold]
    #[inline(never)]
    fn prune_wanted(&self, limiter: &QuotaSet) {
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
            limiter.metrics.overflow(overflowed - reported);
            if reported == 0 || full && now >= table.next_full_prune.load(Ordering::Relaxed) {
                tracing::warn!(
                    target: "bulwark::rate_limit",
                    limiter = %limiter.name,
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

    fn prune_now(&self, now: u64) {
        let table = &*self.table;
        let before = table.len.load(Ordering::Relaxed);
        table.retain_recent(now);
        let after = table.len.load(Ordering::Relaxed);
        if table.map.capacity() > 4 * after + 1_024 {
            table.map.shrink_to_fit();
        }
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
            q.maybe_prune(set);
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
        q.maybe_prune(self);
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

/// Size of one quota's key table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyTableStats {
    /// The quota's name.
    pub quota: String,
    /// Entries now (keys plus at most two shared buckets).
    pub keys: usize,
    /// Entries the table has room for without growing.
    pub capacity: usize,
    /// The cap on keys.
    pub max_keys: usize,
    /// Requests sent to the shared overflow bucket because the table was full, ever.
    pub overflowed: u64,
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
