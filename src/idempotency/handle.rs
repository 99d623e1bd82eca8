//! [`IdempotencyHandle`]: the layer's counters.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::metrics::KeyOutcome;

/// Counts of the layer's decisions, shared by every clone of one layer.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) new: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) mismatch: AtomicU64,
    pub(crate) not_replayable: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) store_errors: AtomicU64,
}

impl Stats {
    pub(crate) fn record(&self, outcome: KeyOutcome) {
        let counter = match outcome {
            KeyOutcome::New => &self.new,
            KeyOutcome::Replayed => &self.replayed,
            KeyOutcome::InFlight => &self.in_flight,
            KeyOutcome::Mismatch => &self.mismatch,
            KeyOutcome::NotReplayable => &self.not_replayable,
            KeyOutcome::Released => &self.released,
            KeyOutcome::LeaseLost => &self.lease_lost,
            KeyOutcome::StoreError => &self.store_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        super::metrics::idempotency(outcome);
    }
}

/// A view of an [`IdempotencyLayer`](super::IdempotencyLayer)'s counters, from
/// [`IdempotencyLayer::handle`](super::IdempotencyLayer::handle). Cheap to clone.
#[derive(Debug, Clone)]
pub struct IdempotencyHandle {
    pub(crate) stats: Arc<Stats>,
}

/// A snapshot of the counters, see [`IdempotencyHandle::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct IdempotencyStats {
    /// Requests that claimed their key and ran.
    pub new: u64,
    /// Stored responses replayed.
    pub replayed: u64,
    /// Duplicates answered 409 while the first was in flight.
    pub in_flight: u64,
    /// Keys reused with another request (422).
    pub mismatch: u64,
    /// Retries of a request whose response was too large to keep (409).
    pub not_replayable: u64,
    /// Claims released (5xx, rejection, error, cancelled request) instead of stored.
    pub released: u64,
    /// Responses not stored because their lease had ended.
    pub lease_lost: u64,
    /// Store operations that failed.
    pub store_errors: u64,
}

impl IdempotencyHandle {
    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> IdempotencyStats {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IdempotencyStats {
            new: get(&s.new),
            replayed: get(&s.replayed),
            in_flight: get(&s.in_flight),
            mismatch: get(&s.mismatch),
            not_replayable: get(&s.not_replayable),
            released: get(&s.released),
            lease_lost: get(&s.lease_lost),
            store_errors: get(&s.store_errors),
        }
    }
}
