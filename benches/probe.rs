//! Runs one `layers` case a given number of times, without criterion, so that instruction
//! counts can be compared exactly on a noisy machine (see BENCHMARKS.md):
//!
//! ```sh
//! cargo bench --bench probe --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/a.out target/release/deps/probe-<hash> hit 2000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/b.out target/release/deps/probe-<hash> hit 12000
//! ```
//!
//! The difference of the two totals divided by 10,000 is the cost of one request. Cases: `bare`,
//! `hit` (cache, memory store, fresh hit), `bypass` (cache, key hook
//! declines), `flag` (feature-flag gate, flag on), `stack` (the seven layers of the `layers`
//! bench's stack group, pass-through), `global` and `ip` (rate limiter, allowed),
//! `log` and `log_quiet` (request log without subscriber, with and without the duration
//! histogram), `log_generated_id` (no histogram, a request without `x-request-id`, against
//! `bare_without_id`), `json` (request log, JSON subscriber at INFO writing to a sink),
//! `last_good` (fallback keeping the last good response, nothing failing: the steady state of a
//! busy route), `last_good_refresh` (the same with `refresh_after`: answers between refreshes
//! stream through). `sizes 1` prints each layer's service and response-future sizes instead.
//! Run without a case (as `cargo bench` does), it does nothing.

mod support;

use std::{hint::black_box, num::NonZeroU32, time::Duration};

use bulwark::{
    cache::{CacheLayer, CacheStore},
    circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer},
    fallback::{FallbackLayer, LastGood},
    flag::{FeatureFlagLayer, FlagDefinition, Flags},
    idempotency::{IdempotencyLayer, IdempotencyStore},
    key::PeerIp,
    log::RequestLogLayer,
    rate_limit::{Quota, RateLimitLayer},
};
use tower::Layer;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let (Some(case), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        return;
    };
    let plenty = || Quota::per_second(NonZeroU32::MAX).burst(NonZeroU32::MAX);
    macro_rules! run {
        ($svc:expr) => {
            run!($svc, support::request())
        };
        ($svc:expr, $req:expr) => {{
            let mut svc = $svc;
            // The first call fills the cache; it is in both runs, so it cancels out.
            support::call(&mut svc, $req);
            for _ in 0..n {
                black_box(support::call(&mut svc, $req));
            }
        }};
    }
    // The seven layers of the `layers` bench's stack group, pass-through.
    macro_rules! stack {
        () => {
            tower::ServiceBuilder::new()
                .layer(RequestLogLayer::new())
                .layer(RateLimitLayer::new(plenty()).key(PeerIp::new()))
                .layer(FeatureFlagLayer::new(
                    Flags::new().with("catalog", FlagDefinition::on()),
                    "catalog",
                ))
                .layer(IdempotencyLayer::new(IdempotencyStore::memory()))
                .layer(CacheLayer::new(CacheStore::memory(1 << 20)).key(|_| None))
                .layer(FallbackLayer::response(http::Response::new("fallback")))
                .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default()))
                .service(support::bare_for::<bulwark::body::RequestBody<support::Body>>())
        };
    }
    let without_id = || {
        let mut req = support::request();
        req.headers_mut().remove("x-request-id");
        req
    };
    match case.as_str() {
        "bare" => run!(support::bare()),
        "last_good" => run!(
            FallbackLayer::last_good(LastGood::new(1_000).expect("valid capacity"))
                .layer(support::bare())
        ),
        "last_good_refresh" => run!(
            FallbackLayer::last_good(
                LastGood::builder()
                    .refresh_after(Duration::from_secs(3600))
                    .build()
                    .expect("valid settings")
            )
            .layer(support::bare())
        ),
        "hit" => run!(
            CacheLayer::new(CacheStore::memory(64 * 1024 * 1024))
                .ttl(Duration::from_secs(3600))
                .layer(support::bare())
        ),
        "bypass" => run!(
            CacheLayer::new(CacheStore::memory(64 * 1024 * 1024))
                .key(|_| None)
                .layer(support::bare())
        ),
        "flag" => run!(
            FeatureFlagLayer::new(Flags::new().with("simple", FlagDefinition::on()), "simple")
                .layer(support::bare())
        ),
        "stack" => run!(stack!()),
        "global" => run!(RateLimitLayer::new(plenty()).layer(support::bare())),
        "ip" => run!(
            RateLimitLayer::new(plenty())
                .key(PeerIp::new())
                .layer(support::bare())
        ),
        "log" => run!(RequestLogLayer::new().layer(support::bare())),
        "log_generated_id" => run!(
            RequestLogLayer::new()
                .request_metrics(false)
                .layer(support::bare()),
            without_id()
        ),
        "bare_without_id" => run!(support::bare(), without_id()),
        "log_quiet" => run!(
            RequestLogLayer::new()
                .request_metrics(false)
                .layer(support::bare())
        ),
        "json" => {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing::Level::INFO)
                .with_writer(std::io::sink)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                run!(
                    RequestLogLayer::new()
                        .request_metrics(false)
                        .layer(support::bare())
                );
            });
        }
        "sizes" => {
            // What a request's future and a service weigh, per layer and for the stack: every
            // layer moves its inner future into its own, so these bytes are copied per request.
            macro_rules! size {
                ($name:expr, $svc:expr) => {{
                    let mut svc = $svc;
                    let future = tower::Service::call(&mut svc, support::request());
                    println!(
                        "{:<16} service {:>5} B   future {:>5} B",
                        $name,
                        std::mem::size_of_val(&svc),
                        std::mem::size_of_val(&future)
                    );
                }};
            }
            size!("bare", support::bare());
            size!(
                "rate_limit",
                RateLimitLayer::new(plenty()).layer(support::bare())
            );
            size!("log", RequestLogLayer::new().layer(support::bare()));
            size!(
                "flag",
                FeatureFlagLayer::new(Flags::new().with("f", FlagDefinition::on()), "f")
                    .layer(support::bare())
            );
            size!(
                "idempotency",
                IdempotencyLayer::new(IdempotencyStore::memory()).layer(support::bare_for())
            );
            size!(
                "cache",
                CacheLayer::new(CacheStore::memory(1 << 20)).layer(support::bare())
            );
            size!(
                "fallback",
                FallbackLayer::response(http::Response::new("fallback")).layer(support::bare())
            );
            size!(
                "breaker",
                CircuitBreakerLayer::new(CircuitBreakerConfig::default()).layer(support::bare())
            );
            size!("stack", stack!());
        }
        other => {
            eprintln!(
                "unknown case {other}: bare, bare_without_id, hit, bypass, flag, stack, global, ip, log, log_quiet, log_generated_id, json; or sizes"
            )
        }
    }
}
