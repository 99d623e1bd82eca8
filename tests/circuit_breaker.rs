//! Circuit breaker behaviour, in virtual time.

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::body::Body;
use bulwark::{
    Rejection,
    circuit_breaker::{
        CircuitBreakerConfig, CircuitBreakerLayer, CircuitState, KeyedCircuitBreakerLayer,
        generic::{self, CircuitOpen},
    },
    classify::{Classify, Outcome, ServerErrorsAsFailures},
};
use http::{Request, Response, StatusCode};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

/// An upstream whose status is set by the test, counting its calls, optionally slow.
#[derive(Clone, Default)]
struct Upstream {
    status: Arc<AtomicU16>,
    calls: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicUsize>,
}

impl Upstream {
    fn new() -> Self {
        let u = Self::default();
        u.set(200);
        u
    }
    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn service(
        &self,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |_req: Request<Body>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let delay = this.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay as u64)).await;
                }
                let mut res = Response::new(Body::empty());
                *res.status_mut() =
                    StatusCode::from_u16(this.status.load(Ordering::SeqCst)).unwrap();
                Ok::<_, Infallible>(res)
            }
        })
    }
}

fn count_config(size: u32, min: u32) -> bulwark::circuit_breaker::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .name("test")
        .count_window(size)
        .minimum_calls(min)
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::from_secs(5))
        .half_open_probes(2)
}

/// A request's URI host, as a per-key breaker's key.
type ByHost = fn(&Request<Body>) -> Option<String>;

/// A per-key layer with one breaker per request URI host, at most 8.
fn per_host(config: CircuitBreakerConfig) -> KeyedCircuitBreakerLayer<ByHost> {
    let by_host: ByHost = |req| req.uri().host().map(str::to_owned);
    CircuitBreakerLayer::per_key(config, by_host, std::num::NonZeroU64::new(8).unwrap())
}

/// A GET of `uri` through a clone of `svc`.
async fn hit_at<S>(svc: &S, uri: &str) -> Response<bulwark::body::ResponseBody<Body>>
where
    S: Service<
            Request<Body>,
            Response = Response<bulwark::body::ResponseBody<Body>>,
            Error = Infallible,
        > + Clone,
{
    svc.clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_threshold_only_after_the_minimum_calls() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(count_config(10, 5).build().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(up.service());

    up.set(500);
    for _ in 0..4 {
        assert_eq!(hit_at(&svc, "/").await.status(), 500);
    }
    assert_eq!(handle.state(), CircuitState::Closed, "4 calls < minimum 5");
    assert_eq!(handle.metrics().failure_rate, None);
    assert_eq!(hit_at(&svc, "/").await.status(), 500);
    assert_eq!(handle.state(), CircuitState::Open, "5 of 5 failed");

    let res = hit_at(&svc, "/").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    assert!(matches!(
        res.extensions().get::<Rejection>(),
        Some(Rejection::CircuitOpen { .. })
    ));
    assert_eq!(up.calls(), 5, "no inner call while open");

    advance(Duration::from_millis(3_500)).await;
    assert_eq!(
        hit_at(&svc, "/").await.headers()["retry-after"],
        "2",
        "1.5 s left rounds up"
    );
    advance(Duration::from_millis(1_499)).await;
    assert_eq!(
        hit_at(&svc, "/").await.headers()["retry-after"],
        "1",
        "never 0"
    );
    assert_eq!(handle.metrics().rejected, 3);
}

#[tokio::test(start_paused = true)]
async fn below_the_threshold_stays_closed_and_a_success_can_cross_the_minimum() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(count_config(10, 4).build().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(up.service());
    // 1 failure in 4 = 25 %.
    up.set(502);
    hit_at(&svc, "/").await;
    up.set(200);
    for _ in 0..3 {
        hit_at(&svc, "/").await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.metrics().failure_rate, Some(25.0));

    // A fresh breaker: 2 failures then 2 successes = 50 % at exactly the minimum: opens on the
    // success that reaches the minimum, as resilience4j does.
    let layer = CircuitBreakerLayer::new(count_config(10, 4).build().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(up.service());
    up.set(503);
    hit_at(&svc, "/").await;
    hit_at(&svc, "/").await;
    up.set(200);
    hit_at(&svc, "/").await;
    assert_eq!(handle.state(), CircuitState::Closed);
    hit_at(&svc, "/").await;
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn the_count_window_forgets_old_calls() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(count_config(4, 4).build().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(up.service());
    up.set(500);
    hit_at(&svc, "/").await;
    up.set(200);
    for _ in 0..6 {
        hit_at(&svc, "/").await;
    }
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (4, 0));
}

#[tokio::test(start_paused = true)]
async fn the_time_window_forgets_old_seconds() {
    let up = Upstream::new();
    let config = CircuitBreakerConfig::builder()
        .time_window(Duration::from_secs(10))
        .minimum_calls(4)
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(config);
    let handle = layer.handle();
    let svc = layer.layer(up.service());
    up.set(500);
    for _ in 0..3 {
        hit_at(&svc, "/").await;
    }
    assert_eq!(handle.metrics().calls, 3);
    advance(Duration::from_secs(11)).await;
    assert_eq!(handle.metrics().calls, 0, "older than the window");
    hit_at(&svc, "/").await;
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "the old failures no longer count"
    );
    for _ in 0..3 {
        hit_at(&svc, "/").await;
    }
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let up = Upstream::new();
    up.delay_ms.store(300, Ordering::SeqCst);
    let config = count_config(4, 4)
        .slow_calls(Duration::from_millis(200), 75.0)
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(config);
    let handle = layer.handle();
    let svc = layer.layer(up.service());
    for _ in 0..3 {
        assert_eq!(hit_at(&svc, "/").await.status(), 200);
    }
    assert_eq!(handle.metrics().slow_calls, 3);
    assert_eq!(handle.state(), CircuitState::Closed);
    hit_at(&svc, "/").await;
    assert_eq!(handle.state(), CircuitState::Open, "4 of 4 slow ≥ 75 %");
}

/// Opens a breaker built from `config` by failing `n` calls; returns the layer.
async fn opened(up: &Upstream, config: CircuitBreakerConfig, n: usize) -> CircuitBreakerLayer {
    let layer = CircuitBreakerLayer::new(config);
    let svc = layer.layer(up.service());
    up.set(500);
    for _ in 0..n {
        hit_at(&svc, "/").await;
    }
    assert_eq!(layer.handle().state(), CircuitState::Open);
    layer
}

#[tokio::test(start_paused = true)]
async fn half_open_successes_close_and_a_failure_reopens_with_a_longer_wait() {
    let up = Upstream::new();
    let layer = opened(&up, count_config(4, 2).build().unwrap(), 2).await;
    let handle = layer.handle();
    let svc = layer.layer(up.service());

    // Open time over: the first call is a probe. One failure of two probes = 50 %: reopens
    // at once, for 2 × 5 s.
    advance(Duration::from_secs(5)).await;
    assert_eq!(hit_at(&svc, "/").await.status(), 500);
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(hit_at(&svc, "/").await.headers()["retry-after"], "10");

    advance(Duration::from_secs(10)).await;
    up.set(200);
    assert_eq!(hit_at(&svc, "/").await.status(), 200);
    assert_eq!(
        handle.state(),
        CircuitState::HalfOpen,
        "one of two probes done"
    );
    assert_eq!(hit_at(&svc, "/").await.status(), 200);
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(
        handle.metrics().calls,
        0,
        "a closed breaker starts with an empty window"
    );

    // The open time is back to its base after closing.
    up.set(500);
    hit_at(&svc, "/").await;
    hit_at(&svc, "/").await;
    assert_eq!(hit_at(&svc, "/").await.headers()["retry-after"], "5");
}

/// An upstream call that answers when the test says how: `true` fails, `false` succeeds.
async fn answer_when_told(
    done: tokio::sync::oneshot::Receiver<bool>,
) -> Result<(), bulwark::BoxError> {
    if done.await.unwrap() {
        Err("failed".into())
    } else {
        Ok(())
    }
}

/// Two failed calls, which open the breakers of these tests.
async fn fail_twice<S>(svc: &mut S)
where
    S: Service<tokio::sync::oneshot::Receiver<bool>, Response = (), Error = bulwark::BoxError>,
{
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(true).unwrap();
        assert!(svc.ready().await.unwrap().call(rx).await.is_err());
    }
}

/// Found by `tests/model_circuit_breaker.rs`: of two probes in flight, the first failure
/// reopens the breaker; the second probe's late failure used to write the next backoff step's
/// deadline over the current one (4 s instead of 2 s here), so the breaker stayed open twice
/// as long as its `Retry-After` had said.
#[tokio::test(start_paused = true)]
async fn a_late_probe_does_not_stretch_the_open_wait() {
    let config = CircuitBreakerConfig::builder()
        .count_window(4)
        .minimum_calls(2)
        .wait_in_open(Duration::from_secs(1))
        .open_backoff(2.0, Duration::from_secs(8))
        .half_open_probes(2)
        .build()
        .unwrap();
    let layer = generic::GenericCircuitBreakerLayer::new(config);
    let handle = layer.handle();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<bool>();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel::<bool>();
    let mut svc = layer.layer(service_fn(answer_when_told));
    fail_twice(&mut svc).await;
    assert_eq!(handle.state(), CircuitState::Open);
    advance(Duration::from_secs(1)).await;
    let first = svc.ready().await.unwrap().call(first_rx);
    let second = svc.ready().await.unwrap().call(second_rx);
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    first_tx.send(true).unwrap();
    assert!(first.await.is_err());
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(
        handle.metrics().open_remaining,
        Some(Duration::from_secs(2))
    );
    second_tx.send(true).unwrap();
    assert!(second.await.is_err());
    assert_eq!(
        handle.metrics().open_remaining,
        Some(Duration::from_secs(2)),
        "the late probe changes nothing"
    );
    advance(Duration::from_secs(2)).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tx.send(false).unwrap();
    assert!(
        svc.ready().await.unwrap().call(rx).await.is_ok(),
        "a probe after 2 s"
    );
}

/// Found by `tests/model_circuit_breaker.rs`: a probe that succeeded after the breaker was
/// forced open emptied the window (the close it would have made failed, the reset before it
/// did not).
#[tokio::test(start_paused = true)]
async fn a_late_probe_after_force_open_keeps_the_window() {
    let config = CircuitBreakerConfig::builder()
        .count_window(4)
        .minimum_calls(2)
        .wait_in_open(Duration::from_secs(1))
        .half_open_probes(1)
        .build()
        .unwrap();
    let layer = generic::GenericCircuitBreakerLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(answer_when_told));
    fail_twice(&mut svc).await;
    advance(Duration::from_secs(1)).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let probe = svc.ready().await.unwrap().call(rx);
    handle.force_open();
    tx.send(false).unwrap();
    assert!(probe.await.is_ok());
    let m = handle.metrics();
    assert_eq!(m.state, CircuitState::ForcedOpen);
    assert_eq!((m.calls, m.failures), (2, 2), "the window is as it was");
}

#[tokio::test(start_paused = true)]
async fn the_open_time_grows_to_its_cap() {
    let up = Upstream::new();
    let config = count_config(2, 2)
        .half_open_probes(1)
        .open_backoff(3.0, Duration::from_secs(20))
        .build()
        .unwrap();
    let layer = opened(&up, config, 2).await;
    let svc = layer.layer(up.service());
    for expected in ["15", "20", "20"] {
        advance(Duration::from_secs(20)).await;
        assert_eq!(hit_at(&svc, "/").await.status(), 500, "the probe");
        assert_eq!(hit_at(&svc, "/").await.headers()["retry-after"], expected);
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_the_probes_through_and_dropped_probes_free_their_slot() {
    let up = Upstream::new();
    let layer = opened(
        &up,
        count_config(4, 2).half_open_probes(2).build().unwrap(),
        2,
    )
    .await;
    let handle = layer.handle();
    up.set(200);
    up.delay_ms.store(1_000, Ordering::SeqCst);
    let svc = layer.layer(up.service());
    advance(Duration::from_secs(5)).await;

    let calls_before = up.calls();
    let p1 = tokio::spawn(hit_owned(svc.clone()));
    let p2 = tokio::spawn(hit_owned(svc.clone()));
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(
        up.calls() - calls_before,
        2,
        "both probes reached the upstream"
    );
    let extra = hit_at(&svc, "/").await;
    assert_eq!(
        extra.status(),
        503,
        "a third call while two probes are in flight"
    );
    assert_eq!(handle.state(), CircuitState::HalfOpen);

    // One probe's caller goes away: its slot is free again.
    p1.abort();
    let _ = p1.await;
    let p3 = tokio::spawn(hit_owned(svc.clone()));
    tokio::task::yield_now().await;
    assert_eq!(up.calls() - calls_before, 3, "the freed slot was taken");

    advance(Duration::from_millis(1_000)).await;
    assert_eq!(p2.await.unwrap().status(), 200);
    assert_eq!(p3.await.unwrap().status(), 200);
    assert_eq!(handle.state(), CircuitState::Closed);
}

async fn hit_owned<S>(svc: S) -> Response<bulwark::body::ResponseBody<Body>>
where
    S: Service<
            Request<Body>,
            Response = Response<bulwark::body::ResponseBody<Body>>,
            Error = Infallible,
        > + Clone,
{
    hit_at(&svc, "/").await
}

#[tokio::test(start_paused = true)]
async fn hung_probes_reopen_after_the_half_open_bound() {
    let up = Upstream::new();
    let config = count_config(2, 2)
        .half_open_probes(1)
        .max_wait_in_half_open(Duration::from_secs(30))
        .build()
        .unwrap();
    let layer = opened(&up, config, 2).await;
    let handle = layer.handle();
    up.delay_ms.store(3_600_000, Ordering::SeqCst);
    let svc = layer.layer(up.service());
    advance(Duration::from_secs(5)).await;
    let _hung = tokio::spawn(hit_owned(svc.clone()));
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(hit_at(&svc, "/").await.status(), 503);
    advance(Duration::from_secs(30)).await;
    let res = hit_at(&svc, "/").await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "re-opened: the probe took too long"
    );
}

/// Little traffic in half-open is no hung probe: with every probe answered, the phase keeps
/// probing past `max_wait_in_half_open` and closes once the probes are done.
#[tokio::test(start_paused = true)]
async fn a_quiet_half_open_phase_keeps_probing() {
    let up = Upstream::new();
    let config = count_config(2, 2)
        .half_open_probes(3)
        .max_wait_in_half_open(Duration::from_secs(30))
        .build()
        .unwrap();
    let layer = opened(&up, config, 2).await;
    let handle = layer.handle();
    up.set(200);
    let svc = layer.layer(up.service());
    advance(Duration::from_secs(5)).await;
    assert_eq!(hit_at(&svc, "/").await.status(), 200);
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    // One call every 31 s: each after the bound, none with a probe out.
    for _ in 0..2 {
        advance(Duration::from_secs(31)).await;
        assert_eq!(
            hit_at(&svc, "/").await.status(),
            200,
            "a quiet phase is not cut short"
        );
    }
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "three probes answered"
    );
}

#[tokio::test(start_paused = true)]
async fn forced_states_and_reset() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(count_config(4, 2).build().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(up.service());

    handle.force_open();
    assert_eq!(handle.state(), CircuitState::ForcedOpen);
    assert_eq!(hit_at(&svc, "/").await.status(), 503);
    advance(Duration::from_secs(3_600)).await;
    assert_eq!(
        hit_at(&svc, "/").await.status(),
        503,
        "forced open does not time out"
    );
    assert_eq!(up.calls(), 0);

    handle.force_closed();
    up.set(500);
    for _ in 0..10 {
        assert_eq!(hit_at(&svc, "/").await.status(), 500);
    }
    assert_eq!(
        handle.state(),
        CircuitState::ForcedClosed,
        "failures are not counted"
    );
    assert_eq!(handle.metrics().calls, 0);

    handle.reset();
    assert_eq!(handle.state(), CircuitState::Closed);
    hit_at(&svc, "/").await;
    hit_at(&svc, "/").await;
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "counting again after reset"
    );
}

#[tokio::test(start_paused = true)]
async fn rejections_and_cancelled_calls_are_ignored_by_default() {
    let layer = CircuitBreakerLayer::new(count_config(4, 2).build().unwrap());
    let handle = layer.handle();
    // An inner rate limiter's 429 rejection is not a failure of the upstream.
    let limited = layer.layer(service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(
            Rejection::rate_limited(Duration::from_secs(1), None).into_response::<Body>(),
        )
    }));
    for _ in 0..5 {
        assert_eq!(
            limited
                .clone()
                .oneshot(Request::new(Body::empty()))
                .await
                .unwrap()
                .status(),
            429
        );
    }
    assert_eq!(handle.metrics().calls, 0);

    // Calls whose futures are dropped before they finish record nothing.
    let up = Upstream::new();
    up.set(500);
    up.delay_ms.store(1_000, Ordering::SeqCst);
    let svc = layer.layer(up.service());
    for _ in 0..5 {
        let fut = svc.clone().oneshot(Request::new(Body::empty()));
        let _ = tokio::time::timeout(Duration::from_millis(10), fut).await;
    }
    assert_eq!(handle.metrics().calls, 0);
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_fails_429_and_ignores_404() {
    let up = Upstream::new();
    let classifier = |r: Result<&Response<Body>, &Infallible>| match r {
        Ok(res) if res.status() == 429 => Outcome::Failure,
        Ok(res) if res.status() == 404 => Outcome::Ignore,
        other => ServerErrorsAsFailures::new().classify(other),
    };
    let layer =
        CircuitBreakerLayer::new(count_config(4, 2).build().unwrap()).classifier(classifier);
    let handle = layer.handle();
    let svc = layer.layer(up.service());
    up.set(404);
    for _ in 0..3 {
        hit_at(&svc, "/").await;
    }
    assert_eq!(handle.metrics().calls, 0);
    up.set(429);
    hit_at(&svc, "/").await;
    hit_at(&svc, "/").await;
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn the_hook_sees_every_transition_once() {
    let up = Upstream::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = CircuitBreakerLayer::new(count_config(2, 2).half_open_probes(1).build().unwrap())
        .on_state_change(move |c| log.lock().unwrap().push((c.from, c.to)));
    let svc = layer.layer(up.service());
    up.set(500);
    hit_at(&svc, "/").await;
    hit_at(&svc, "/").await;
    advance(Duration::from_secs(5)).await;
    up.set(200);
    hit_at(&svc, "/").await;
    layer.handle().force_open();
    use CircuitState::*;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, ForcedOpen)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn one_layer_value_is_one_breaker_across_routes() {
    use axum::{Router, routing::get};
    let layer = CircuitBreakerLayer::new(count_config(2, 2).build().unwrap());
    let handle = layer.handle();
    let app: Router = Router::new()
        .route("/a", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/b", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/c", get(|| async { "fine" }))
        .layer(layer);
    for path in ["/a", "/b"] {
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
    }
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "failures on two routes, one breaker"
    );
    let res = app
        .oneshot(Request::get("/c").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn the_generic_breaker_fails_with_circuit_open() {
    let config = CircuitBreakerConfig::builder()
        .count_window(3)
        .minimum_calls(3)
        .wait_in_open(Duration::from_secs(2))
        .build()
        .unwrap();
    let layer = generic::GenericCircuitBreakerLayer::new(config);
    let handle = layer.handle();
    let fails = Arc::new(AtomicUsize::new(0));
    let f = fails.clone();
    let svc = layer.layer(service_fn(move |n: u32| {
        let f = f.clone();
        async move {
            if n == 0 {
                f.fetch_add(1, Ordering::SeqCst);
                Err(std::io::Error::other("boom"))
            } else {
                Ok(n)
            }
        }
    }));
    assert_eq!(svc.clone().oneshot(7).await.unwrap(), 7);
    for _ in 0..2 {
        let err = svc.clone().oneshot(0).await.unwrap_err();
        assert!(
            err.downcast_ref::<std::io::Error>().is_some(),
            "the inner error passes through"
        );
    }
    assert_eq!(handle.state(), CircuitState::Open, "2 of 3 failed");
    let err = svc.clone().oneshot(1).await.unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("a CircuitOpen error");
    assert_eq!(open.retry_after(), Duration::from_secs(2));
    assert_eq!(open.breaker(), "default");
    assert_eq!(fails.load(Ordering::SeqCst), 2);
    advance(Duration::from_secs(2)).await;
    assert_eq!(svc.oneshot(5).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_get_exactly_the_probe_slots() {
    const PROBES: usize = 3;
    let config = CircuitBreakerConfig::builder()
        .count_window(4)
        .minimum_calls(2)
        .wait_in_open(Duration::from_millis(20))
        .half_open_probes(PROBES as u32)
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(config);
    let handle = layer.handle();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let reached = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let upstream = {
        let (gate, reached, failing) = (gate.clone(), reached.clone(), failing.clone());
        service_fn(move |_: Request<Body>| {
            let (gate, reached, failing) = (gate.clone(), reached.clone(), failing.clone());
            async move {
                let status = if failing.load(Ordering::SeqCst) {
                    500
                } else {
                    reached.fetch_add(1, Ordering::SeqCst);
                    gate.acquire().await.unwrap().forget();
                    200
                };
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(res)
            }
        })
    };
    let svc = layer.layer(upstream);
    hit_at(&svc, "/").await;
    hit_at(&svc, "/").await;
    assert_eq!(handle.state(), CircuitState::Open);
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;

    // 64 callers at once, on 4 worker threads, against a half-open breaker whose probes block.
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (svc, barrier) = (svc.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            hit_at(&svc, "/").await.status().as_u16()
        }));
    }
    // Wait (bounded) until every non-probe caller has been answered.
    let mut statuses = Vec::new();
    let mut pending = Vec::new();
    for t in tasks {
        pending.push(t);
    }
    for _ in 0..500 {
        if reached.load(Ordering::SeqCst) >= PROBES
            && pending.iter().filter(|t| t.is_finished()).count() >= 64 - PROBES
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        PROBES,
        "exactly the probe slots reached the upstream"
    );
    gate.add_permits(PROBES);
    for t in pending {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), PROBES);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 64 - PROBES);
    assert_eq!(handle.state(), CircuitState::Closed, "all probes succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hammering_from_many_tasks_keeps_transitions_consistent() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let config = CircuitBreakerConfig::builder()
        .count_window(20)
        .minimum_calls(10)
        .wait_in_open(Duration::from_millis(5))
        .constant_wait_in_open()
        .half_open_probes(3)
        .build()
        .unwrap();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let t = transitions.clone();
    let layer = CircuitBreakerLayer::new(config)
        .on_state_change(move |c| t.lock().unwrap().push((c.generation, c.from, c.to)));
    let handle = layer.handle();
    let upstream = {
        let failing = failing.clone();
        service_fn(move |_: Request<Body>| {
            let failing = failing.clone();
            async move {
                tokio::task::yield_now().await;
                let status = if failing.load(Ordering::SeqCst) {
                    500
                } else {
                    200
                };
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(res)
            }
        })
    };
    let svc = layer.layer(upstream);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..300 {
                let status = hit_at(&svc, "/").await.status().as_u16();
                assert!(matches!(status, 200 | 500 | 503));
                if i % 25 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    failing.store(false, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    // Let the breaker settle: healthy upstream, one caller.
    for _ in 0..200 {
        if handle.state() == CircuitState::Closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(6)).await;
        hit_at(&svc, "/").await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    // Hooks run on whichever thread made the transition, so put them back in order by
    // generation: consecutive numbers (none lost, none doubled), each starting where the
    // previous one ended.
    let mut transitions = transitions.lock().unwrap().clone();
    transitions.sort_by_key(|t| t.0);
    assert_eq!(
        (transitions[0].1, transitions[0].2),
        (CircuitState::Closed, CircuitState::Open)
    );
    for pair in transitions.windows(2) {
        assert_eq!(
            pair[0].0 + 1,
            pair[1].0,
            "a transition was lost or doubled: {transitions:?}"
        );
        assert_eq!(
            pair[0].2, pair[1].1,
            "transitions do not chain: {transitions:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn per_key_breakers_are_isolated_and_bounded() {
    let layer = per_host(count_config(2, 2).build().unwrap());
    let up = Upstream::new();
    let svc = layer.layer(up.service());
    up.set(500);
    hit_at(&svc, "http://bad.example/").await;
    hit_at(&svc, "http://bad.example/").await;
    assert_eq!(hit_at(&svc, "http://bad.example/").await.status(), 503);
    up.set(200);
    assert_eq!(
        hit_at(&svc, "http://good.example/").await.status(),
        200,
        "other keys unaffected"
    );
    assert_eq!(
        hit_at(&svc, "/no-host").await.status(),
        200,
        "no key: the shared breaker"
    );

    let bad = layer.handle_for(&"bad.example".to_owned()).unwrap();
    assert_eq!(bad.state(), CircuitState::Open);
    assert_eq!(bad.name(), "test[\"bad.example\"]");
    assert_eq!(
        layer
            .handle_for(&"good.example".to_owned())
            .unwrap()
            .state(),
        CircuitState::Closed
    );
    assert_eq!(layer.handle_for_unkeyed().state(), CircuitState::Closed);

    // A thousand distinct keys keep at most 8 breakers.
    for i in 0..1_000 {
        hit_at(&svc, &format!("http://host{i}.example/")).await;
    }
    let live = (0..1_000)
        .filter(|i| layer.handle_for(&format!("host{i}.example")).is_some())
        .count();
    assert!(live <= 8 + 2, "{live} breakers kept for 8 allowed");
}

/// Per-key breakers never put their keys in metric labels: a thousand keys, one label value.
#[tokio::test(start_paused = true)]
async fn per_key_metrics_are_labelled_by_the_layer() {
    // One thread (a current-thread runtime): the local recorder sees every call.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let layer = per_host(count_config(1, 1).build().unwrap());
    let up = Upstream::new();
    up.set(500);
    let svc = layer.layer(up.service());
    for i in 0..1_000 {
        let req = Request::get(format!("http://host{i}.example/"))
            .body(Body::empty())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    let mut breakers = std::collections::BTreeSet::new();
    let mut opened = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if !key.key().name().starts_with("bulwark_circuit_breaker") {
            continue;
        }
        for label in key.key().labels() {
            if label.key() == "breaker" {
                breakers.insert(label.value().to_owned());
            }
        }
        if key.key().name() == "bulwark_circuit_breaker_transitions_total" {
            if let metrics_util::debugging::DebugValue::Counter(n) = value {
                opened += n;
            }
        }
    }
    assert_eq!(
        breakers.into_iter().collect::<Vec<_>>(),
        ["test"],
        "one label value"
    );
    assert_eq!(opened, 1_000, "every key's transition counted");
}

/// A count window smaller than the default minimum of 20 calls still opens: the minimum is the
/// window's size then (a window of 4 never holds 20 calls).
#[tokio::test(start_paused = true)]
async fn a_small_count_window_opens_with_the_default_minimum() {
    let config = CircuitBreakerConfig::builder()
        .name("small")
        .count_window(4)
        .build()
        .unwrap();
    let up = Upstream::new();
    up.set(500);
    let layer = CircuitBreakerLayer::new(config);
    let handle = layer.handle();
    let svc = layer.layer(up.service());
    for _ in 0..4 {
        svc.clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Open);
}

/// A per-key layer's hook hears every key's breaker, including keys whose breaker existed before
/// the hook was set, and the breaker shared by requests without a key.
#[tokio::test(start_paused = true)]
async fn the_per_key_hook_hears_every_key() {
    let layer = per_host(count_config(2, 2).build().unwrap());
    let up = Upstream::new();
    let svc = layer.layer(up.service());
    // `early.example` gets its breaker before the hook exists.
    hit_at(&svc, "http://early.example/").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let _ = layer
        .clone()
        .on_state_change(move |c| log.lock().unwrap().push((c.name.to_string(), c.to)));
    up.set(500);
    for uri in ["http://early.example/", "http://late.example/", "/no-host"] {
        hit_at(&svc, uri).await;
        hit_at(&svc, uri).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("test[\"early.example\"]".to_owned(), CircuitState::Open),
            ("test[\"late.example\"]".to_owned(), CircuitState::Open),
            ("test".to_owned(), CircuitState::Open),
        ]
    );
}

/// An open breaker's refusals say which breaker refused: in the response's `Rejection`, in the
/// rejection event, and in a counter labelled with the breaker's name (a per-key breaker's
/// layer name, never its key). The client's problem body does not name it.
#[test]
fn refusals_name_the_breaker() {
    let (captured, _guard) = support::Captured::install();
    let metrics = support::recorded(true, async {
        let up = Upstream::new();
        up.set(500);
        let plain = CircuitBreakerLayer::new(count_config(2, 2).name("inventory").build().unwrap())
            .layer(up.service());
        let keyed =
            per_host(count_config(2, 2).name("upstreams").build().unwrap()).layer(up.service());
        for _ in 0..2 {
            hit_at(&plain, "/").await;
        }
        for _ in 0..2 {
            hit_at(&keyed, "http://a.example/").await;
        }

        let res = hit_at(&plain, "/").await;
        assert_eq!(res.status(), 503);
        match res.extensions().get::<Rejection>() {
            Some(Rejection::CircuitOpen { breaker, .. }) => {
                assert_eq!(breaker.as_deref(), Some("inventory"));
            }
            other => panic!("{other:?}"),
        }
        let body = axum::body::to_bytes(Body::new(res.into_body()), 4096)
            .await
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("inventory"),
            "the client is not told the dependency's name"
        );
        hit_at(&plain, "/").await;
        for _ in 0..3 {
            let res = hit_at(&keyed, "http://a.example/").await;
            match res.extensions().get::<Rejection>() {
                Some(Rejection::CircuitOpen { breaker, .. }) => {
                    assert_eq!(breaker.as_deref(), Some("upstreams[\"a.example\"]"));
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let refused = |breaker: &str| {
        metrics
            .iter()
            .find(|(key, ..)| {
                key.key().name() == "bulwark_circuit_breaker_rejections_total"
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "breaker" && l.value() == breaker)
            })
            .map(|(.., value)| match value {
                metrics_util::debugging::DebugValue::Counter(n) => *n,
                other => panic!("{other:?}"),
            })
    };
    assert_eq!(refused("inventory"), Some(2));
    assert_eq!(refused("upstreams"), Some(3), "the layer's name");
    let named: Vec<_> = captured
        .with_target("bulwark::rejection")
        .iter()
        .filter_map(|e| e.field("breaker").map(str::to_owned))
        .collect();
    assert_eq!(
        named,
        [
            "inventory",
            "inventory",
            "upstreams[\"a.example\"]",
            "upstreams[\"a.example\"]",
            "upstreams[\"a.example\"]"
        ]
    );
}

/// The generic breaker's former names still name it.
#[test]
#[allow(deprecated)]
fn the_generic_breakers_former_names_still_build() {
    let config = CircuitBreakerConfig::builder().build().unwrap();
    let layer: generic::CircuitBreakerLayer = generic::CircuitBreakerLayer::new(config);
    let svc: generic::CircuitBreaker<_> =
        layer.layer(service_fn(
            |n: u32| async move { Ok::<_, std::io::Error>(n) },
        ));
    let _: &generic::GenericCircuitBreaker<_> = &svc;
    fn future_named<F, C>(_: &generic::ResponseFuture<F, C>) {}
    let mut svc = svc;
    let fut = tower::Service::call(&mut svc, 1);
    future_named(&fut);
}
