//! What only some Redis deployments have: TLS trust, a cluster's slots and failover, and a
//! script cache that empties. Real servers on loopback, started by the tests (see
//! `support::Deployment`).
#![cfg(feature = "redis")]

mod support;

use std::{
    collections::BTreeSet,
    convert::Infallible,
    net::SocketAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use axum::body::Body;
use bulwark::{
    FailurePolicy,
    idempotency::{IdempotencyLayer, IdempotencyStore},
    key::PeerIp,
    rate_limit::{Quota, RateLimitLayer},
};
use http::{Request, Response, StatusCode};
use support::{Backend, Deployment};
use tower::{Layer, Service, ServiceExt, service_fn};

fn n(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "d{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn ok()
-> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) })
}

fn from(peer: &str) -> Request<Body> {
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(peer.parse::<SocketAddr>().unwrap());
    req
}

fn payment(key: &str) -> Request<Body> {
    Request::post("/payments")
        .header("idempotency-key", key)
        .body(Body::from("{}"))
        .unwrap()
}

async fn status<S, B>(svc: &S, req: Request<Body>) -> StatusCode
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    svc.clone().oneshot(req).await.unwrap().status()
}

/// A limiter of `quota` per minute on the peer IP, counting in `d` under `prefix`.
fn limiter(
    d: &Deployment,
    prefix: &str,
    quota: u32,
    policy: FailurePolicy,
) -> impl Service<
    Request<Body>,
    Response = Response<bulwark::body::ResponseBody<Body>>,
    Error = Infallible,
    Future: Send,
> + Clone
+ use<> {
    RateLimitLayer::new(Quota::per_minute(n(quota)).named("q"))
        .name("login")
        .key(PeerIp::new())
        .redis(
            d.redis()
                .prefix(prefix.to_owned())
                .timeout(Duration::from_millis(300)),
        )
        .failure_policy(policy)
        .layer(ok())
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn tls_checks_the_server_certificate() {
    let Some(d) = Deployment::shared(Backend::Tls) else {
        return;
    };
    let url = d.servers[0].url();
    assert!(url.starts_with("rediss://"));
    // Trusted through the test's own CA: answers.
    d.redis().ping().await.expect("TLS with the test CA");
    // The system's roots do not vouch for the test CA: refused, as it must be.
    let untrusted = bulwark::redis::Redis::open(&url).unwrap();
    assert!(untrusted.ping().await.is_err(), "an unknown CA is refused");
    // Plain TCP to a TLS port does not get an answer either.
    let plain = bulwark::redis::Redis::open(&url.replacen("rediss", "redis", 1)).unwrap();
    assert!(plain.ping().await.is_err());
}

/// Every client of a limiter lands on a slot of its own hash tag, so clients spread over the
/// primaries instead of all landing on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiter_keys_spread_over_the_cluster() {
    let Some(d) = Deployment::shared(Backend::Cluster) else {
        return;
    };
    let prefix = prefix();
    let svc = limiter(&d, &prefix, 10, FailurePolicy::FailClosed);
    for i in 0..30 {
        assert_eq!(
            status(&svc, from(&format!("192.0.2.{i}:1"))).await,
            StatusCode::OK
        );
    }
    let keys = d.keys(&format!("{prefix}:*"));
    assert_eq!(keys.len(), 30, "{keys:?}");
    let primaries: BTreeSet<u16> = keys.iter().map(|k| d.primary_for(k)).collect();
    assert_eq!(
        primaries.len(),
        3,
        "30 clients on every primary: {primaries:?}"
    );
}

every_backend! {
/// A restart or a failover empties the script cache: the next call gets `NOSCRIPT`, loads the
/// script and decides in Redis, on the state Redis still has.
async fn an_emptied_script_cache_is_reloaded_and_state_kept(d) {
    let prefix = prefix();
    // Fail closed: a decision made without Redis would be a 503, not a 200 or a 429.
    let svc = limiter(d, &prefix, 3, FailurePolicy::FailClosed);
    assert_eq!(status(&svc, from("192.0.2.1:1")).await, StatusCode::OK);
    assert_eq!(status(&svc, from("192.0.2.1:1")).await, StatusCode::OK);
    for i in 0..d.servers.len() {
        d.cli_on(i, &["SCRIPT", "FLUSH"]).unwrap();
    }
    assert_eq!(status(&svc, from("192.0.2.1:1")).await, StatusCode::OK);
    assert_eq!(
        status(&svc, from("192.0.2.1:1")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the count before the flush still holds"
    );
}
}

/// A primary dies; its replica is promoted. During the gap each layer follows its policy (the
/// `Local` limiter keeps answering, a fail-closed one answers 503); after it, both instances
/// share state again without a restart. The gap is printed, not asserted: timings belong to
/// benchmarks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_followed_without_a_restart() {
    failover(Backend::Cluster).await;
}

#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_over_tls_is_followed_without_a_restart() {
    failover(Backend::TlsCluster).await;
}

async fn failover(backend: Backend) {
    let Some(mut d) = Deployment::start(backend) else {
        return;
    };
    let prefix = prefix();
    let client = "192.0.2.77:1";
    let tag_key = format!("{prefix}:ratelimit:{{login:ip:192.0.2.77}}:q");
    let local_a = limiter(&d, &prefix, 1_000_000, FailurePolicy::Local);
    let local_b = limiter(&d, &prefix, 1_000_000, FailurePolicy::Local);
    let closed = limiter(&d, &prefix, 1_000_000, FailurePolicy::FailClosed);
    assert_eq!(status(&closed, from(client)).await, StatusCode::OK);

    let victim = d.primary_for(&tag_key);
    let i = d.servers.iter().position(|s| s.port() == victim).unwrap();
    d.servers[i].stop();
    let killed = Instant::now();

    let mut refused = 0;
    let gap = loop {
        // Instances with the local policy never fail a request.
        assert_eq!(status(&local_a, from(client)).await, StatusCode::OK);
        assert_eq!(status(&local_b, from(client)).await, StatusCode::OK);
        match status(&closed, from(client)).await {
            StatusCode::OK => break killed.elapsed(),
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("during the failover: {other}"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused > 0, "the gap was seen by the fail-closed instance");
    eprintln!(
        "{backend:?} failover gap: {gap:?} ({refused} requests refused by the fail-closed instance)"
    );

    // Shared again, on the promoted replica, by the same handles: one quota for both
    // instances, and an idempotency key claimed through one is replayed through the other.
    let a = limiter(&d, &prefix, 4, FailurePolicy::FailClosed);
    let b = limiter(&d, &prefix, 4, FailurePolicy::FailClosed);
    let mut allowed = 0;
    for j in 0..10 {
        let svc = if j % 2 == 0 { &a } else { &b };
        if status(svc, from("192.0.2.78:1")).await == StatusCode::OK {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 4,
        "one quota across both instances after the failover"
    );
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let pay = {
        let runs = runs.clone();
        service_fn(move |_req: Request<_>| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::from("paid"))) }
        })
    };
    let store = || {
        IdempotencyStore::redis(
            d.redis()
                .prefix(prefix.clone())
                .timeout(Duration::from_millis(300)),
        )
    };
    let pay_a = IdempotencyLayer::new(store()).layer(pay.clone());
    let pay_b = IdempotencyLayer::new(store()).layer(pay);
    for k in 0..12 {
        let key = format!("after-failover-{k}");
        assert_eq!(status(&pay_a, payment(&key)).await, StatusCode::OK);
        assert_eq!(status(&pay_b, payment(&key)).await, StatusCode::OK);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 12, "each key ran once");
}
