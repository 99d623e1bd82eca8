//! The rate limiter's Redis store, against a private `redis-server` (skipped when none is
//! installed, a failure under `CI=true`).
#![cfg(feature = "redis")]

mod support;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use axum::body::Body;
use bulwark::{
    RATELIMIT, Rejection,
    key::{HeaderKey, PeerIp},
    rate_limit::{Quota, RateLimitLayer, store::FailurePolicy},
    redis::Redis,
};
use http::{HeaderName, Request, Response, StatusCode, header::RETRY_AFTER};
use support::{Counter, ReadyProbe, RedisServer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn n(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A key prefix of this test's own, so tests sharing a server never see each other's keys.
fn prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn handler(
    counter: &Counter,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    let counter = counter.clone();
    service_fn(move |_req: Request<Body>| {
        let counter = counter.clone();
        async move {
            counter.hit();
            Ok::<_, Infallible>(Response::new(Body::from("ok")))
        }
    })
}

fn get_from(peer: &str) -> Request<Body> {
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(peer.parse::<SocketAddr>().unwrap());
    req
}

type Answer = Response<bulwark::body::ResponseBody<Body>>;

async fn send<S>(svc: &S, req: Request<Body>) -> Answer
where
    S: Service<Request<Body>, Response = Answer> + Clone,
    S::Error: std::fmt::Debug,
{
    svc.clone().oneshot(req).await.unwrap()
}

/// A plain connection for the test's own commands.
async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

every_backend! {
async fn two_instances_share_one_quota_exactly(d) {
    let prefix = prefix();
    let calls = Counter::default();
    // Two app instances: their own connections, their own layer values, one Redis.
    let instance = || {
        let redis = d.redis().prefix(prefix.clone());
        RateLimitLayer::new(Quota::per_minute(n(5)).named("login"))
            .name("login")
            .key(PeerIp::new())
            .redis(redis)
            .layer(handler(&calls))
    };
    let (a, b) = (instance(), instance());
    let mut allowed = 0;
    for i in 0..12 {
        let svc = if i % 2 == 0 { &a } else { &b };
        let res = send(svc, get_from("192.0.2.1:1000")).await;
        match res.status() {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(res.headers()[RETRY_AFTER], "12");
                assert_eq!(res.headers()[&RATELIMIT], r#""login";r=0;t=60"#);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(allowed, 5, "one quota for both instances, exactly");
    assert_eq!(calls.get(), 5);
    // Another client is not affected.
    assert_eq!(
        send(&b, get_from("192.0.2.2:1000")).await.status(),
        StatusCode::OK
    );

    // The keys: namespaced, hash-tagged per client, IPs as text, expiring.
    let found = d.keys(&format!("{prefix}:*"));
    assert_eq!(
        found,
        vec![
            format!("{prefix}:ratelimit:{{login:ip:192.0.2.1}}:login"),
            format!("{prefix}:ratelimit:{{login:ip:192.0.2.2}}:login"),
        ]
    );
    let ttl: i64 = d.cli_on(0, &["PTTL", &found[0]]).unwrap().trim().parse().unwrap();
    assert!(
        ttl > 55_000 && ttl <= 60_001,
        "expires at the GCRA horizon: {ttl} ms"
    );
}
}

every_backend! {
async fn secret_keys_are_hashed_in_redis(d) {
    let prefix = prefix();
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(5)))
        .name("api")
        .key(HeaderKey::new(HeaderName::from_static("x-api-key")))
        .redis(d.redis().prefix(prefix.clone()))
        .layer(handler(&calls));
    let req = Request::get("/")
        .header("x-api-key", "sk_live_secret_123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&svc, req).await.status(), StatusCode::OK);
    let found = d.keys(&format!("{prefix}:*"));
    assert_eq!(found.len(), 1);
    assert!(!found[0].contains("sk_live"), "{found:?}");
    assert!(
        found[0].starts_with(&format!("{prefix}:ratelimit:{{api:h:"))
            && found[0].ends_with("}:default"),
        "{found:?}"
    );
}
}

/// The same sequence of (time step, cost) through the memory store, in virtual time, and
/// through the Redis script, on the real clock of Redis (`TIME`).
///
/// To hold the two clocks together, the test rewrites the stored times before each request:
/// every time the memory store can hold is a multiple of 50 ms (the steps and the quotas'
/// emission intervals are), so each Redis value is mapped back to virtual time, rounded to
/// that grid (which removes the few milliseconds of real time the script calls took), and
/// written back relative to Redis's clock now, minus 10 ms. Redis then sees 10 ms (plus the
/// call's latency) more elapsed time than the memory store: never less, so a request exactly
/// on a boundary gets the same answer, and far less than the 50 ms grid, so no other request
/// can change sides.
#[test]
fn the_script_decides_like_the_memory_store() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = prefix();
    let quotas = || {
        RateLimitLayer::with_quotas([
            Quota::per_second(n(5)).burst(n(6)).named("s"),
            Quota::per_minute(n(120)).burst(n(30)).named("m"),
        ])
        .unwrap()
        .name("cmp")
        .headers_on_allowed(true)
    };
    let calls = Counter::default();
    let cost =
        |req: &Request<Body>| -> u32 { req.headers()["x-cost"].to_str().unwrap().parse().unwrap() };
    let memory_rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let redis_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let memory = memory_rt.block_on(async { quotas().cost(cost).layer(handler(&calls)) });
    let (redis_svc, mut conn) = redis_rt.block_on(async {
        let redis = Redis::open(&server.url()).unwrap().prefix(prefix.clone());
        (
            quotas().cost(cost).redis(redis).layer(handler(&calls)),
            admin(&server).await,
        )
    });

    // A fixed pseudo-random walk; every time is a multiple of 50 ms, as are every quota's
    // emission intervals, so no request lands just before a decision boundary.
    let mut seed = 0x2545_f491_u64;
    let mut next = |m: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % m
    };
    let steps: Vec<(u64, u32)> = (0..200)
        .map(|_| {
            let step = [0, 0, 0, 0, 50, 100, 250, 400, 1_000, 3_000][next(10) as usize];
            (step, 1 + next(3) as u32)
        })
        .collect();

    let redis_now = |conn: &mut redis::aio::MultiplexedConnection| {
        redis_rt.block_on(async {
            let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await.unwrap();
            s * 1_000_000 + us
        })
    };
    const BIAS_US: i64 = 10_000;
    // Anchors: the virtual time (ms) and Redis time (µs) the stored values are relative to.
    let (mut virtual_ms, mut anchor) = (0i64, redis_now(&mut conn));
    let mut outcomes = (0, 0, 0);
    for (i, &(step_ms, cost)) in steps.iter().enumerate() {
        let req = || {
            let mut req = get_from("192.0.2.1:1");
            req.headers_mut().insert("x-cost", cost.into());
            req
        };
        let mem = memory_rt.block_on(async {
            tokio::time::advance(Duration::from_millis(step_ms)).await;
            send(&memory, req()).await
        });
        let now = redis_now(&mut conn);
        let next_virtual = virtual_ms + i64::try_from(step_ms).unwrap();
        let red = redis_rt.block_on(async {
            for key in keys(&mut conn, &prefix).await {
                let v: i64 = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let tat_ms = virtual_ms as f64 + (v - anchor) as f64 / 1_000.0;
                let on_grid = ((tat_ms / 50.0).round() * 50.0) as i64;
                let rewritten = now + (on_grid - next_virtual) * 1_000 - BIAS_US;
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(rewritten)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            send(&redis_svc, req()).await
        });
        (virtual_ms, anchor) = (next_virtual, now);
        let view = |res: &Answer| {
            let h = |name: &str| {
                res.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            (
                res.status(),
                h("retry-after"),
                h("ratelimit"),
                h("ratelimit-policy"),
            )
        };
        assert_eq!(
            view(&mem),
            view(&red),
            "step {i}: +{step_ms} ms, cost {cost}"
        );
        match (mem.status(), view(&mem).3.as_deref()) {
            (StatusCode::OK, _) => outcomes.0 += 1,
            (_, Some(p)) if p.starts_with("\"s\"") => outcomes.1 += 1,
            _ => outcomes.2 += 1,
        }
    }
    eprintln!("allowed, refused by s, refused by m: {outcomes:?}");
    let (allowed, by_second, by_minute) = outcomes;
    assert!(
        allowed > 20 && by_second > 5 && by_minute > 5,
        "the walk exercises both quotas: {outcomes:?}"
    );
}

every_backend! {
own async fn redis_down_falls_back_to_the_local_limiter_within_the_timeout_and_recovers(d) {
    let (captured, _guard) = support::Captured::install();
    let timeout = Duration::from_millis(300);
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(2)))
        .name("login")
        .key(PeerIp::new())
        .redis(
            d.redis()
                .prefix(prefix())
                .timeout(timeout),
        )
        .layer(handler(&calls));
    assert_eq!(
        send(&svc, get_from("192.0.2.1:1")).await.status(),
        StatusCode::OK
    );

    d.stop_all();
    // Decided by this instance's memory limiter: a fresh bucket of 2, then 429, each answer
    // within the call timeout (plus scheduling slack on a busy machine).
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let started = Instant::now();
        let res = send(&svc, get_from("192.0.2.1:1")).await;
        let took = started.elapsed();
        assert_eq!(res.status(), expected);
        assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    }
    let warns: Vec<_> = captured
        .with_target("bulwark::rate_limit")
        .into_iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warns.len(), 1, "one warning for the outage: {warns:?}");
    assert_eq!(warns[0].field("policy"), Some("local"));

    // Back (empty, the script not loaded): decisions move to Redis again, whose count for
    // this client starts afresh, while the local bucket is empty.
    d.restart_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = send(&svc, get_from("192.0.2.1:1")).await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis decisions did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        send(&svc, get_from("192.0.2.1:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, get_from("192.0.2.1:1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let infos = captured
        .with_target("bulwark::rate_limit")
        .into_iter()
        .filter(|e| e.level == tracing::Level::INFO)
        .count();
    assert_eq!(infos, 1, "one event for the recovery");
}
}

every_backend! {
own async fn a_hanging_redis_times_out_into_the_fallback(d) {
    let timeout = Duration::from_millis(200);
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(1)))
        .redis(
            d.redis()
                .prefix(prefix())
                .timeout(timeout),
        )
        .layer(handler(&calls));
    assert_eq!(
        send(&svc, get_from("192.0.2.1:1")).await.status(),
        StatusCode::OK
    );
    // The server stops answering every client for 2 s.
    d.pause_all(2_000);
    let started = Instant::now();
    let res = send(&svc, get_from("192.0.2.1:1")).await;
    let took = started.elapsed();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the local limiter's fresh bucket"
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "waited the call timeout, not the pause: {took:?}"
    );
}
}

every_backend! {
own async fn fail_open_and_fail_closed(d) {
    // One thread (a current-thread runtime): the local recorder sees every decision.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let calls = Counter::default();
    let layer = |policy| {
        RateLimitLayer::new(Quota::per_minute(n(1)))
            .redis(
                d.redis()
                    .prefix(prefix())
                    .timeout(Duration::from_millis(200)),
            )
            .failure_policy(policy)
            .layer(handler(&calls))
    };
    let open = layer(FailurePolicy::FailOpen);
    let closed = layer(FailurePolicy::FailClosed);
    assert_eq!(
        send(&open, get_from("192.0.2.1:1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&closed, get_from("192.0.2.1:1")).await.status(),
        StatusCode::OK
    );
    d.stop_all();
    for _ in 0..3 {
        assert_eq!(
            send(&open, get_from("192.0.2.1:1")).await.status(),
            StatusCode::OK
        );
        let res = send(&closed, get_from("192.0.2.1:1")).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[RETRY_AFTER], "1");
        assert!(matches!(
            res.extensions().get::<Rejection>(),
            Some(Rejection::BackendUnavailable { .. })
        ));
    }
    // Every decision counted, those made without Redis too: 1 + 3 allowed by each layer's
    // first request and the open one, 3 refused by the closed one.
    let mut decisions = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != "bulwark_rate_limit_requests_total" {
            continue;
        }
        let metrics_util::debugging::DebugValue::Counter(n) = value else {
            continue;
        };
        for label in key.key().labels().filter(|l| l.key() == "decision") {
            *decisions.entry(label.value().to_owned()).or_insert(0) += n;
        }
    }
    assert_eq!(decisions.get("allowed"), Some(&5), "{decisions:?}");
    assert_eq!(decisions.get("rejected"), Some(&3), "{decisions:?}");
}
}

every_backend! {
async fn calls_only_ready_inner_instances_across_the_decision(d) {
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_second(n(1_000)))
        .redis(d.redis().prefix(prefix()))
        .layer(ReadyProbe::new(handler(&calls)));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
                assert_eq!(res.status(), StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(calls.get(), 64);
}
}

every_backend! {
/// A call timeout above the default 250 ms is honoured by the connection too: a server that
/// answers after 600 ms is within a 5 s timeout.
own async fn a_timeout_above_the_default_is_honoured(d) {
    let redis = d.redis()
        .timeout(Duration::from_secs(5));
    redis.ping().await.unwrap();
    d.pause_all(600);
    redis
        .ping()
        .await
        .expect("a slow answer within the timeout");
}
}
