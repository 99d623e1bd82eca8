//! The `Service` contract every bulwark layer must keep.
//!
//! For each layer, `layer_contract!` generates tests that:
//! - `poll_ready` only forwards: an inner service that is not ready keeps the layer not ready,
//!   and the layer becomes ready when the inner does;
//! - `call` is never made on an inner instance that was not polled ready (a [`ReadyProbe`]
//!   panics otherwise), with many clones in flight at once;
//! - the layer keeps an axum `Infallible` router infallible (`Router::layer` and `route_layer`);
//! - the layer works with hyper's `Incoming` body behind `TowerToHyperService`, over a real
//!   loopback connection.
//!
//! Layers with state add a `shares_state` check with [`assert_shared_state`]: clones of the
//! service, clones of the layer, and services from two `Layer::layer` calls on one layer value
//! (what axum's `Router::layer` does per route, and hyper per connection) all see one state.
//!
//! A new layer joins with one line: `layer_contract!(name, || MyLayer::new(..));`.

mod support;

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use axum::{Router, body::Body, routing::get};
use bulwark::log::RequestLogLayer;
use http::{Request, Response, StatusCode};
use support::ReadyProbe;
use tower::{Layer, Service, ServiceExt, service_fn};

/// An axum-style handler service: infallible, answers 200 "ok", whatever the request body.
fn ok_service<B: Send + 'static>() -> impl Service<
    Request<B>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(|_req: Request<B>| async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) })
}

fn assert_infallible<S: Service<R, Error = Infallible>, R>(_: &S) {}

/// Echoes the request body, whatever its type: hyper's `Incoming`, or the body a layer that
/// buffers requests hands on (`bulwark::body::RequestBody<Incoming>`).
#[derive(Clone, Copy)]
struct Echo;

impl<B> Service<Request<B>> for Echo
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<bulwark::BoxError>,
{
    type Response = Response<http_body_util::Full<bytes::Bytes>>;
    type Error = bulwark::BoxError;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, bulwark::BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(async move {
            use http_body_util::BodyExt;
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(Into::into)?
                .to_bytes();
            Ok(Response::new(http_body_util::Full::new(body)))
        })
    }
}

macro_rules! layer_contract {
    // A layer whose inner service gets the request body as it came.
    ($name:ident, $make:expr) => {
        layer_contract!($name, $make, Body);
    };
    // A layer that buffers request bodies hands its inner service `$inner_body` for `Body`.
    ($name:ident, $make:expr, $inner_body:ty) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn poll_ready_only_forwards() {
                let (mut svc, mut handle) =
                    tower_test::mock::spawn_layer::<Request<$inner_body>, Response<Body>, _>(
                        ($make)(),
                    );
                handle.allow(0);
                assert!(
                    svc.poll_ready().is_pending(),
                    "ready although the inner is not"
                );
                handle.allow(1);
                assert!(
                    matches!(svc.poll_ready(), Poll::Ready(Ok(()))),
                    "not ready although the inner is"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn calls_only_ready_inner_instances() {
                let svc = ($make)().layer(ReadyProbe::new(ok_service()));
                let mut tasks = Vec::new();
                for _ in 0..32 {
                    let svc = svc.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..4 {
                            let res = svc
                                .clone()
                                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                                .await
                                .unwrap();
                            assert!(res.status() == StatusCode::OK || res.status().as_u16() >= 400);
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            }

            #[test]
            fn keeps_axum_routers_infallible() {
                let layer = ($make)();
                let router: Router = Router::new()
                    .route("/", get(|| async { "ok" }))
                    .layer(layer.clone())
                    .route_layer(layer.clone());
                let svc = layer.layer(router);
                assert_infallible::<_, Request<Body>>(&svc);
                fn check_clone<S: Clone + Send + Sync + 'static>(_: &S) {}
                check_clone(&svc);
            }

            #[tokio::test]
            async fn serves_hyper_incoming_bodies() {
                let addr = support::serve_hyper(($make)().layer(Echo)).await;
                let (status, _, body) = support::send(
                    addr,
                    Request::post(format!("http://{addr}/"))
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            b"ping",
                        )))
                        .unwrap(),
                )
                .await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, "ping");
            }
        }
    };
}

layer_contract!(request_log, RequestLogLayer::new);
layer_contract!(fallback, || {
    bulwark::fallback::FallbackLayer::last_good(bulwark::fallback::LastGood::new(100).unwrap()).or(
        bulwark::fallback::StaticResponse::new(Response::new("fallback")),
    )
});

layer_contract!(feature_flag, || {
    let flags = bulwark::flag::Flags::new().with("f", bulwark::flag::FlagDefinition::on());
    bulwark::flag::FeatureFlagLayer::new(flags, "f")
});

#[tokio::test]
async fn feature_flag_shares_its_flags() {
    use bulwark::flag::{FeatureFlag, FeatureFlagLayer, FlagDefinition, Flags};
    assert_shared_state(
        || FeatureFlagLayer::new(Flags::new().with("f", FlagDefinition::on()), "f"),
        |svc: FeatureFlag<FailOnDemand>| async move {
            svc.flags().set("f", FlagDefinition::off());
        },
        async |svc: FeatureFlag<FailOnDemand>| {
            let req = Request::get("/").body(Body::empty()).unwrap();
            svc.oneshot(req).await.unwrap().status() == StatusCode::NOT_FOUND
        },
    )
    .await;
}

/// Asserts that every way of getting a second service from `layer` shares the first one's
/// state: `exhaust` drives a service until its state changes (e.g. a quota is spent), and
/// `changed` tells whether another service sees that change.
pub async fn assert_shared_state<L, S, Fut>(
    make_layer: impl Fn() -> L,
    exhaust: impl Fn(L::Service) -> Fut,
    changed: impl AsyncFn(L::Service) -> bool,
) where
    L: Layer<S> + Clone,
    S: Default,
    L::Service: Clone,
    Fut: Future<Output = ()>,
{
    // A clone of the service.
    let layer = make_layer();
    let svc = layer.layer(S::default());
    exhaust(svc.clone()).await;
    assert!(changed(svc).await, "clones of a service do not share state");

    // A service from a clone of the layer.
    let layer = make_layer();
    exhaust(layer.layer(S::default())).await;
    assert!(
        changed(layer.clone().layer(S::default())).await,
        "clones of a layer do not share state"
    );

    // Two `Layer::layer` calls on one layer value (axum's per-route `Router::layer`).
    let layer = make_layer();
    exhaust(layer.layer(S::default())).await;
    assert!(
        changed(layer.layer(S::default())).await,
        "two services made by one layer value do not share state"
    );
}

/// An axum-style handler answering 200 "good", or 503 to requests with `x-fail`.
#[derive(Clone, Default)]
struct FailOnDemand;

impl Service<Request<Body>> for FailOnDemand {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let mut res = Response::new(Body::from("good"));
        if req.headers().contains_key("x-fail") {
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        std::future::ready(Ok(res))
    }
}

#[tokio::test]
async fn fallback_shares_its_last_good_store() {
    use bulwark::fallback::{Fallback, FallbackLayer, LastGood};
    assert_shared_state(
        || FallbackLayer::last_good(LastGood::new(10).unwrap()),
        |svc: Fallback<FailOnDemand, LastGood>| async move {
            let res = svc
                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                .await;
            assert!(res.unwrap().headers().get("bulwark-fallback").is_none());
        },
        async |svc: Fallback<FailOnDemand, LastGood>| {
            let req = Request::get("/").header("x-fail", "1").body(Body::empty());
            let res = svc.oneshot(req.unwrap()).await.unwrap();
            res.headers().get("bulwark-fallback").is_some()
        },
    )
    .await;
}

/// A deliberately wrong layer that creates its state in `Layer::layer`, to show that
/// [`assert_shared_state`] catches the mistake it exists for.
#[derive(Clone, Default)]
struct StatePerService;

#[derive(Clone, Default)]
struct Handler;

#[derive(Clone)]
struct Counting(Arc<AtomicUsize>);

impl Layer<Handler> for StatePerService {
    type Service = Counting;
    fn layer(&self, _: Handler) -> Counting {
        Counting(Arc::new(AtomicUsize::new(0)))
    }
}

/// The right way: state created with the layer, shared by every service it makes.
#[derive(Clone, Default)]
struct StatePerLayer(Arc<AtomicUsize>);

impl Layer<Handler> for StatePerLayer {
    type Service = Counting;
    fn layer(&self, _: Handler) -> Counting {
        Counting(self.0.clone())
    }
}

impl Service<()> for Counting {
    type Response = usize;
    type Error = Infallible;
    type Future = std::future::Ready<Result<usize, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(Ok(self.0.fetch_add(1, Ordering::SeqCst) + 1))
    }
}

async fn exhaust_counting(mut svc: Counting) {
    svc.ready().await.unwrap().call(()).await.unwrap();
}

async fn changed_counting(mut svc: Counting) -> bool {
    svc.ready().await.unwrap().call(()).await.unwrap() > 1
}

#[tokio::test]
async fn shared_state_check_accepts_state_per_layer() {
    assert_shared_state(StatePerLayer::default, exhaust_counting, changed_counting).await;
}

#[tokio::test]
#[should_panic(expected = "do not share state")]
async fn shared_state_check_catches_state_per_service() {
    assert_shared_state(|| StatePerService, exhaust_counting, changed_counting).await;
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker

use bulwark::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .count_window(2)
            .minimum_calls(2)
            .build()
            .unwrap(),
    )
}

layer_contract!(circuit_breaker, breaker);

/// An upstream that always answers 500.
#[derive(Clone, Default)]
struct Failing;

impl Service<Request<Body>> for Failing {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        std::future::ready(Ok(res))
    }
}

#[tokio::test]
async fn circuit_breaker_shares_state() {
    assert_shared_state(
        breaker,
        |svc: <CircuitBreakerLayer as Layer<Failing>>::Service| async move {
            for _ in 0..2 {
                let res = svc
                    .clone()
                    .oneshot(Request::new(Body::empty()))
                    .await
                    .unwrap();
                assert_eq!(res.status(), 500);
            }
        },
        async |svc| {
            svc.oneshot(Request::new(Body::empty()))
                .await
                .unwrap()
                .status()
                == 503
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Idempotency

use bulwark::idempotency::{IdempotencyLayer, IdempotencyStore};

layer_contract!(
    idempotency,
    || IdempotencyLayer::new(IdempotencyStore::memory()),
    bulwark::body::RequestBody<Body>
);

/// Answers 201 "charged"; the shared-state check below runs it once per key.
#[derive(Clone, Default)]
struct Charge;

impl<B: Send + 'static> Service<Request<B>> for Charge {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<B>) -> Self::Future {
        let mut res = Response::new(Body::from("charged"));
        *res.status_mut() = StatusCode::CREATED;
        std::future::ready(Ok(res))
    }
}

#[tokio::test]
async fn idempotency_shares_its_store() {
    let pay = || {
        Request::post("/pay")
            .header("idempotency-key", "k")
            .body(Body::empty())
            .unwrap()
    };
    assert_shared_state(
        || IdempotencyLayer::new(IdempotencyStore::memory()),
        |svc: <IdempotencyLayer as Layer<Charge>>::Service| async move {
            let res = svc.oneshot(pay()).await.unwrap();
            assert!(res.headers().get("idempotent-replayed").is_none());
        },
        async |svc| {
            let res = svc.oneshot(pay()).await.unwrap();
            res.headers().get("idempotent-replayed").is_some()
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Rate limiter

use bulwark::rate_limit::{Quota, RateLimitLayer};

fn rate_limit() -> RateLimitLayer {
    RateLimitLayer::new(Quota::per_minute(std::num::NonZeroU32::new(1_000).unwrap()))
}

layer_contract!(rate_limit, rate_limit);

#[tokio::test]
async fn rate_limit_shares_state() {
    assert_shared_state(
        || RateLimitLayer::new(Quota::per_minute(std::num::NonZeroU32::new(2).unwrap())),
        |svc: <RateLimitLayer as Layer<Failing>>::Service| async move {
            for _ in 0..2 {
                let res = svc
                    .clone()
                    .oneshot(Request::new(Body::empty()))
                    .await
                    .unwrap();
                assert_eq!(res.status(), 500, "allowed through to the inner service");
            }
        },
        async |svc| {
            svc.oneshot(Request::new(Body::empty()))
                .await
                .unwrap()
                .status()
                == 429
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Cache

use bulwark::cache::{CacheLayer, CacheStore};

fn cache() -> CacheLayer {
    CacheLayer::new(CacheStore::memory(1 << 20)).ttl(std::time::Duration::from_secs(30))
}

layer_contract!(cache, cache);

#[tokio::test]
async fn cache_shares_state() {
    assert_shared_state(
        cache,
        |svc: <CacheLayer as Layer<FailOnDemand>>::Service| async move {
            let res = svc
                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(
                res.headers()["cache-status"]
                    .to_str()
                    .unwrap()
                    .ends_with("stored")
            );
        },
        async |svc| {
            let res = svc
                .oneshot(Request::get("/").body(Body::empty()).unwrap())
                .await
                .unwrap();
            res.headers()["cache-status"]
                .to_str()
                .unwrap()
                .starts_with("bulwark; hit")
        },
    )
    .await;
}
