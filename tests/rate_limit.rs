//! Rate limiter behaviour through the layer, in virtual time (`start_paused` + `advance`).

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo, routing::get};
use bulwark::{
    RATELIMIT, RATELIMIT_POLICY, RateLimitInfo, Rejection,
    key::{HeaderKey, PeerIp, TrustedProxyIp},
    rate_limit::{MissingKey, Quota, RateLimitLayer},
};
use http::{HeaderName, Request, Response, StatusCode, header::RETRY_AFTER};
use http_body_util::BodyExt;
use support::Counter;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

fn n(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// An axum-style handler answering 200 "ok" and counting its calls.
fn handler(
    counter: &Counter,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
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

fn get_anonymous() -> Request<Body> {
    Request::get("/").body(Body::empty()).unwrap()
}

async fn status<S>(svc: &S, req: Request<Body>) -> StatusCode
where
    S: Service<Request<Body>, Response = Response<bulwark::body::ResponseBody<Body>>> + Clone,
    S::Error: std::fmt::Debug,
{
    svc.clone().oneshot(req).await.unwrap().status()
}

fn header<'a, B>(res: &'a Response<B>, name: &HeaderName) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Counts how many of `tries` requests from `peer` are allowed now.
async fn allowed_now<S>(svc: &S, peer: &str, tries: usize) -> usize
where
    S: Service<Request<Body>, Response = Response<bulwark::body::ResponseBody<Body>>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut ok = 0;
    for _ in 0..tries {
        match status(svc, get_from(peer)).await {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    ok
}

#[tokio::test(start_paused = true)]
async fn burst_then_steady_rate() {
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_second(n(2)).burst(n(5))).layer(handler(&calls));
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 8).await, 5, "the burst");
    assert_eq!(calls.get(), 5, "refused requests never reach the handler");

    // Then one request per 500 ms, however many are tried.
    for _ in 0..4 {
        advance(Duration::from_millis(500)).await;
        assert_eq!(allowed_now(&svc, "192.0.2.1:1", 3).await, 1);
    }
    advance(Duration::from_millis(499)).await;
    assert_eq!(
        allowed_now(&svc, "192.0.2.1:1", 1).await,
        0,
        "not a moment early"
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 1).await, 1);

    // Idle long enough, the whole burst is back, and no more.
    advance(Duration::from_secs(10)).await;
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 8).await, 5);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(5))).layer(handler(&calls));
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 5).await, 5);

    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RETRY_AFTER), "12");
    let Some(Rejection::RateLimited { retry_after, .. }) = res.extensions().get::<Rejection>()
    else {
        panic!("no RateLimited extension");
    };
    assert_eq!(*retry_after, Duration::from_secs(12));

    advance(Duration::from_millis(1_500)).await;
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(header(&res, &RETRY_AFTER), "11", "10.5 s rounds up");

    advance(Duration::from_millis(10_400)).await;
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RETRY_AFTER), "1", "100 ms is 1, never 0");

    // Sub-second waits too.
    let fast = RateLimitLayer::new(Quota::per_second(n(10))).layer(handler(&calls));
    assert_eq!(allowed_now(&fast, "192.0.2.1:1", 11).await, 10);
    let res = fast.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(header(&res, &RETRY_AFTER), "1");

    // And long ones.
    let hourly = RateLimitLayer::new(Quota::per_hour(n(1))).layer(handler(&calls));
    assert_eq!(allowed_now(&hourly, "192.0.2.1:1", 1).await, 1);
    let res = hourly
        .clone()
        .oneshot(get_from("192.0.2.1:1"))
        .await
        .unwrap();
    assert_eq!(header(&res, &RETRY_AFTER), "3600");
}

#[tokio::test(start_paused = true)]
async fn the_429_carries_ietf_headers_and_a_problem_body() {
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(5)).named("login")).layer(handler(&calls));
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 5).await, 5);
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RATELIMIT_POLICY), r#""login";q=5;w=60"#);
    // No request left; the bucket is full again after the 5 × 12 s just spent.
    assert_eq!(header(&res, &RATELIMIT), r#""login";r=0;t=60"#);
    assert_eq!(
        header(&res, &http::header::CONTENT_TYPE),
        "application/problem+json"
    );
    let Some(Rejection::RateLimited {
        limit: Some(info), ..
    }) = res.extensions().get::<Rejection>().cloned()
    else {
        panic!("no RateLimited extension with its policy");
    };
    assert_eq!(
        info,
        RateLimitInfo::new(
            "login",
            5,
            Duration::from_secs(60),
            0,
            Duration::from_secs(60)
        )
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], 429);
    assert_eq!(json["retry_after_seconds"], 12);
    assert_eq!(json["policy"], "login");

    // Allowed responses carry no headers unless asked to.
    advance(Duration::from_secs(60)).await;
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(&RATELIMIT).is_none());
    assert!(res.headers().get(&RATELIMIT_POLICY).is_none());
}

#[tokio::test(start_paused = true)]
async fn headers_on_allowed_responses_when_asked() {
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(5)).named("login"))
        .headers_on_allowed(true)
        .layer(handler(&calls));
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, &RATELIMIT_POLICY), r#""login";q=5;w=60"#);
    assert_eq!(header(&res, &RATELIMIT), r#""login";r=4;t=12"#);
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(header(&res, &RATELIMIT), r#""login";r=3;t=24"#);
    assert!(res.headers().get(RETRY_AFTER).is_none());

    // Nested limiters: the inner (more specific) layer's fields are kept.
    let outer =
        RateLimitLayer::new(Quota::per_second(n(100)).named("global")).headers_on_allowed(true);
    let inner =
        RateLimitLayer::new(Quota::per_minute(n(5)).named("login")).headers_on_allowed(true);
    let svc = outer.layer(inner.layer(handler(&calls)));
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(header(&res, &RATELIMIT), r#""login";r=4;t=12"#);
}

#[tokio::test(start_paused = true)]
async fn several_quotas_the_strictest_decides_and_refusals_cost_nothing() {
    let calls = Counter::default();
    let layer = RateLimitLayer::with_quotas([
        Quota::per_second(n(5)).named("second"),
        Quota::per_minute(n(8)).named("minute"),
    ])
    .unwrap()
    .headers_on_allowed(true);
    let svc = layer.layer(handler(&calls));

    // The per-second quota refuses the 6th, and says so.
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 5).await, 5);
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RATELIMIT_POLICY), r#""second";q=5;w=1"#);
    // Many more refused requests: they must not use up the per-minute quota.
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 50).await, 0);

    // A second later the per-second quota is back, but only 8 - 5 = 3 fit the minute.
    advance(Duration::from_secs(1)).await;
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // 6 × 7.5 s spent by now (t = 1 s): the minute bucket is full again at 45 s.
    assert_eq!(
        header(&res, &RATELIMIT),
        r#""minute";r=2;t=44"#,
        "the allowed answer describes the quota with the fewest requests left"
    );
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 10).await, 2);
    let res = svc.clone().oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(header(&res, &RATELIMIT_POLICY), r#""minute";q=8;w=60"#);
    // The minute quota's next request comes back 7.5 s after the first one was spent.
    assert_eq!(header(&res, &RETRY_AFTER), "7");
    assert_eq!(calls.get(), 8);
}

#[tokio::test(start_paused = true)]
async fn requests_can_cost_more_than_one() {
    let calls = Counter::default();
    let cost = |req: &Request<Body>| {
        req.headers()
            .get("x-cost")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(1)
    };
    let svc = RateLimitLayer::new(Quota::per_second(n(10)))
        .cost(cost)
        .layer(handler(&calls));
    let with_cost = |c: u32| {
        let mut req = get_from("192.0.2.1:1");
        req.headers_mut().insert("x-cost", c.into());
        req
    };
    assert_eq!(status(&svc, with_cost(4)).await, StatusCode::OK);
    assert_eq!(status(&svc, with_cost(4)).await, StatusCode::OK);
    // 2 left: a request of 4 is refused (and takes nothing), one of 2 fits.
    let res = svc.clone().oneshot(with_cost(4)).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RETRY_AFTER), "1");
    assert_eq!(status(&svc, with_cost(2)).await, StatusCode::OK);
    assert_eq!(
        status(&svc, with_cost(1)).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Free requests always pass.
    assert_eq!(status(&svc, with_cost(0)).await, StatusCode::OK);

    // More than the whole burst: refused at once (the future is ready on its first poll),
    // with a policy that shows why, even when the bucket is full.
    advance(Duration::from_secs(5)).await;
    let mut fut = std::pin::pin!(svc.clone().oneshot(with_cost(11)));
    let res = match futures_poll_once(fut.as_mut()) {
        std::task::Poll::Ready(res) => res.unwrap(),
        std::task::Poll::Pending => panic!("a request that can never fit must not wait"),
    };
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RATELIMIT_POLICY), r#""default";q=10;w=1"#);
    assert_eq!(
        status(&svc, with_cost(10)).await,
        StatusCode::OK,
        "nothing taken"
    );
    assert_eq!(calls.get(), 5);
}

fn futures_poll_once<F: std::future::Future>(
    fut: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    fut.poll(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_bucket() {
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(2)))
        .key(PeerIp::new())
        .layer(handler(&calls));
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 3).await, 2);
    assert_eq!(
        allowed_now(&svc, "192.0.2.1:2", 1).await,
        0,
        "same IP, other port"
    );
    assert_eq!(
        allowed_now(&svc, "192.0.2.2:1", 3).await,
        2,
        "another client"
    );
    // IPv6 clients are grouped by /64: cycling addresses in one's own network does not help.
    assert_eq!(allowed_now(&svc, "[2001:db8:1:2::1]:1", 1).await, 1);
    assert_eq!(allowed_now(&svc, "[2001:db8:1:2::ffff]:1", 3).await, 1);
    assert_eq!(
        allowed_now(&svc, "[2001:db8:1:3::1]:1", 3).await,
        2,
        "another /64"
    );
}

#[tokio::test(start_paused = true)]
async fn spoofed_forwarded_for_is_ignored_and_a_trusted_chain_is_honoured() {
    let calls = Counter::default();
    let svc = RateLimitLayer::new(Quota::per_minute(n(2)))
        .key(TrustedProxyIp::try_new(["10.0.0.0/8"]).unwrap())
        .layer(handler(&calls));
    let via = |peer: &str, xff: &str| {
        let mut req = get_from(peer);
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        req
    };

    // A client talking to us directly invents a new X-Forwarded-For for every request: its
    // key stays its own address.
    for i in 0..5 {
        let expected = if i < 2 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        let spoofed = format!("203.0.113.{i}, 10.0.0.{i}");
        assert_eq!(
            status(&svc, via("198.51.100.9:5000", &spoofed)).await,
            expected
        );
    }

    // Through our load balancer, each real client has its own bucket, whichever proxy it came
    // through, and what it wrote itself to the left of the chain does not matter.
    for i in 0..2 {
        assert_eq!(
            status(
                &svc,
                via("10.0.0.5:443", &format!("6.6.6.{i}, 203.0.113.7"))
            )
            .await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status(&svc, via("10.0.0.6:443", "203.0.113.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "same client through another proxy"
    );
    assert_eq!(
        status(&svc, via("10.0.0.5:443", "203.0.113.8")).await,
        StatusCode::OK,
        "another client behind the same proxy"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_follow_the_missing_key_policy() {
    let calls = Counter::default();
    let (captured, _guard) = support::Captured::install();
    let layer = RateLimitLayer::new(Quota::per_minute(n(2))).key(PeerIp::new());

    // Default: one shared bucket for all of them, never a panic.
    let shared = layer.clone().layer(handler(&calls));
    assert_eq!(status(&shared, get_anonymous()).await, StatusCode::OK);
    assert_eq!(status(&shared, get_anonymous()).await, StatusCode::OK);
    assert_eq!(
        status(&shared, get_anonymous()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status(&shared, get_from("192.0.2.1:1")).await,
        StatusCode::OK,
        "keyed requests are not in that bucket"
    );
    let warnings: Vec<_> = captured
        .with_target("bulwark::rate_limit")
        .into_iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, then DEBUG: {warnings:?}");

    let allow = RateLimitLayer::new(Quota::per_minute(n(1)))
        .key(PeerIp::new())
        .missing_key(MissingKey::Allow)
        .layer(handler(&calls));
    for _ in 0..5 {
        assert_eq!(status(&allow, get_anonymous()).await, StatusCode::OK);
    }

    let reject = RateLimitLayer::new(Quota::per_minute(n(1)))
        .key(PeerIp::new())
        .missing_key(MissingKey::Reject)
        .layer(handler(&calls));
    let res = reject.clone().oneshot(get_anonymous()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RETRY_AFTER), "60");
    assert!(res.headers().get(&RATELIMIT).is_none());
    assert_eq!(
        status(&reject, get_from("192.0.2.1:1")).await,
        StatusCode::OK
    );
}

/// One million distinct keys, never one request twice: the table stays within its bound.
#[tokio::test(start_paused = true)]
async fn the_key_table_stays_bounded_under_a_million_distinct_keys() {
    const MAX_KEYS: usize = 10_000;
    let calls = Counter::default();
    // The key is a number the test puts in the request, to make a million keys cheaply.
    let by_id = |req: &Request<Body>| req.extensions().get::<u64>().copied();
    let layer = RateLimitLayer::new(Quota::per_second(n(1)))
        .key(by_id)
        .max_keys(NonZeroUsize::new(MAX_KEYS).unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(handler(&calls));
    let mut allowed = 0usize;
    for id in 0..1_000_000u64 {
        let mut req = get_anonymous();
        req.extensions_mut().insert(id);
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        allowed += usize::from(res.status() == StatusCode::OK);
    }
    let stats = &handle.key_tables()[0];
    eprintln!("after 1,000,000 keys: {stats:?}");
    assert!(stats.keys <= MAX_KEYS + 2, "{stats:?}");
    // The documented bound: capacity below 2 × (max_keys + 2) + 8 × shards, where the table
    // has 4 shards per CPU rounded up to a power of two; about 20 bytes per unit of capacity.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let shards = (cpus * 4).next_power_of_two();
    assert!(
        stats.capacity < 2 * (MAX_KEYS + 2) + 8 * shards,
        "{stats:?}"
    );
    // Keys past the cap shared the overflow bucket: a flood of new keys is limited together.
    assert!(stats.overflowed >= 1_000_000 - MAX_KEYS as u64, "{stats:?}");
    assert!(allowed <= MAX_KEYS + 1, "{allowed}");

    // Once the keys have gone idle, pruning empties the table and new keys get their own
    // buckets again.
    advance(Duration::from_secs(3)).await;
    handle.prune();
    assert_eq!(handle.key_tables()[0].keys, 0);
    let mut req = get_anonymous();
    req.extensions_mut().insert(2_000_000u64);
    assert_eq!(status(&svc, req).await, StatusCode::OK);
    assert_eq!(handle.key_tables()[0].keys, 1);
}

#[tokio::test(start_paused = true)]
async fn pruning_happens_on_its_own_as_keys_come_and_go() {
    let calls = Counter::default();
    let by_id = |req: &Request<Body>| req.extensions().get::<u64>().copied();
    let layer = RateLimitLayer::new(Quota::per_second(n(10)))
        .key(by_id)
        .max_keys(NonZeroUsize::new(1_000).unwrap());
    let handle = layer.handle();
    let svc = layer.layer(handler(&calls));
    // 100 waves of 500 new clients, 1 s apart: every wave is idle by the next but one.
    for wave in 0..100u64 {
        for i in 0..500 {
            let mut req = get_anonymous();
            req.extensions_mut().insert(wave * 1_000 + i);
            assert_eq!(status(&svc, req).await, StatusCode::OK);
        }
        advance(Duration::from_secs(1)).await;
    }
    let stats = &handle.key_tables()[0];
    assert!(stats.keys <= 1_002, "{stats:?}");
    assert_eq!(
        stats.overflowed, 0,
        "pruning kept room for every client: {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_and_services_of_one_layer_share_one_limiter() {
    let calls = Counter::default();
    let layer = RateLimitLayer::new(Quota::per_minute(n(3)));
    let a = layer.layer(handler(&calls));
    let b = layer.layer(handler(&calls));
    let c = layer.clone().layer(handler(&calls));
    let a2 = a.clone();
    assert_eq!(status(&a, get_anonymous()).await, StatusCode::OK);
    assert_eq!(status(&b, get_anonymous()).await, StatusCode::OK);
    assert_eq!(status(&c, get_anonymous()).await, StatusCode::OK);
    for svc in [&a, &b, &c, &a2] {
        assert_eq!(
            status(svc, get_anonymous()).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // A second layer value is a second limiter.
    let other = RateLimitLayer::new(Quota::per_minute(n(3))).layer(handler(&calls));
    assert_eq!(status(&other, get_anonymous()).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn quotas_change_at_run_time_through_the_handle() {
    let calls = Counter::default();
    let layer = RateLimitLayer::new(Quota::per_second(n(100)).named("api"));
    let handle = layer.handle();
    let svc = layer.layer(handler(&calls));
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 10).await, 10);

    handle
        .set_quotas([Quota::per_minute(n(2)).named("api")])
        .unwrap();
    let clone = svc.clone();
    assert_eq!(
        allowed_now(&clone, "192.0.2.1:1", 5).await,
        2,
        "the next request"
    );
    let res = clone.oneshot(get_from("192.0.2.1:1")).await.unwrap();
    assert_eq!(header(&res, &RATELIMIT_POLICY), r#""api";q=2;w=60"#);

    // A bad list is refused and the quotas stay.
    assert!(handle.set_quotas([]).is_err());
    let twice = Quota::per_second(n(1));
    assert!(handle.set_quotas([twice.clone(), twice]).is_err());
    assert_eq!(handle.quotas(), vec![Quota::per_minute(n(2)).named("api")]);

    // Loosen it again.
    handle.set_quotas([Quota::per_second(n(50))]).unwrap();
    assert_eq!(allowed_now(&svc, "192.0.2.1:1", 60).await, 50);
}

#[tokio::test(start_paused = true)]
async fn works_in_an_axum_router_with_connect_info() {
    let login = RateLimitLayer::new(Quota::per_minute(n(2)).named("login"))
        .name("login")
        .key(PeerIp::new());
    let app: Router = Router::new()
        .route("/login", get(|| async { "welcome" }))
        .route_layer(login)
        .route("/health", get(|| async { "ok" }));
    let req = |path: &str, ip: [u8; 4]| {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 1234))));
        req
    };
    for _ in 0..2 {
        let res = app
            .clone()
            .oneshot(req("/login", [192, 0, 2, 1]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .clone()
        .oneshot(req("/login", [192, 0, 2, 1]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RETRY_AFTER), "30");
    assert!(matches!(
        res.extensions().get::<Rejection>(),
        Some(Rejection::RateLimited { .. })
    ));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{\"type\":"));
    let res = app
        .clone()
        .oneshot(req("/health", [192, 0, 2, 1]))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "route_layer: other routes are not limited"
    );
    let res = app
        .clone()
        .oneshot(req("/login", [192, 0, 2, 2]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_custom_rejection_hook_keeps_the_protocol_headers() {
    let calls = Counter::default();
    let hook = |r: &Rejection| {
        let mut res = Response::new(bytes::Bytes::from_static(b"slow down"));
        *res.status_mut() = r.status();
        res
    };
    let svc = RateLimitLayer::new(Quota::per_minute(n(1)))
        .on_rejection(hook)
        .layer(handler(&calls));
    assert_eq!(status(&svc, get_anonymous()).await, StatusCode::OK);
    let res = svc.clone().oneshot(get_anonymous()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, &RETRY_AFTER), "60");
    assert!(res.headers().contains_key(&RATELIMIT));
    assert!(res.extensions().get::<Rejection>().is_some());
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "slow down"
    );
}

#[tokio::test(start_paused = true)]
async fn logs_never_carry_the_key() {
    let calls = Counter::default();
    let (captured, _guard) = support::Captured::install();
    let svc = RateLimitLayer::new(Quota::per_minute(n(1)))
        .name("api")
        .key(HeaderKey::new(HeaderName::from_static("x-api-key")))
        .layer(handler(&calls));
    let with_key = || {
        Request::get("/")
            .header("x-api-key", "sk_live_secret_123")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(status(&svc, with_key()).await, StatusCode::OK);
    assert_eq!(
        status(&svc, with_key()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let events = captured.with_target("bulwark::rate_limit");
    let refused = events
        .iter()
        .find(|e| e.field("message") == Some("rate limited"))
        .expect("a DEBUG event per refused request");
    assert_eq!(refused.field("limiter"), Some("api"));
    assert!(!captured.all_text().contains("sk_live"));
}

/// A recorder that keeps counters by their full key, labels included.
#[cfg(feature = "metrics")]
mod recorder {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex, atomic::AtomicU64},
    };

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    #[derive(Default)]
    pub(crate) struct Counting(pub(crate) Mutex<BTreeMap<String, Arc<AtomicU64>>>);

    impl Counting {
        pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            let mut key = name.to_owned();
            for (k, v) in labels {
                key.push_str(&format!(",{k}={v}"));
            }
            self.0
                .lock()
                .unwrap()
                .get(&key)
                .map_or(0, |c| c.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    impl Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut name = key.name().to_owned();
            for l in key.labels() {
                name.push_str(&format!(",{}={}", l.key(), l.value()));
            }
            let c = self.0.lock().unwrap().entry(name).or_default().clone();
            Counter::from_arc(c)
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

#[cfg(feature = "metrics")]
#[test]
fn decisions_are_counted_per_limiter_with_bounded_labels() {
    let recorder = recorder::Counting::default();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let calls = Counter::default();
            let svc = RateLimitLayer::new(Quota::per_minute(n(2)))
                .name("login")
                .key(PeerIp::new())
                .layer(handler(&calls));
            for i in 0..5 {
                let _ = status(&svc, get_from(&format!("192.0.2.{i}:1"))).await;
                let _ = status(&svc, get_from(&format!("192.0.2.{i}:1"))).await;
                let _ = status(&svc, get_from(&format!("192.0.2.{i}:1"))).await;
            }
        });
    });
    let requests = "bulwark_rate_limit_requests_total";
    assert_eq!(
        recorder.get(requests, &[("limiter", "login"), ("decision", "allowed")]),
        10
    );
    assert_eq!(
        recorder.get(requests, &[("limiter", "login"), ("decision", "rejected")]),
        5
    );
    let keys = recorder.0.lock().unwrap();
    assert!(
        keys.keys().all(|k| !k.contains("192.0.2")),
        "no key in any label: {:?}",
        keys.keys().collect::<Vec<_>>()
    );
    assert!(
        keys.keys()
            .any(|k| k.starts_with("bulwark_rejections_total,rejection=rate_limited"))
    );
}
