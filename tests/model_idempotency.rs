//! The idempotency memory store against a reference model, driven by the same generated
//! operations on a few keys: claims with several fingerprints and lease lengths, completions
//! (a response, or too large to keep) with retention periods, releases (waited for and
//! detached) by the owner, by a former owner and by a stranger, and time steps past leases and
//! retentions. Every answer is compared; so at most one request owns a key at any time, a
//! late owner never overwrites a newer claim, and a completed response is replayed byte for
//! byte until its retention ends.

mod support;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bulwark::idempotency::{
    Fingerprint, IdempotencyKey, MemoryStore, Store, StoreKey,
    store::{Claim, Completion, LeaseToken, StoredResponse},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Claim {
        key: u8,
        fp: u8,
        lease_ms: u64,
    },
    /// `owner`: which of the tokens handed out so far (modulo their count), or a stranger's.
    Complete {
        key: u8,
        owner: Option<usize>,
        body: Option<u8>,
        retention_ms: u64,
    },
    Release {
        key: u8,
        owner: Option<usize>,
        detached: bool,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let ms = || prop_oneof![Just(1_000u64), Just(5_000), 1u64..10_000];
    prop_oneof![
        4 => (0u8..3, 0u8..2, ms()).prop_map(|(key, fp, lease_ms)| Op::Claim { key, fp, lease_ms }),
        3 => (0u8..3, proptest::option::weighted(0.9, 0usize..8), proptest::option::weighted(0.8, any::<u8>()), ms())
            .prop_map(|(key, owner, body, retention_ms)| Op::Complete { key, owner, body, retention_ms }),
        2 => (0u8..3, proptest::option::weighted(0.9, 0usize..8), any::<bool>())
            .prop_map(|(key, owner, detached)| Op::Release { key, owner, detached }),
        3 => prop_oneof![1u64..2_000, Just(1_000), Just(5_000), 5_000u64..12_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// An entry as the model keeps it: what it is, and when it stops counting (ms since start).
#[derive(Debug, Clone)]
enum Entry {
    Leased {
        token: usize,
        fp: u8,
        until: u64,
    },
    Done {
        fp: u8,
        response: Arc<StoredResponse>,
        until: u64,
    },
    TooLarge {
        fp: u8,
        until: u64,
    },
}

impl Entry {
    fn until(&self) -> u64 {
        match self {
            Entry::Leased { until, .. }
            | Entry::Done { until, .. }
            | Entry::TooLarge { until, .. } => *until,
        }
    }
}

/// The model's view of a claim's answer.
#[derive(Debug, PartialEq)]
enum Seen {
    Acquired,
    InFlight { fp: u8, lease_left_ms: u64 },
    Completed { fp: u8, response: StoredResponse },
    NotReplayable { fp: u8 },
}

fn store_key(k: u8) -> StoreKey {
    StoreKey::new(
        None,
        &IdempotencyKey::parse(format!("key-{k}").as_bytes()).unwrap(),
    )
}

fn fingerprint(fp: u8) -> Fingerprint {
    Fingerprint::from_bytes([fp; 32])
}

fn response(body: u8) -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.append("set-cookie", HeaderValue::from(u16::from(body)));
    StoredResponse {
        status: StatusCode::CREATED,
        headers,
        body: Bytes::from(vec![body; usize::from(body) % 7]),
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = support::paused_runtime();
    rt.block_on(async move {
        let store = MemoryStore::new();
        let mut model: HashMap<u8, Entry> = HashMap::new();
        let mut tokens: Vec<LeaseToken> = Vec::new();
        let mut now = 0u64;
        let stranger = LeaseToken::generate();
        for (n, op) in ops.into_iter().enumerate() {
            // Entries past their time are gone.
            model.retain(|_, e| e.until() > now);
            match op {
                Op::Claim { key, fp, lease_ms } => {
                    let got = store.claim(store_key(key), fingerprint(fp), Duration::from_millis(lease_ms)).await.unwrap();
                    let want = match model.get(&key) {
                        None => Seen::Acquired,
                        Some(Entry::Leased { fp, until, .. }) => Seen::InFlight { fp: *fp, lease_left_ms: until - now },
                        Some(Entry::Done { fp, response, .. }) => Seen::Completed { fp: *fp, response: (**response).clone() },
                        Some(Entry::TooLarge { fp, .. }) => Seen::NotReplayable { fp: *fp },
                    };
                    let seen = match got {
                        Claim::Acquired(token) => {
                            tokens.push(token);
                            model.insert(key, Entry::Leased { token: tokens.len() - 1, fp, until: now + lease_ms });
                            Seen::Acquired
                        }
                        Claim::InFlight { fingerprint, lease_left } => Seen::InFlight {
                            fp: fingerprint.as_bytes()[0],
                            lease_left_ms: u64::try_from(lease_left.as_millis()).unwrap(),
                        },
                        Claim::Completed { fingerprint, response } => Seen::Completed {
                            fp: fingerprint.as_bytes()[0],
                            response: (*response).clone(),
                        },
                        Claim::NotReplayable { fingerprint } => Seen::NotReplayable { fp: fingerprint.as_bytes()[0] },
                        other => panic!("unknown claim {other:?}"),
                    };
                    prop_assert_eq!(seen, want, "operation {}: claim of key {}", n, key);
                }
                Op::Complete { key, owner, body, retention_ms } => {
                    let (token, index) = pick(&tokens, owner, stranger);
                    let completion = match body {
                        Some(b) => Completion::Response(Arc::new(response(b))),
                        None => Completion::TooLarge,
                    };
                    let got = store.complete(store_key(key), token, completion, Duration::from_millis(retention_ms)).await.unwrap();
                    let want = match model.get(&key) {
                        Some(Entry::Leased { token, fp, .. }) if Some(*token) == index => {
                            let fp = *fp;
                            let until = now + retention_ms;
                            model.insert(key, match body {
                                Some(b) => Entry::Done { fp, response: Arc::new(response(b)), until },
                                None => Entry::TooLarge { fp, until },
                            });
                            true
                        }
                        _ => false,
                    };
                    prop_assert_eq!(got, want, "operation {}: completion of key {} by {:?}", n, key, index);
                }
                Op::Release { key, owner, detached } => {
                    let (token, index) = pick(&tokens, owner, stranger);
                    let want = matches!(model.get(&key), Some(Entry::Leased { token, .. }) if Some(*token) == index);
                    if want {
                        model.remove(&key);
                    }
                    if detached {
                        store.release_detached(store_key(key), token);
                    } else {
                        let got = store.release(store_key(key), token).await.unwrap();
                        prop_assert_eq!(got, want, "operation {}: release of key {} by {:?}", n, key, index);
                    }
                }
                Op::Advance { ms } => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    now += ms;
                }
            }
        }
        Ok(())
    })
}

/// The token an operation acts with: one handed out before (and its index), or a stranger's.
fn pick(
    tokens: &[LeaseToken],
    owner: Option<usize>,
    stranger: LeaseToken,
) -> (LeaseToken, Option<usize>) {
    match owner {
        Some(i) if !tokens.is_empty() => {
            let i = i % tokens.len();
            (tokens[i], Some(i))
        }
        _ => (stranger, None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(support::proptest_cases(128))
    })]

    #[test]
    fn the_memory_store_answers_as_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
