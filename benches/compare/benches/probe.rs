//! Runs one `compare` case a given number of times, without criterion, so that bulwark and its
//! peers can be compared by exact instruction counts on a noisy machine (see BENCHMARKS.md):
//!
//! ```sh
//! cargo bench -p bulwark-compare --bench probe --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/a.out target/release/deps/probe-<hash> moka 2000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/b.out target/release/deps/probe-<hash> moka 12000
//! ```
//!
//! The difference of the two totals divided by 10,000 is the cost of one iteration; subtract the
//! `bare` (or `axum_bare`) case's for the overhead. An instruction count is not a time (a TSC
//! read is one instruction of ~25 cycles, a cache miss costs nothing here), so these numbers
//! explain the criterion timings rather than replace them. The governor and tower_governor
//! cases do not give reproducible counts: quanta calibrates its clock for a time, not a number
//! of steps, on first use. Time them instead (`probe <case> 1000000`). Run without a case (as
//! `cargo bench` does), it does nothing.

#[macro_use]
mod peers;

use std::{hint::black_box, time::Duration};

use bulwark_compare::{axum_bare, axum_request, bare, call, request};
use tower::Layer;

const CASES: &str = "bare, moka, bulwark_hit, tower_resilience_hit, axum_bare, governor_direct, \
    governor_keyed, bulwark_global, bulwark_ip, tower_governor_global, tower_governor_ip, \
    bulwark_log, tower_http_log, bulwark_breaker, failsafe_breaker";

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let (Some(case), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    macro_rules! run {
        ($svc:expr, $req:expr) => {{
            let mut svc = $svc;
            // The first call fills a cache; it is in both runs, so it cancels out.
            let _ = call(&mut svc, $req());
            for _ in 0..n {
                black_box(call(&mut svc, $req()).is_ok());
            }
        }};
    }
    use peers::plenty;
    match case.as_str() {
        "bare" => run!(bare(), request),
        "moka" => {
            let floor = peers::moka_floor();
            for _ in 0..=n {
                let req = request();
                black_box(floor.get(&req.uri().to_string()).is_some());
            }
        }
        "bulwark_hit" => run!(
            bulwark::cache::CacheLayer::new(bulwark::cache::CacheStore::memory(1 << 20))
                .ttl(Duration::from_secs(3_600))
                .layer(bare()),
            request
        ),
        "tower_resilience_hit" => run!(tower_resilience_cache!().layer(bare()), request),
        "axum_bare" => run!(axum_bare(), axum_request),
        "governor_direct" => {
            let direct = peers::governor_direct();
            for _ in 0..=n {
                black_box(direct.check().is_ok());
            }
        }
        "governor_keyed" => {
            let keyed = peers::governor_keyed();
            let ip = bulwark_compare::PEER.ip();
            for _ in 0..=n {
                black_box(keyed.check_key(&ip).is_ok());
            }
        }
        "bulwark_global" => run!(
            bulwark::rate_limit::RateLimitLayer::new(plenty()).layer(axum_bare()),
            axum_request
        ),
        "bulwark_ip" => run!(
            bulwark::rate_limit::RateLimitLayer::new(plenty())
                .key(bulwark::key::PeerIp::new())
                .layer(axum_bare()),
            axum_request
        ),
        "tower_governor_global" => run!(tower_governor!(global).layer(axum_bare()), axum_request),
        "tower_governor_ip" => run!(tower_governor!(peer_ip).layer(axum_bare()), axum_request),
        "bulwark_log" => run!(
            bulwark::log::RequestLogLayer::new()
                .request_metrics(false)
                .layer(bare()),
            request
        ),
        "tower_http_log" => run!(
            tower_http::trace::TraceLayer::new_for_http().layer(bare()),
            request
        ),
        "bulwark_breaker" => run!(
            bulwark::circuit_breaker::CircuitBreakerLayer::new(
                bulwark::circuit_breaker::CircuitBreakerConfig::builder()
                    .count_window(100)
                    .build()
                    .expect("valid config")
            )
            .layer(bare()),
            request
        ),
        "failsafe_breaker" => {
            use tower::Service;
            let breaker = failsafe::Config::new().build();
            let mut inner = bare();
            run!(
                tower::service_fn(move |req| {
                    failsafe::futures::CircuitBreaker::call(&breaker, inner.call(req))
                }),
                request
            )
        }
        other => eprintln!("unknown case {other}: {CASES}"),
    }
}
