//! Per-layer overhead: each group measures a layer's paths beside a bare `service_fn`
//! baseline built the same way, so the overhead is read as a difference within one run.
//!
//! `cargo bench --bench layers`

mod support;

use std::{hint::black_box, time::Duration};

use bulwark::fallback::{FallbackLayer, LastGood};
use bulwark::{RateLimitInfo, Rejection, log::RequestLogLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;

fn log(c: &mut Criterion) {
    let mut group = c.benchmark_group("log");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, support::request())));
    });
    let mut svc = RequestLogLayer::new().layer(support::bare());
    group.bench_function("no_subscriber/incoming_id", |b| {
        b.iter(|| black_box(support::call(&mut svc, support::request())));
    });
    group.bench_function("no_subscriber/generated_id", |b| {
        b.iter(|| {
            let mut req = support::request();
            req.headers_mut().remove("x-request-id");
            black_box(support::call(&mut svc, req))
        });
    });
    let mut quiet = RequestLogLayer::new()
        .request_metrics(false)
        .layer(support::bare());
    group.bench_function("no_subscriber/no_metrics", |b| {
        b.iter(|| black_box(support::call(&mut quiet, support::request())));
    });
    // A JSON subscriber at INFO writing every line to a sink: formatting included, I/O not.
    let json = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(json, || {
        group.bench_function("json_subscriber", |b| {
            b.iter(|| black_box(support::call(&mut quiet, support::request())));
        });
    });
    // The duration histogram recorded into a Prometheus recorder (no subscriber).
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        group.bench_function("no_subscriber/prometheus_recorder", |b| {
            b.iter(|| black_box(support::call(&mut svc, support::request())));
        });
    });
    group.finish();
}

fn rejection(c: &mut Criterion) {
    let mut group = c.benchmark_group("rejection");
    let info = RateLimitInfo::new(
        "api",
        100,
        Duration::from_secs(60),
        0,
        Duration::from_secs(3),
    );
    group.bench_function("rate_limited_429", |b| {
        b.iter(|| {
            let r = Rejection::rate_limited(Duration::from_millis(2_500), Some(info.clone()));
            black_box(r.into_response::<support::Body>())
        });
    });
    group.bench_function("circuit_open_503", |b| {
        b.iter(|| {
            black_box(
                Rejection::circuit_open(Duration::from_secs(5)).into_response::<support::Body>(),
            )
        });
    });
    group.finish();
}

/// The bare baseline's twin that answers 503: what the fallback's triggers fire on.
fn unavailable() -> impl tower::Service<
    http::Request<support::Body>,
    Response = http::Response<support::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<support::Body>, std::convert::Infallible>>,
> + Clone {
    tower::service_fn(|_req: http::Request<support::Body>| async {
        let mut res = http::Response::new(support::Body::new(bytes::Bytes::from_static(b"down")));
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Ok(res)
    })
}

fn fallback(c: &mut Criterion) {
    let mut group = c.benchmark_group("fallback");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, support::request())));
    });
    let layer = FallbackLayer::response(http::Response::new("fallback"));
    let mut svc = layer.layer(support::bare());
    group.bench_function("pass_through", |b| {
        b.iter(|| black_box(support::call(&mut svc, support::request())));
    });
    let mut svc = layer.layer(unavailable());
    group.bench_function("triggered", |b| {
        b.iter(|| black_box(support::call(&mut svc, support::request())));
    });
    // Last good: every good answer is buffered and kept; a failing call replays it.
    let store = LastGood::new(1_000).expect("valid capacity");
    let mut svc = FallbackLayer::last_good(store.clone()).layer(support::bare());
    group.bench_function("last_good/keep", |b| {
        b.iter(|| black_box(support::call(&mut svc, support::request())));
    });
    let mut svc = FallbackLayer::last_good(store).layer(unavailable());
    group.bench_function("last_good/replay", |b| {
        b.iter(|| black_box(support::call(&mut svc, support::request())));
    });
    group.finish();
}

fn circuit_breaker(c: &mut Criterion) {
    use bulwark::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    let mut group = c.benchmark_group("circuit_breaker");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, support::request())));
    });
    let mut closed =
        CircuitBreakerLayer::new(CircuitBreakerConfig::default()).layer(support::bare());
    group.bench_function("closed/time_window", |b| {
        b.iter(|| black_box(support::call(&mut closed, support::request())));
    });
    let count = CircuitBreakerConfig::builder()
        .count_window(100)
        .build()
        .expect("valid");
    let mut closed_count = CircuitBreakerLayer::new(count).layer(support::bare());
    group.bench_function("closed/count_window", |b| {
        b.iter(|| black_box(support::call(&mut closed_count, support::request())));
    });
    let open_layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    open_layer.handle().force_open();
    let mut open = open_layer.layer(support::bare());
    group.bench_function("open/rejecting", |b| {
        b.iter(|| black_box(support::call(&mut open, support::request())));
    });
    group.finish();
}

fn idempotency(c: &mut Criterion) {
    use bulwark::{
        body::RequestBody,
        idempotency::{IdempotencyLayer, IdempotencyStore},
    };
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;

    fn post(key: Option<&str>) -> Request<support::Body> {
        let mut req = Request::post("http://example.test/payments")
            .header("content-type", "application/json")
            .header("authorization", "Bearer bench-token");
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.body(Full::new(Bytes::from_static(
            br#"{"amount":1200,"currency":"EUR"}"#,
        )))
        .expect("valid request")
    }
    // The handler: 201 with a Location and a small JSON body, whatever the request body type.
    fn handler<B>() -> impl tower::Service<
        Request<B>,
        Response = Response<support::Body>,
        Error = std::convert::Infallible,
        Future = impl std::future::Future<
            Output = Result<Response<support::Body>, std::convert::Infallible>,
        >,
    > + Clone {
        tower::service_fn(|_req: Request<B>| async {
            Ok(Response::builder()
                .status(201)
                .header("location", "/payments/42")
                .body(Full::new(Bytes::from_static(
                    br#"{"id":42,"amount":1200,"currency":"EUR"}"#,
                )))
                .expect("valid response"))
        })
    }

    let mut group = c.benchmark_group("idempotency");
    let mut bare = handler::<support::Body>();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, post(None))));
    });
    let layer = IdempotencyLayer::new(IdempotencyStore::memory());
    let mut svc = layer.layer(handler::<RequestBody<support::Body>>());
    group.bench_function("no_key", |b| {
        b.iter(|| black_box(support::call(&mut svc, post(None))));
    });
    // A fresh key per call: body read, fingerprint, claim, handler, response buffered and
    // stored. The key's formatting is part of the measured request building.
    let mut n = 0u64;
    group.bench_function("first", |b| {
        b.iter(|| {
            n += 1;
            let key = format!("bench-{n}");
            black_box(support::call(&mut svc, post(Some(&key))))
        });
    });
    black_box(support::call(&mut svc, post(Some("replayed"))));
    group.bench_function("replay", |b| {
        b.iter(|| black_box(support::call(&mut svc, post(Some("replayed")))));
    });
    group.finish();
}

fn rate_limit(c: &mut Criterion) {
    use std::num::NonZeroU32;

    use bulwark::{
        key::PeerIp,
        rate_limit::{Quota, RateLimitLayer},
    };
    let mut group = c.benchmark_group("rate_limit");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, support::request())));
    });
    // A quota no bench run can exhaust: a billion requests per second, bursts of 4 billion.
    let plenty = || Quota::per_second(NonZeroU32::MAX).burst(NonZeroU32::MAX);
    let mut global = RateLimitLayer::new(plenty()).layer(support::bare());
    group.bench_function("allowed/global_key", |b| {
        b.iter(|| black_box(support::call(&mut global, support::request())));
    });
    let mut per_ip = RateLimitLayer::new(plenty())
        .key(PeerIp::new())
        .layer(support::bare());
    group.bench_function("allowed/peer_ip", |b| {
        b.iter(|| black_box(support::call(&mut per_ip, support::request())));
    });
    let mut per_ip_headers = RateLimitLayer::new(plenty())
        .key(PeerIp::new())
        .headers_on_allowed(true)
        .layer(support::bare());
    group.bench_function("allowed/peer_ip_with_headers", |b| {
        b.iter(|| black_box(support::call(&mut per_ip_headers, support::request())));
    });
    let mut two_quotas = RateLimitLayer::with_quotas([
        plenty().named("a"),
        Quota::per_hour(NonZeroU32::MAX).named("b"),
    ])
    .expect("valid quotas")
    .key(PeerIp::new())
    .layer(support::bare());
    group.bench_function("allowed/peer_ip_two_quotas", |b| {
        b.iter(|| black_box(support::call(&mut two_quotas, support::request())));
    });
    let mut rejected = RateLimitLayer::new(Quota::per_hour(NonZeroU32::MIN)).layer(support::bare());
    let _ = support::call(&mut rejected, support::request());
    group.bench_function("rejected/global_key", |b| {
        b.iter(|| {
            let res = support::call(&mut rejected, support::request());
            assert_eq!(res.status(), 429);
            black_box(res)
        });
    });
    group.finish();
}

fn cache(c: &mut Criterion) {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    use bulwark::cache::{CacheLayer, CacheStore};
    let mut group = c.benchmark_group("cache");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, support::request())));
    });
    let memory = || CacheStore::memory(64 * 1024 * 1024);
    // Hit: the answer is in the memory store and fresh.
    let mut hit = CacheLayer::new(memory())
        .ttl(Duration::from_secs(3600))
        .layer(support::bare());
    support::call(&mut hit, support::request());
    group.bench_function("memory/hit", |b| {
        b.iter(|| black_box(support::call(&mut hit, support::request())));
    });
    // Miss, stored: every request a new key (the store stays bounded by bytes).
    let n = Arc::new(AtomicU64::new(0));
    let mut miss = CacheLayer::new(memory())
        .ttl(Duration::from_secs(3600))
        .key(move |_| Some(format!("k{}", n.fetch_add(1, Ordering::Relaxed))))
        .layer(support::bare());
    group.bench_function("memory/miss_stored", |b| {
        b.iter(|| black_box(support::call(&mut miss, support::request())));
    });
    // Miss, not storable: policy mode and an answer without caching headers.
    let mut uncacheable = CacheLayer::new(memory()).layer(support::bare());
    group.bench_function("memory/miss_not_storable", |b| {
        b.iter(|| black_box(support::call(&mut uncacheable, support::request())));
    });
    // Bypass: the key hook declines.
    let mut bypass = CacheLayer::new(memory())
        .key(|_| None)
        .layer(support::bare());
    group.bench_function("bypass", |b| {
        b.iter(|| black_box(support::call(&mut bypass, support::request())));
    });
    // An unsafe method: passed through, then the URI is invalidated.
    let mut post = CacheLayer::new(memory()).layer(support::bare());
    group.bench_function("post_invalidates", |b| {
        b.iter(|| {
            let mut req = support::request();
            *req.method_mut() = http::Method::POST;
            black_box(support::call(&mut post, req))
        });
    });
    group.finish();
}

/// All the layers, in the README's recommended order, in memory, around the bare baseline: a
/// GET that passes through every layer (the cache's key hook declines it), and a GET answered
/// from the cache.
fn stack(c: &mut Criterion) {
    use std::num::NonZeroU32;

    use bulwark::{
        cache::{CacheLayer, CacheStore},
        circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer},
        flag::{FeatureFlagLayer, FlagDefinition, Flags},
        idempotency::{IdempotencyLayer, IdempotencyStore},
        key::PeerIp,
        rate_limit::{Quota, RateLimitLayer},
    };
    use tower::ServiceBuilder;

    let mut group = c.benchmark_group("stack");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, support::request())));
    });
    let build = |cache: CacheLayer| {
        ServiceBuilder::new()
            .layer(RequestLogLayer::new())
            .layer(
                RateLimitLayer::new(Quota::per_second(NonZeroU32::MAX).burst(NonZeroU32::MAX))
                    .key(PeerIp::new()),
            )
            .layer(FeatureFlagLayer::new(
                Flags::new().with("catalog", FlagDefinition::on()),
                "catalog",
            ))
            .layer(IdempotencyLayer::new(IdempotencyStore::memory()))
            .layer(cache)
            .layer(FallbackLayer::response(http::Response::new("fallback")))
            .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default()))
            .service(support::bare_for())
    };
    let mut pass = build(CacheLayer::new(CacheStore::memory(1 << 20)).key(|_| None));
    group.bench_function("pass_through", |b| {
        b.iter(|| black_box(support::call(&mut pass, support::request())));
    });
    let mut hit =
        build(CacheLayer::new(CacheStore::memory(1 << 20)).ttl(Duration::from_secs(3_600)));
    support::call(&mut hit, support::request());
    group.bench_function("cache_hit", |b| {
        b.iter(|| black_box(support::call(&mut hit, support::request())));
    });
    group.finish();
}

/// A request carrying the default flag context headers (`x-user-id`, `x-user-tier`).
fn flag_request() -> http::Request<support::Body> {
    use http::HeaderValue;
    let mut req = support::request();
    let headers = req.headers_mut();
    headers.insert("x-user-id", HeaderValue::from_static("user-4242"));
    headers.insert("x-user-tier", HeaderValue::from_static("basic"));
    req
}

fn feature_flag(c: &mut Criterion) {
    use bulwark::flag::{
        EvaluationContext, FeatureFlagLayer, FlagDefinition, Flags, Rollout, Rule,
    };
    let mut group = c.benchmark_group("feature_flag");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, flag_request())));
    });
    // Rules that do not match this request, then a 100 % roll-out: the longest on path.
    let rules = FlagDefinition::on()
        .with_rule(Rule::equals("user_id", "blocked").serve(false))
        .with_rule(Rule::in_list("tier", ["staff", "beta", "internal"]))
        .with_rollout(Rollout::percentage(100).expect("valid"));
    let flags = Flags::new()
        .with("simple", FlagDefinition::on())
        .with("off", FlagDefinition::off())
        .with("rules", rules);
    let mut on = FeatureFlagLayer::new(flags.clone(), "simple").layer(support::bare());
    group.bench_function("on/simple", |b| {
        b.iter(|| black_box(support::call(&mut on, flag_request())));
    });
    let mut rollout = FeatureFlagLayer::new(flags.clone(), "rules").layer(support::bare());
    group.bench_function("on/rules_and_rollout", |b| {
        b.iter(|| black_box(support::call(&mut rollout, flag_request())));
    });
    let mut off = FeatureFlagLayer::new(flags.clone(), "off").layer(support::bare());
    group.bench_function("off/rejecting", |b| {
        b.iter(|| black_box(support::call(&mut off, flag_request())));
    });
    // Evaluation alone, without the request around it.
    let ctx = EvaluationContext::new()
        .with("user_id", "user-4242")
        .with("tier", "basic");
    group.bench_function("evaluate/simple", |b| {
        b.iter(|| black_box(flags.evaluate(black_box("simple"), &ctx)));
    });
    group.bench_function("evaluate/rules_and_rollout", |b| {
        b.iter(|| black_box(flags.evaluate(black_box("rules"), &ctx)));
    });
    group.finish();
}

/// Metrics recorded into a Prometheus recorder: per-request metrics keep their handles from the
/// global recorder, and register on every request with a thread-local one. Last of the groups,
/// since the global recorder it installs stays for the rest of the process.
fn prometheus(c: &mut Criterion) {
    use std::num::NonZeroU32;

    use bulwark::rate_limit::{Quota, RateLimitLayer};
    let mut group = c.benchmark_group("prometheus");
    let mut bare = support::bare();
    group.bench_function("baseline", |b| {
        b.iter(|| black_box(support::call(&mut bare, support::request())));
    });
    let mut log = RequestLogLayer::new().layer(support::bare());
    let plenty = Quota::per_second(NonZeroU32::MAX).burst(NonZeroU32::MAX);
    let mut limiter = RateLimitLayer::new(plenty).layer(support::bare());
    let local = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&local, || {
        group.bench_function("log/local_recorder", |b| {
            b.iter(|| black_box(support::call(&mut log, support::request())));
        });
        group.bench_function("rate_limit_allowed/local_recorder", |b| {
            b.iter(|| black_box(support::call(&mut limiter, support::request())));
        });
    });
    let global = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    if metrics::set_global_recorder(global).is_ok() {
        group.bench_function("log/global_recorder", |b| {
            b.iter(|| black_box(support::call(&mut log, support::request())));
        });
        group.bench_function("rate_limit_allowed/global_recorder", |b| {
            b.iter(|| black_box(support::call(&mut limiter, support::request())));
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    log,
    rejection,
    circuit_breaker,
    fallback,
    rate_limit,
    cache,
    idempotency,
    feature_flag,
    stack,
    prometheus
);
criterion_main!(benches);
