//! The key table of one quota: a bounded map from hashed keys to their GCRA state.
//!
//! Keys are not stored: a request's key is hashed with a per-limiter random SipHash key
//! ([`RandomState`](std::hash::RandomState)) into a `u64`, and that is what the table holds,
//! next to the key's TAT (one `AtomicU64`). So a table entry is 16 bytes whatever the key type (an API key, a tenant
//! name), raw keys never sit in memory, and a client that cannot see the hash key cannot pick
//! two keys that share a bucket (two keys share one with probability 2^-64 per pair).
//!
//! The table is a [`DashMap`] whose size is capped exactly with one lookup per request; a
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

use std::hash::{BuildHasherDefault, Hasher};

use dashmap::DashMap;

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The bucket shared by new keys while the table is full.
pub(crate) const OVERFLOW: u64 = 0;
/// The bucket shared by requests without a key (`MissingKey::SharedBucket`).
pub(crate) const UNKEYED: u64 = 1;

/// The key of a key type with one value (the global key): its state has a slot of its own
/// beside the map, so a global limiter never takes the map's shard lock.
pub(crate) const GLOBAL: u64 = UNKEYED + 1;

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
    pub(super) global: AtomicU64,
    /// Keys holding a slot, counted on insert and prune (DashMap's own `len` locks every
    /// shard); the shared buckets are not among them.
    pub(super) len: AtomicUsize,
    pub(super) cap: AtomicUsize,
    pub(super) inserts_since_prune: AtomicUsize,
    pub(super) prune_wanted: AtomicBool,
    pub(super) pruning: AtomicBool,
    /// Requests sent to the overflow bucket, ever, and the count last reported.
    pub(super) overflowed: AtomicU64,
    pub(super) overflow_reported: AtomicU64,
    /// Limiter time (ns since the table's origin) before which a prune of a full table waits.
    pub(super) next_full_prune: AtomicU64,
}

impl KeyTable {
    pub(super) fn new(cap: usize) -> Self {
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

    pub(super) fn prune_every(&self) -> usize {
        (self.cap.load(Ordering::Relaxed) / 8).max(64)
    }

    /// Takes a slot for a new key, if the cap allows.
    pub(super) fn reserve_slot(&self) -> bool {
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
    pub(super) fn update<T, E>(
        &self,
        key: u64,
        f: impl Fn(u64) -> Result<(T, u64), E>,
    ) -> Result<T, E> {
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
            // A shared bucket (the overflow or the unkeyed one) takes no slot: `len` counts
            // keys only, so that with the cap reached, the cap's worth of keys still fit.
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
    pub(super) fn refund(&self, key: u64, amount: u64) {
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

    /// Gives back the map's spare room once it is more than four times `entries` (and more
    /// than a thousand entries' worth): a flood of keys that is gone leaves no large table.
    pub(super) fn shrink_if_sparse(&self, entries: usize) {
        if self.map.capacity() > 4 * entries + 1_024 {
            self.map.shrink_to_fit();
        }
    }

    /// Drops every state at or below `now`: a bucket that is full says nothing a fresh one
    /// would not, so this never changes a decision.
    pub(super) fn retain_recent(&self, now: u64) {
        let _ = self
            .global
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat != 0 && tat <= now).then_some(0)
            });
        let mut removed = 0usize;
        self.map.retain(|key, state| {
            let keep = state.load(Ordering::Relaxed) > now;
            removed += usize::from(!keep && *key > UNKEYED);
            keep
        });
        self.len.fetch_sub(removed, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> (usize, usize, usize, u64) {
        let global = usize::from(self.global.load(Ordering::Relaxed) != 0);
        let shared = usize::from(self.map.contains_key(&OVERFLOW))
            + usize::from(self.map.contains_key(&UNKEYED));
        (
            self.len.load(Ordering::Relaxed) + shared + global,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets `key`'s state to `tat` and returns what it was.
    fn set(table: &KeyTable, key: u64, tat: u64) -> u64 {
        table.update(key, |prev| Ok::<_, ()>((prev, tat))).unwrap()
    }

    #[test]
    fn keys_past_the_cap_share_the_overflow_bucket() {
        let table = KeyTable::new(2);
        assert_eq!(set(&table, 100, 5), 0);
        assert_eq!(set(&table, 101, 6), 0);
        // Full: a third key lands in the overflow bucket, and a fourth shares it.
        assert_eq!(set(&table, 102, 7), 0);
        assert_eq!(set(&table, 103, 8), 7, "the overflow bucket's state");
        assert_eq!(set(&table, 100, 9), 5, "known keys keep their own state");
        let (len, _, cap, overflowed) = table.stats();
        assert_eq!(
            (len, cap, overflowed),
            (3, 2, 2),
            "two keys and the overflow bucket"
        );
        assert!(table.prune_wanted.load(Ordering::Relaxed));
    }

    /// Regression: the shared buckets counted against the cap, so once the overflow bucket
    /// (or the unkeyed one) existed, a table with room for N keys held N - 1 or N - 2.
    #[test]
    fn reserved_keys_never_take_a_slot() {
        let table = KeyTable::new(1);
        set(&table, UNKEYED, 3);
        set(&table, GLOBAL, 4);
        set(&table, 100, 5);
        assert_eq!(set(&table, 100, 6), 5, "the one slot was still free");
        assert_eq!(table.stats().3, 0, "nothing overflowed");
    }

    #[test]
    fn a_refund_gives_time_back_but_never_empties_a_state() {
        let table = KeyTable::new(4);
        set(&table, 100, 50);
        table.refund(100, 20);
        assert_eq!(set(&table, 100, 50), 30);
        table.refund(100, 1_000);
        assert_eq!(set(&table, 100, 0), 1, "a full bucket, still known");
        set(&table, GLOBAL, 10);
        table.refund(GLOBAL, 4);
        assert_eq!(set(&table, GLOBAL, 0), 6);
    }

    #[test]
    fn pruning_drops_only_states_in_the_past() {
        let table = KeyTable::new(8);
        set(&table, 100, 10);
        set(&table, 101, 30);
        set(&table, GLOBAL, 15);
        table.retain_recent(20);
        let (len, ..) = table.stats();
        assert_eq!(len, 1, "only key 101 is left");
        assert_eq!(set(&table, 101, 0), 30);
        assert_eq!(set(&table, 100, 0), 0, "pruned: starts afresh");
        assert_eq!(set(&table, GLOBAL, 0), 0);
    }
}
