//! The in-memory store: a bounded moka cache, atomic per key.

use std::{fmt, sync::Arc, time::Duration};

use moka::{Expiry, ops::compute::Op, sync::Cache};
use tokio::time::Instant;

use super::{Claim, Completion, LeaseToken, Store, StoredResponse};
use crate::{
    StoreError,
    idempotency::{Fingerprint, StoreKey},
};

/// Default capacity of [`MemoryStore::new`]: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// Claims and responses in this process's memory: for one instance, tests and development.
///
/// Bounded by bytes (responses weigh their size); each entry expires with its lease or its
/// retention period. Lease and retention deadlines follow tokio's clock, so tests with
/// `tokio::time::pause` see them expire. When the store is full, the least recently used
/// entries are evicted: a key whose entry was evicted runs again, so size the store for the retention period
/// times the rate of keyed requests. Cheap to clone; clones share the entries.
///
/// Eviction is least recently used first, so a full store gives up its oldest stored answers,
/// never a claim just made: duplicates of a request in flight still see it.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<[u8; 32], Entry>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .finish()
    }
}

#[derive(Clone)]
struct Entry {
    fingerprint: Fingerprint,
    state: State,
    expires_at: Instant,
    ttl: Duration,
}

#[derive(Clone)]
enum State {
    Leased(LeaseToken),
    Done(Arc<StoredResponse>),
    TooLarge,
}

impl Entry {
    fn weight(&self) -> u32 {
        let body = match &self.state {
            State::Done(res) => res.weight(),
            State::Leased(_) | State::TooLarge => 0,
        };
        u32::try_from(body + 96).unwrap_or(u32::MAX)
    }

    fn live(self, now: Instant) -> Option<Self> {
        (self.expires_at > now).then_some(self)
    }
}

struct EntryTtl;

impl Expiry<[u8; 32], Entry> for EntryTtl {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        value: &Entry,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &[u8; 32],
        value: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store of up to [`DEFAULT_MEMORY_BYTES`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_BYTES)
    }

    /// A store of up to `max_bytes` of claims and responses.
    #[must_use]
    pub fn with_capacity(max_bytes: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_bytes)
                // Least recently used first. moka's default (TinyLFU) admits a new entry into a
                // full cache only if it was asked for more often than the one it would push out:
                // a fresh claim, asked for once, would lose to old stored answers and vanish,
                // and its duplicate would run again.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|_, e: &Entry| e.weight())
                .expire_after(EntryTtl)
                .build(),
        }
    }

    /// The number of entries (approximate: moka counts lazily).
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    fn release_now(&self, key: StoreKey, token: LeaseToken) -> bool {
        let now = Instant::now();
        let mut released = false;
        self.cache.entry(*key.as_bytes()).and_compute_with(|cur| {
            match cur.and_then(|e| e.into_value().live(now)) {
                Some(Entry {
                    state: State::Leased(t),
                    ..
                }) if t == token => {
                    released = true;
                    Op::Remove
                }
                _ => Op::Nop,
            }
        });
        released
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut claim = None;
        self.cache.entry(*key.as_bytes()).and_compute_with(|cur| {
            match cur.and_then(|e| e.into_value().live(now)) {
                Some(e) => {
                    claim = Some(match e.state {
                        State::Leased(_) => Claim::InFlight {
                            fingerprint: e.fingerprint,
                            lease_left: e.expires_at - now,
                        },
                        State::Done(response) => Claim::Completed {
                            fingerprint: e.fingerprint,
                            response,
                        },
                        State::TooLarge => Claim::NotReplayable {
                            fingerprint: e.fingerprint,
                        },
                    });
                    Op::Nop
                }
                None => {
                    let token = LeaseToken::generate();
                    claim = Some(Claim::Acquired(token));
                    Op::Put(Entry {
                        fingerprint,
                        state: State::Leased(token),
                        expires_at: now + lease,
                        ttl: lease,
                    })
                }
            }
        });
        claim.ok_or_else(|| StoreError::Malformed {
            operation: "claim",
            detail: "compute closure did not run".to_owned(),
        })
    }

    async fn complete(
        &self,
        key: StoreKey,
        token: LeaseToken,
        completion: Completion,
        retention: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut stored = false;
        self.cache.entry(*key.as_bytes()).and_compute_with(|cur| {
            match cur.and_then(|e| e.into_value().live(now)) {
                Some(Entry {
                    state: State::Leased(t),
                    fingerprint,
                    ..
                }) if t == token => {
                    stored = true;
                    Op::Put(Entry {
                        fingerprint,
                        state: match completion {
                            Completion::Response(res) => State::Done(res),
                            Completion::TooLarge => State::TooLarge,
                        },
                        expires_at: now + retention,
                        ttl: retention,
                    })
                }
                _ => Op::Nop,
            }
        });
        Ok(stored)
    }

    async fn release(&self, key: StoreKey, token: LeaseToken) -> Result<bool, StoreError> {
        Ok(self.release_now(key, token))
    }

    fn release_detached(&self, key: StoreKey, token: LeaseToken) {
        self.release_now(key, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::IdempotencyKey;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn key(s: &str) -> StoreKey {
        StoreKey::new(None, &IdempotencyKey::parse(s.as_bytes()).unwrap())
    }

    const FP: Fingerprint = Fingerprint::from_bytes([7; 32]);
    const LEASE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test(start_paused = true)]
    async fn lease_is_owner_checked_and_expires() {
        let store = MemoryStore::new();
        let Claim::Acquired(token) = store.claim(key("a"), FP, LEASE).await.unwrap() else {
            panic!("first claim");
        };
        assert!(matches!(
            store.claim(key("a"), FP, LEASE).await.unwrap(),
            Claim::InFlight { lease_left, .. } if lease_left == LEASE
        ));
        // Another owner cannot release or complete.
        let other = LeaseToken::generate();
        assert!(!store.release(key("a"), other).await.unwrap());
        assert!(
            !store
                .complete(key("a"), other, Completion::TooLarge, DAY)
                .await
                .unwrap()
        );
        // The lease ends; a new claim wins; the old owner's late completion is refused.
        tokio::time::advance(LEASE).await;
        let Claim::Acquired(newer) = store.claim(key("a"), FP, LEASE).await.unwrap() else {
            panic!("claim after expiry");
        };
        assert!(
            !store
                .complete(key("a"), token, Completion::TooLarge, DAY)
                .await
                .unwrap()
        );
        assert!(
            store
                .complete(key("a"), newer, Completion::TooLarge, DAY)
                .await
                .unwrap()
        );
        assert!(matches!(
            store.claim(key("a"), FP, LEASE).await.unwrap(),
            Claim::NotReplayable { .. }
        ));
        tokio::time::advance(DAY).await;
        assert!(matches!(
            store.claim(key("a"), FP, LEASE).await.unwrap(),
            Claim::Acquired(_)
        ));
    }

    /// A full store must still hold every new claim and its answer: evicting a claim would let
    /// its duplicate run again.
    #[tokio::test]
    async fn a_full_store_still_holds_new_claims() {
        let store = MemoryStore::with_capacity(64 * 1024);
        let mut lost = Vec::new();
        for i in 0..600 {
            // Answers of varied sizes, so that the store is at times too full for a claim.
            let body = Bytes::from(vec![b'x'; 900 + i * 37 % 400]);
            let k = key(&format!("k{i}"));
            let Claim::Acquired(token) = store.claim(k, FP, LEASE).await.unwrap() else {
                panic!("claim {i}");
            };
            // What moka does within a moment in a running server: apply admission and eviction.
            store.cache.run_pending_tasks();
            if !matches!(
                store.claim(k, FP, LEASE).await.unwrap(),
                Claim::InFlight { .. }
            ) {
                lost.push(i);
            }
            let response = Arc::new(StoredResponse {
                status: StatusCode::CREATED,
                headers: HeaderMap::new(),
                body,
            });
            let stored = store
                .complete(k, token, Completion::Response(response), DAY)
                .await
                .unwrap();
            store.cache.run_pending_tasks();
            if !stored
                || !matches!(
                    store.claim(k, FP, LEASE).await.unwrap(),
                    Claim::Completed { .. }
                )
            {
                lost.push(i);
            }
        }
        assert!(lost.is_empty(), "claims or answers lost: {lost:?}");
        // And the store stayed within its bound by dropping old answers.
        store.cache.run_pending_tasks();
        assert!(store.cache.weighted_size() <= 64 * 1024);
        assert!(store.entry_count() < 600);
    }

    #[tokio::test]
    async fn release_frees_the_key() {
        let store = MemoryStore::new();
        let Claim::Acquired(token) = store.claim(key("b"), FP, LEASE).await.unwrap() else {
            panic!();
        };
        assert!(store.release(key("b"), token).await.unwrap());
        assert!(!store.release(key("b"), token).await.unwrap());
        assert!(matches!(
            store.claim(key("b"), FP, LEASE).await.unwrap(),
            Claim::Acquired(_)
        ));
    }
}
