//! The rate limiter (memory store) against a reference model of GCRA, driven by the same
//! generated operations: requests of several keys with costs from 0 to past the burst, time
//! steps, quota sets changed at run time (a quota kept keeps its counts, a new one starts
//! full), and prunes of the key tables. Every answer is compared: allowed or refused, and the
//! `Retry-After` and `RateLimit` values the client reads.

mod support;

use std::{collections::HashMap, convert::Infallible, num::NonZeroU32, time::Duration};

use bulwark::{
    key::HeaderKey,
    rate_limit::{Quota, RateLimitLayer},
};
use http::{HeaderName, Request, Response, StatusCode};
use proptest::prelude::*;
use tower::{Layer, ServiceExt, service_fn};

/// The quotas the generated sets draw from: (name, rate, period in ms, burst).
const POOL: [(&str, u32, u64, u32); 4] = [
    ("a", 5, 1_000, 5),
    ("b", 10, 2_000, 3),
    ("c", 1, 1_000, 2),
    ("d", 100, 60_000, 10),
];

fn quota(i: usize) -> Quota {
    let (name, rate, period, burst) = POOL[i];
    Quota::new(
        NonZeroU32::new(rate).unwrap(),
        Duration::from_millis(period),
    )
    .unwrap()
    .burst(NonZeroU32::new(burst).unwrap())
    .named(name)
}

#[derive(Debug, Clone)]
enum Op {
    Request { key: u8, cost: u32 },
    Advance { ms: u64 },
    SetQuotas(Vec<usize>),
    Prune,
}

fn quota_set() -> impl Strategy<Value = Vec<usize>> {
    proptest::sample::subsequence(vec![0, 1, 2, 3], 1..=3).prop_shuffle()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, prop_oneof![8 => 1u32..=3, 1 => Just(0u32), 1 => 4u32..=12])
            .prop_map(|(key, cost)| Op::Request { key, cost }),
        3 => prop_oneof![0u64..50, 50u64..1_500, Just(100), Just(200), Just(1_000)]
            .prop_map(|ms| Op::Advance { ms }),
        1 => quota_set().prop_map(Op::SetQuotas),
        1 => Just(Op::Prune),
    ]
}

/// What a client sees.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    retry_after: Option<u64>,
    ratelimit: Option<String>,
}

/// GCRA written out: per quota and key, the time the bucket is full again (TAT), in ns.
#[derive(Default)]
struct Model {
    /// Quota pool index -> key -> TAT.
    tats: HashMap<usize, HashMap<u8, u64>>,
    set: Vec<usize>,
}

struct Q {
    name: &'static str,
    emission: u64,
    burst: u32,
    period: u64,
}

fn q(i: usize) -> Q {
    let (name, rate, period_ms, burst) = POOL[i];
    let period = period_ms * 1_000_000;
    Q {
        name,
        emission: period / u64::from(rate),
        burst,
        period,
    }
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

fn ratelimit(name: &str, remaining: u64, reset_ns: u64) -> String {
    format!("\"{name}\";r={remaining};t={}", ceil_secs(reset_ns))
}

impl Model {
    fn set_quotas(&mut self, set: Vec<usize>) {
        // A quota that stays keeps its counts; one that comes (back) starts full.
        self.tats.retain(|i, _| set.contains(i));
        self.set = set;
    }

    fn request(&mut self, key: u8, cost: u32, now: u64) -> Seen {
        if cost == 0 {
            return Seen {
                status: StatusCode::OK,
                retry_after: None,
                ratelimit: None,
            };
        }
        if let Some(&i) = self.set.iter().find(|&&i| cost > q(i).burst) {
            let q = q(i);
            return Seen {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(ceil_secs(q.period).max(1)),
                ratelimit: Some(ratelimit(q.name, 0, q.period)),
            };
        }
        // Every quota decides; all must allow, else nothing is taken.
        let mut allowed = Vec::new();
        let mut refused: Option<(usize, u64)> = None;
        for &i in &self.set {
            let q = q(i);
            let tolerance = q.emission * u64::from(q.burst);
            let weight = q.emission * u64::from(cost);
            let tat = self
                .tats
                .get(&i)
                .and_then(|t| t.get(&key))
                .copied()
                .unwrap_or(now)
                .max(now);
            if tat + weight <= now + tolerance {
                let next = tat + weight;
                let remaining = (now + tolerance - next).min(tolerance) / q.emission;
                allowed.push((i, next, remaining));
            } else {
                let wait = tat + weight - tolerance - now;
                if refused.is_none_or(|(_, w)| wait > w) {
                    refused = Some((i, wait));
                }
            }
        }
        if let Some((i, wait)) = refused {
            let q = q(i);
            let reset = wait + q.emission * u64::from(q.burst - cost);
            return Seen {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(ceil_secs(wait).max(1)),
                ratelimit: Some(ratelimit(q.name, 0, reset)),
            };
        }
        let mut strictest: Option<(usize, u64, u64)> = None;
        for &(i, next, remaining) in &allowed {
            self.tats.entry(i).or_default().insert(key, next);
            if strictest.is_none_or(|(_, _, r)| remaining < r) {
                strictest = Some((i, next, remaining));
            }
        }
        let (i, next, remaining) = strictest.expect("at least one quota");
        Seen {
            status: StatusCode::OK,
            retry_after: None,
            ratelimit: Some(ratelimit(q(i).name, remaining, next - now)),
        }
    }
}

static KEY: HeaderName = HeaderName::from_static("x-key");

fn run(initial: Vec<usize>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = support::paused_runtime();
    rt.block_on(async move {
        let layer = RateLimitLayer::with_quotas(initial.iter().map(|&i| quota(i)))
            .unwrap()
            .key(HeaderKey::new(KEY.clone()))
            .cost(|req: &Request<()>| {
                req.headers()["x-cost"]
                    .to_str()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            })
            .headers_on_allowed(true);
        let handle = layer.handle();
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
        let mut model = Model::default();
        model.set_quotas(initial);
        let start = tokio::time::Instant::now();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Request { key, cost } => {
                    let req = Request::builder()
                        .header(&KEY, format!("k{key}"))
                        .header("x-cost", cost.to_string())
                        .body(())
                        .unwrap();
                    let res = svc.clone().oneshot(req).await.unwrap();
                    let header = |name: &str| {
                        res.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                    };
                    let seen = Seen {
                        status: res.status(),
                        retry_after: header("retry-after").map(|v| v.parse().unwrap()),
                        ratelimit: header("ratelimit"),
                    };
                    let now = u64::try_from(start.elapsed().as_nanos()).unwrap();
                    let want = model.request(key, cost, now);
                    prop_assert_eq!(seen, want, "operation {}: key {} cost {}", n, key, cost);
                }
                Op::Advance { ms } => tokio::time::advance(Duration::from_millis(ms)).await,
                Op::SetQuotas(set) => {
                    handle.set_quotas(set.iter().map(|&i| quota(i))).unwrap();
                    model.set_quotas(set);
                }
                Op::Prune => handle.prune(),
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(support::proptest_cases(96))
    })]

    #[test]
    fn the_limiter_answers_as_the_gcra_model(
        initial in quota_set(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(initial, ops)?;
    }
}
