//! bulwark beside its peers, in one criterion run: each group holds a bare baseline, bulwark's
//! layer and the peers' equivalents, all called with the same request and response types, so
//! overheads and ratios are read within one run.
//!
//! `cargo bench -p bulwark-compare`

#[macro_use]
mod peers;

use std::{hint::black_box, num::NonZeroU32, sync::Arc, time::Duration};

use bulwark_compare::{Body, axum_bare, axum_request, bare, call, request, unavailable};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Layer, Service};

/// Runs `f` inside a tokio runtime context (some peers read tokio's clock or make sleeps).
fn in_runtime<T>(f: impl FnOnce() -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    f()
}

macro_rules! case {
    ($group:expr, $name:expr, $svc:expr) => {{
        let mut svc = $svc;
        $group.bench_function($name, |b| {
            b.iter(|| black_box(call(&mut svc, request()).is_ok()));
        });
    }};
}

fn circuit_breaker(c: &mut Criterion) {
    in_runtime(|| {
        let mut group = c.benchmark_group("compare/circuit_breaker");
        case!(group, "baseline", bare());

        use bulwark::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
        let count = CircuitBreakerConfig::builder()
            .count_window(100)
            .build()
            .expect("valid config");
        case!(
            group,
            "bulwark/closed",
            CircuitBreakerLayer::new(count.clone()).layer(bare())
        );

        let peer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .sliding_window_size(100)
            .build()
            .expect("valid config");
        case!(group, "tower-resilience/closed", peer.layer(bare()));

        let failsafe_closed = failsafe::Config::new().build();
        let mut inner = bare();
        case!(
            group,
            "failsafe/closed",
            tower::service_fn(move |req: Request<Body>| {
                failsafe::futures::CircuitBreaker::call(&failsafe_closed, inner.call(req))
            })
        );

        let open = CircuitBreakerLayer::new(count);
        open.handle().force_open();
        case!(group, "bulwark/open", open.layer(bare()));

        let (peer, handle) = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .sliding_window_size(100)
            .build_with_handle()
            .expect("valid config");
        futures_lite_block_on(handle.force_open());
        case!(group, "tower-resilience/open", peer.layer(bare()));

        // failsafe has no manual open: trip it with one failure under a consecutive-failures
        // policy, then measure its rejection (an error value, not an HTTP answer).
        let policy = failsafe::failure_policy::consecutive_failures(
            1,
            failsafe::backoff::constant(Duration::from_secs(3_600)),
        );
        let failsafe_open = failsafe::Config::new().failure_policy(policy).build();
        let _ = futures_lite_block_on(failsafe::futures::CircuitBreaker::call(
            &failsafe_open,
            async { Err::<(), ()>(()) },
        ));
        let mut inner = bare();
        case!(
            group,
            "failsafe/open",
            tower::service_fn(move |req: Request<Body>| {
                failsafe::futures::CircuitBreaker::call(&failsafe_open, inner.call(req))
            })
        );
        group.finish();
    });
}

fn fallback(c: &mut Criterion) {
    in_runtime(|| {
        let mut group = c.benchmark_group("compare/fallback");
        case!(group, "baseline", bare());
        let ours = bulwark::fallback::FallbackLayer::response(Response::new("fallback"));
        case!(group, "bulwark/pass_through", ours.layer(bare()));
        let peer = tower_resilience::fallback::FallbackLayer::<
            Request<Body>,
            Response<Body>,
            std::convert::Infallible,
        >::value(Response::new(Body::from("fallback")));
        case!(group, "tower-resilience/pass_through", peer.layer(bare()));
        case!(group, "bulwark/triggered", ours.layer(unavailable()));
        group.finish();
    });
}

macro_rules! axum_case {
    ($group:expr, $name:expr, $svc:expr) => {{
        let mut svc = $svc;
        $group.bench_function($name, |b| {
            b.iter(|| black_box(call(&mut svc, axum_request()).is_ok()));
        });
    }};
}

/// The rate-limit group answers with `axum::body::Body` throughout: tower_governor can build
/// its responses with no other body type.
fn rate_limit(c: &mut Criterion) {
    in_runtime(|| {
        let mut group = c.benchmark_group("compare/rate_limit");
        axum_case!(group, "baseline", axum_bare());

        // Floors: governor's own checks, without any service around them.
        let direct = peers::governor_direct();
        group.bench_function("floor/governor_direct_check", |b| {
            b.iter(|| black_box(direct.check().is_ok()));
        });
        let keyed = peers::governor_keyed();
        let ip = bulwark_compare::PEER.ip();
        group.bench_function("floor/governor_keyed_check", |b| {
            b.iter(|| black_box(keyed.check_key(&ip).is_ok()));
        });
        // bulwark's limiter reads the monotonic clock (through tokio's `Instant`, so that tests
        // can pause it), governor the TSC (through quanta): each read alone, as floors.
        group.bench_function("floor/clock_read/monotonic", |b| {
            b.iter(|| black_box(std::time::Instant::now()));
        });
        let quanta = governor::clock::QuantaClock::default();
        group.bench_function("floor/clock_read/governor_quanta", |b| {
            b.iter(|| black_box(governor::clock::Clock::now(&quanta)));
        });

        // bulwark: a quota no run can exhaust, and one that refuses everything after its
        // first request.
        use peers::plenty;
        axum_case!(
            group,
            "bulwark/allowed/global",
            bulwark::rate_limit::RateLimitLayer::new(plenty()).layer(axum_bare())
        );
        axum_case!(
            group,
            "bulwark/allowed/ip",
            bulwark::rate_limit::RateLimitLayer::new(plenty())
                .key(bulwark::key::PeerIp::new())
                .layer(axum_bare())
        );
        let mut ours_rejecting = bulwark::rate_limit::RateLimitLayer::new(
            bulwark::rate_limit::Quota::per_hour(NonZeroU32::MIN),
        )
        .layer(axum_bare());
        let _ = call(&mut ours_rejecting, axum_request());
        axum_case!(group, "bulwark/rejected", ours_rejecting);

        let mut tower_limit =
            tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(axum_bare());
        group.bench_function("tower/allowed", |b| {
            // `tower::limit::RateLimit` is polled ready before every call, as `call` does.
            b.iter(|| black_box(call(&mut tower_limit, axum_request()).is_ok()));
        });

        axum_case!(
            group,
            "tower_governor/allowed/global",
            tower_governor!(global).layer(axum_bare())
        );
        axum_case!(
            group,
            "tower_governor/allowed/ip",
            tower_governor!(peer_ip).layer(axum_bare())
        );
        let strict = tower_governor::governor::GovernorConfigBuilder::default()
            .per_second(3_600)
            .burst_size(1)
            .key_extractor(tower_governor::key_extractor::GlobalKeyExtractor)
            .finish()
            .expect("valid config");
        let mut rejecting = tower_governor::GovernorLayer::new(Arc::new(strict)).layer(axum_bare());
        let _ = call(&mut rejecting, axum_request());
        axum_case!(group, "tower_governor/rejected", rejecting);

        let peer = tower_resilience::ratelimiter::RateLimiterLayer::builder()
            .limit_for_period(usize::MAX / 2)
            .refresh_period(Duration::from_secs(1))
            .timeout_duration(Duration::ZERO)
            .build()
            .expect("valid config");
        axum_case!(group, "tower-resilience/allowed", peer.layer(axum_bare()));
        group.finish();
    });
}

fn cache(c: &mut Criterion) {
    in_runtime(|| {
        let mut group = c.benchmark_group("compare/cache");
        case!(group, "baseline", bare());

        let floor = peers::moka_floor();
        group.bench_function("floor/moka_sync_hit", |b| {
            b.iter(|| {
                let req = request();
                black_box(floor.get(&req.uri().to_string()).is_some())
            });
        });

        let mut svc = tower_resilience_cache!().layer(bare());
        let _ = call(&mut svc, request());
        case!(group, "tower-resilience/hit", svc);

        let mut ours = bulwark::cache::CacheLayer::new(bulwark::cache::CacheStore::memory(1 << 20))
            .ttl(Duration::from_secs(3_600))
            .layer(bare());
        let _ = call(&mut ours, request());
        case!(group, "bulwark/hit", ours);
        group.finish();
    });
}

fn log(c: &mut Criterion) {
    use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
    use tracing::Level;
    in_runtime(|| {
        let mut group = c.benchmark_group("compare/log");
        case!(group, "baseline", bare());
        case!(
            group,
            "bulwark/no_subscriber",
            bulwark::log::RequestLogLayer::new()
                .request_metrics(false)
                .layer(bare())
        );
        case!(
            group,
            "tower-http/no_subscriber",
            TraceLayer::new_for_http().layer(bare())
        );

        // tower-http's equivalent of what bulwark's layer does besides tracing: set a request
        // id when missing and echo it on the response.
        case!(
            group,
            "tower-http+request_id/no_subscriber",
            tower::ServiceBuilder::new()
                .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                    tower_http::request_id::MakeRequestUuid
                ))
                .layer(TraceLayer::new_for_http())
                .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
                .service(bare())
        );

        let json = || {
            tracing_subscriber::fmt()
                .json()
                .with_max_level(Level::INFO)
                .with_writer(std::io::sink)
                .finish()
        };
        tracing::subscriber::with_default(json(), || {
            case!(
                group,
                "bulwark/json_subscriber",
                bulwark::log::RequestLogLayer::new()
                    .request_metrics(false)
                    .layer(bare())
            );
        });
        tracing::subscriber::with_default(json(), || {
            case!(
                group,
                "tower-http/json_subscriber",
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                    .on_response(DefaultOnResponse::new().level(Level::INFO))
                    .layer(bare())
            );
        });
        group.finish();
    });
}

fn stack(c: &mut Criterion) {
    in_runtime(|| {
        let mut group = c.benchmark_group("compare/stack");
        case!(group, "baseline", bare());
        // tower-resilience's four layers: fallback, breaker, limiter, cache (hit).
        let fallback = tower_resilience::fallback::FallbackLayer::<
            Request<Body>,
            Response<Body>,
            tower::BoxError,
        >::value(Response::new(Body::from("fallback")));
        let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .sliding_window_size(100)
            .build()
            .expect("valid config");
        let limiter = tower_resilience::ratelimiter::RateLimiterLayer::builder()
            .limit_for_period(usize::MAX / 2)
            .refresh_period(Duration::from_secs(1))
            .timeout_duration(Duration::ZERO)
            .build()
            .expect("valid config");
        let cache = tower_resilience_cache!();
        let svc = tower::ServiceBuilder::new()
            .layer(fallback)
            .map_err(tower::BoxError::from)
            .layer(breaker)
            .map_err(tower::BoxError::from)
            .layer(limiter)
            .map_err(tower::BoxError::from)
            .layer(cache)
            .service(bare());
        let mut svc = svc;
        let _ = call(&mut svc, request());
        case!(group, "tower-resilience/four_layers_cache_hit", svc);

        // bulwark: the same four (fallback, breaker, limiter, cache hit), then all seven in the
        // README's order (the layers not landed yet in this bench are added as they land).
        let mut ours = tower::ServiceBuilder::new()
            .layer(bulwark::rate_limit::RateLimitLayer::new(peers::plenty()))
            .layer(
                bulwark::cache::CacheLayer::new(bulwark::cache::CacheStore::memory(1 << 20))
                    .ttl(Duration::from_secs(3_600)),
            )
            .layer(bulwark::fallback::FallbackLayer::response(Response::new(
                "fallback",
            )))
            .layer(bulwark::circuit_breaker::CircuitBreakerLayer::new(
                bulwark::circuit_breaker::CircuitBreakerConfig::default(),
            ))
            .service(bare());
        let _ = call(&mut ours, request());
        case!(group, "bulwark/four_layers_cache_hit", ours);

        // All seven in the README's order, as a user's build has them (no tokio `test-util`):
        // a GET every layer passes on (the cache's key hook declines it), and a cache hit.
        let seven = |cache: bulwark::cache::CacheLayer| {
            tower::ServiceBuilder::new()
                .layer(bulwark::log::RequestLogLayer::new())
                .layer(
                    bulwark::rate_limit::RateLimitLayer::new(peers::plenty())
                        .key(bulwark::key::PeerIp::new()),
                )
                .layer(bulwark::flag::FeatureFlagLayer::new(
                    bulwark::flag::Flags::new()
                        .with("catalog", bulwark::flag::FlagDefinition::on()),
                    "catalog",
                ))
                .layer(bulwark::idempotency::IdempotencyLayer::new(
                    bulwark::idempotency::IdempotencyStore::memory(),
                ))
                .layer(cache)
                .layer(bulwark::fallback::FallbackLayer::response(Response::new(
                    "fallback",
                )))
                .layer(bulwark::circuit_breaker::CircuitBreakerLayer::new(
                    bulwark::circuit_breaker::CircuitBreakerConfig::default(),
                ))
                .service(bulwark_compare::bare_for())
        };
        case!(
            group,
            "bulwark/seven_layers_pass_through",
            seven(
                bulwark::cache::CacheLayer::new(bulwark::cache::CacheStore::memory(1 << 20))
                    .key(|_| None)
            )
        );
        let mut hit = seven(
            bulwark::cache::CacheLayer::new(bulwark::cache::CacheStore::memory(1 << 20))
                .ttl(Duration::from_secs(3_600)),
        );
        let _ = call(&mut hit, request());
        case!(group, "bulwark/seven_layers_cache_hit", hit);
        group.finish();
    });
}

/// Drives a future that is ready at once (or nearly) on the current thread.
fn futures_lite_block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

criterion_group!(
    benches,
    circuit_breaker,
    fallback,
    rate_limit,
    cache,
    log,
    stack
);
criterion_main!(benches);
