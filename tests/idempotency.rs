//! The idempotency layer through `ServiceBuilder` and `oneshot`: keys, scopes, fingerprints,
//! claims and leases in virtual time, replays, releases, limits, store failures, logs, axum.

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bulwark::{
    FailurePolicy, Rejection, StoreError,
    body::RequestBody,
    idempotency::{
        Fingerprint, HeaderScope, IdempotencyConfig, IdempotencyKey, IdempotencyLayer,
        IdempotencyStore, StoreKey,
        store::{Claim, Completion, LeaseToken, Store},
    },
};
use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use support::Captured;
use tokio::sync::{Barrier, Notify};
use tower::{Layer, Service, ServiceExt, service_fn};

type In = Request<RequestBody<Full<Bytes>>>;

fn post(key: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::post("/payments").header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn text<B>(res: Response<B>) -> String
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn rejection<B>(res: &Response<B>) -> Option<&Rejection> {
    res.extensions().get::<Rejection>()
}

fn replayed<B>(res: &Response<B>) -> bool {
    res.headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// A payment handler: 201 with `Location`, `ETag` and a body naming the call's number and the
/// request body; counts its calls.
fn payments(
    calls: Arc<AtomicUsize>,
) -> impl Service<In, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |req: In| {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let keyed = req.extensions().get::<IdempotencyKey>().is_some();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body = format!(
                r#"{{"id":{n},"keyed":{keyed},"request":{}}}"#,
                String::from_utf8_lossy(&body)
            );
            Ok(Response::builder()
                .status(201)
                .header("location", format!("/payments/{n}"))
                .header("etag", format!("\"{n}\""))
                .body(Full::new(Bytes::from(body)))
                .unwrap())
        }
    })
}

fn layer() -> IdempotencyLayer {
    IdempotencyLayer::new(IdempotencyStore::memory())
}

#[tokio::test]
async fn first_request_runs_and_retries_replay_it_exactly() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));

    let first = svc.clone().oneshot(post(Some("k1"), "{}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(&first));
    let (first_head, first_body) = (first.headers().clone(), text(first).await);
    assert_eq!(first_body, r#"{"id":1,"keyed":true,"request":{}}"#);

    for _ in 0..3 {
        let again = svc.clone().oneshot(post(Some("k1"), "{}")).await.unwrap();
        assert_eq!(again.status(), StatusCode::CREATED, "a 201 stays 201");
        assert!(replayed(&again));
        assert_eq!(again.headers()["location"], first_head["location"]);
        assert_eq!(again.headers()["etag"], first_head["etag"]);
        assert!(rejection(&again).is_none());
        assert_eq!(text(again).await, first_body);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another key runs.
    let other = svc.oneshot(post(Some("k2"), "{}")).await.unwrap();
    assert_eq!(other.headers()["location"], "/payments/2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn quoted_and_bare_keys_are_the_same_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));
    svc.clone()
        .oneshot(post(Some("\"abc\""), "{}"))
        .await
        .unwrap();
    let res = svc.oneshot(post(Some("abc"), "{}")).await.unwrap();
    assert!(replayed(&res));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn missing_keys_pass_through_or_are_refused() {
    let calls = Arc::new(AtomicUsize::new(0));
    let optional = layer().layer(payments(calls.clone()));
    for _ in 0..2 {
        let res = optional.clone().oneshot(post(None, "{}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no key: no protection");

    let required = layer().require_key(true).layer(payments(calls.clone()));
    let res = required.oneshot(post(None, "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(rejection(&res), Some(&Rejection::IdempotencyKeyMissing));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn invalid_keys_get_400() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));
    let long = "k".repeat(256);
    for key in ["", "\"\"", long.as_str(), "a,b", "a b", "\"abc", "ab\"c"] {
        let res = svc.clone().oneshot(post(Some(key), "{}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(rejection(&res), Some(&Rejection::IdempotencyKeyInvalid));
    }
    // Non-ASCII bytes.
    let mut req = post(None, "{}");
    req.headers_mut().insert(
        "idempotency-key",
        http::HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
    );
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(rejection(&res), Some(&Rejection::IdempotencyKeyInvalid));
    // Two fields.
    let mut req = post(Some("a"), "{}");
    req.headers_mut()
        .append("idempotency-key", http::HeaderValue::from_static("b"));
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(rejection(&res), Some(&Rejection::IdempotencyKeyInvalid));
    // 255 characters is fine.
    let max = "k".repeat(255);
    let res = svc.oneshot(post(Some(max.as_str()), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn same_key_with_another_request_gets_422() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));
    svc.clone()
        .oneshot(post(Some("k"), r#"{"amount":1}"#))
        .await
        .unwrap();

    let res = svc
        .clone()
        .oneshot(post(Some("k"), r#"{"amount":2}"#))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(rejection(&res), Some(&Rejection::IdempotencyMismatch));

    let mut other_path = post(Some("k"), r#"{"amount":1}"#);
    *other_path.uri_mut() = "/payments?currency=EUR".parse().unwrap();
    let res = svc.clone().oneshot(other_path).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let mut other_type = post(Some("k"), r#"{"amount":1}"#);
    other_type
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    let res = svc.clone().oneshot(other_type).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // The original still replays.
    let res = svc
        .oneshot(post(Some("k"), r#"{"amount":1}"#))
        .await
        .unwrap();
    assert!(replayed(&res));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn scopes_keep_principals_apart() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));
    let as_user = |user: &str| {
        let mut req = post(Some("shared-key"), "{}");
        req.headers_mut()
            .insert("authorization", format!("Bearer {user}").parse().unwrap());
        req
    };
    let alice = svc.clone().oneshot(as_user("alice")).await.unwrap();
    let bob = svc.clone().oneshot(as_user("bob")).await.unwrap();
    assert!(!replayed(&bob), "bob never sees alice's response");
    assert_ne!(alice.headers()["location"], bob.headers()["location"]);
    let alice_again = svc.clone().oneshot(as_user("alice")).await.unwrap();
    assert!(replayed(&alice_again));
    assert_eq!(
        alice_again.headers()["location"],
        alice.headers()["location"]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A header scope.
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer()
        .scope(HeaderScope::new(HeaderName::from_static("x-tenant")))
        .layer(payments(calls.clone()));
    for tenant in ["t1", "t2", "t1"] {
        let mut req = post(Some("k"), "{}");
        req.headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        svc.clone().oneshot(req).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_run_exactly_once() {
    const N: usize = 64;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_req: In| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            // Long enough for the duplicates to arrive while this one runs.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Infallible>(
                Response::builder()
                    .status(201)
                    .body(Full::new(Bytes::from_static(b"charged")))
                    .unwrap(),
            )
        }
    });
    let svc = layer().layer(inner);
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let svc = svc.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let res = svc.oneshot(post(Some("double-click"), "{}")).await.unwrap();
            (res.status(), replayed(&res))
        }));
    }
    let (mut first, mut replays, mut conflicts) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::CREATED, false) => first += 1,
            (StatusCode::CREATED, true) => replays += 1,
            (StatusCode::CONFLICT, false) => conflicts += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly one execution");
    assert_eq!(first, 1);
    assert_eq!(replays + conflicts, N - 1);
}

/// A handler that waits for `gate` before answering 201 with its call number.
fn gated(
    calls: Arc<AtomicUsize>,
    gate: Arc<Notify>,
) -> impl Service<In, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |_req: In| {
        let (calls, gate) = (calls.clone(), gate.clone());
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                gate.notified().await;
            }
            Ok(Response::builder()
                .status(201)
                .body(Full::new(Bytes::from(format!("call {n}"))))
                .unwrap())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn duplicate_in_flight_gets_409_with_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let svc = layer().layer(gated(calls.clone(), gate.clone()));
    let first = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    tokio::task::yield_now().await;
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let dup = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    assert_eq!(dup.headers()["retry-after"], "1");
    assert!(matches!(
        rejection(&dup),
        Some(Rejection::IdempotencyInFlight { .. })
    ));
    // Another body while in flight is a mismatch, not a conflict.
    let other = svc.clone().oneshot(post(Some("k"), "[]")).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);

    gate.notify_one();
    assert_eq!(text(first.await.unwrap().unwrap()).await, "call 1");
    let after = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert!(replayed(&after));
    assert_eq!(text(after).await, "call 1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn duplicate_can_wait_for_the_first_and_replay() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let config = IdempotencyConfig::builder()
        .wait_for_in_flight(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = layer()
        .config(config)
        .layer(gated(calls.clone(), gate.clone()));
    let first = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let dup = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    gate.notify_one();
    first.await.unwrap().unwrap();
    let dup = dup.await.unwrap().unwrap();
    assert_eq!(dup.status(), StatusCode::CREATED);
    assert!(replayed(&dup));
    assert_eq!(text(dup).await, "call 1");

    // The wait is bounded: a first request that never ends gives a 409 after 5 s.
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer()
        .config(
            IdempotencyConfig::builder()
                .wait_for_in_flight(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .layer(gated(calls.clone(), Arc::new(Notify::new())));
    let _stuck = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let started = tokio::time::Instant::now();
    let dup = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn crashed_worker_blocks_its_key_only_until_the_lease_ends() {
    // The default: a dropped request keeps its claim until the lease ends.
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(gated(calls.clone(), Arc::new(Notify::new())));
    // The worker "crashes": its future is dropped mid-request, with no chance to release.
    let crashed = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    crashed.abort();
    let _ = crashed.await;

    let res = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    tokio::time::advance(Duration::from_secs(59)).await;
    let res = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(res.headers()["retry-after"], "1");
    tokio::time::advance(Duration::from_secs(1)).await;
    // The lease (60 s), not the retention (24 h), decides.
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(text(res).await, "call 2");
}

#[tokio::test(start_paused = true)]
async fn cancelled_request_releases_its_claim_at_once_when_configured() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = IdempotencyConfig::builder()
        .release_on_cancel(true)
        .build()
        .unwrap();
    let svc = layer()
        .config(config)
        .layer(gated(calls.clone(), Arc::new(Notify::new())));
    let cancelled = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    cancelled.abort();
    let _ = cancelled.await;
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(text(res).await, "call 2");
}

/// A body that yields one chunk and then never ends (a stream the client stops reading).
struct OneThenPending(bool);

impl Body for OneThenPending {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"charged")))))
    }
}

/// `release_on_cancel` frees the key only while the handler runs: once it has answered, its
/// work is done, and a client that goes away while the body is read must not let a retry run
/// it again.
#[tokio::test(start_paused = true)]
async fn a_request_cancelled_after_its_handler_answered_keeps_its_claim() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = IdempotencyConfig::builder()
        .release_on_cancel(true)
        .build()
        .unwrap();
    let counted = calls.clone();
    let svc = layer().config(config).layer(service_fn(move |_req: In| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(201)
                    .body(OneThenPending(false))
                    .unwrap(),
            )
        }
    }));
    let cancelled = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // Let it reach the body.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    cancelled.abort();
    let _ = cancelled.await;
    // Bounded: a retry that ran the handler again would wait on its endless body.
    let retry = tokio::time::timeout(Duration::from_secs(1), svc.oneshot(post(Some("k"), "{}")))
        .await
        .expect("the retry is answered at once, without running the handler")
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert!(matches!(
        rejection(&retry),
        Some(Rejection::IdempotencyInFlight { .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn late_completion_never_overwrites_a_newer_claim() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let layer = layer();
    let stats = layer.handle();
    let svc = layer.layer(gated(calls.clone(), gate.clone()));
    let slow = tokio::spawn(svc.clone().oneshot(post(Some("k"), "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The slow request outlives its lease; a retry claims the key and completes.
    tokio::time::advance(Duration::from_secs(61)).await;
    let retry = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(text(retry).await, "call 2");
    // The slow one finishes late: its response reaches its client but is not stored.
    gate.notify_one();
    assert_eq!(text(slow.await.unwrap().unwrap()).await, "call 1");
    assert_eq!(stats.stats().lease_lost, 1);
    let replay = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert!(replayed(&replay));
    assert_eq!(text(replay).await, "call 2");
}

#[tokio::test(start_paused = true)]
async fn responses_are_kept_for_the_retention_period() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));
    svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    tokio::time::advance(Duration::from_secs(24 * 3600 - 1)).await;
    assert!(replayed(
        &svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap()
    ));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!replayed(
        &svc.oneshot(post(Some("k"), "{}")).await.unwrap()
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A handler answering `status` on its first call and 201 after, counting calls.
fn first_answers(
    calls: Arc<AtomicUsize>,
    status: u16,
    rejected: bool,
) -> impl Service<In, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |_req: In| {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let mut res = Response::new(Full::new(Bytes::from(format!("call {n}"))));
            if n == 1 {
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                if rejected {
                    res.extensions_mut()
                        .insert(Rejection::circuit_open(Duration::from_secs(1)));
                }
            } else {
                *res.status_mut() = StatusCode::CREATED;
            }
            Ok(res)
        }
    })
}

#[tokio::test]
async fn server_errors_and_rejections_release_the_claim() {
    for (status, rejected) in [(500, false), (503, true), (429, true)] {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = layer().layer(first_answers(calls.clone(), status, rejected));
        let res = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
        assert_eq!(res.status().as_u16(), status);
        let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{status}: the retry runs"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    // Configured to keep them: a 5xx is replayed.
    let calls = Arc::new(AtomicUsize::new(0));
    let config = IdempotencyConfig::builder()
        .release_on_server_error(false)
        .build()
        .unwrap();
    let svc = layer()
        .config(config)
        .layer(first_answers(calls.clone(), 500, false));
    svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(replayed(&res));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A 4xx answer of the handler is the request's answer: kept and replayed.
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(first_answers(calls.clone(), 400, false));
    svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(replayed(&res));
}

/// A fallback answered in the handler's place (here for its 500): not the operation's answer, so
/// not stored; the retry runs the handler.
#[tokio::test]
async fn fallback_answers_release_the_claim() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = tower::ServiceBuilder::new()
        .layer(layer())
        .layer(bulwark::fallback::FallbackLayer::response(Response::new(
            "degraded",
        )))
        .service(first_answers(calls.clone(), 500, false));
    let res = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(text(res).await, "degraded");
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "the retry runs");
    assert!(!replayed(&res));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn inner_errors_release_the_claim() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = layer().layer(service_fn(move |_req: In| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err("boom")
            } else {
                Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        }
    }));
    assert!(svc.clone().oneshot(post(Some("k"), "{}")).await.is_err());
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(text(res).await, "ok");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_replayed() {
    let svc = layer().layer(service_fn(|_req: In| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(201)
                .header("connection", "keep-alive, x-private-hop")
                .header("keep-alive", "timeout=5")
                .header("x-private-hop", "1")
                .header("upgrade", "h2c")
                .header("te", "trailers")
                .header("trailer", "x-checksum")
                .header("proxy-authenticate", "Basic")
                .header("location", "/payments/1")
                .header("set-cookie", "a=1")
                .header("cache-control", "no-store")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
    }));
    let first = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(
        first.headers()["x-private-hop"],
        "1",
        "the first answer is untouched"
    );
    let replay = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert!(replayed(&replay));
    let h = replay.headers();
    for hop in [
        "connection",
        "keep-alive",
        "x-private-hop",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
    ] {
        assert!(!h.contains_key(hop), "{hop} replayed");
    }
    assert_eq!(h["location"], "/payments/1");
    assert_eq!(h["set-cookie"], "a=1");
    assert_eq!(h["cache-control"], "no-store");
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413_unread() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = IdempotencyConfig::builder()
        .max_request_bytes(8)
        .build()
        .unwrap();
    let svc = layer().config(config).layer(payments(calls.clone()));
    let res = svc
        .clone()
        .oneshot(post(Some("k"), "123456789"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(rejection(&res), Some(&Rejection::payload_too_large(8)));
    let res = svc.oneshot(post(Some("k"), "12345678")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn responses_too_large_to_keep_are_never_run_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let config = IdempotencyConfig::builder()
        .max_response_bytes(10)
        .build()
        .unwrap();
    // A streamed body without a size hint: found too large while read.
    let svc = layer().config(config).layer(service_fn(move |_req: In| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let chunks = vec!["0123456", "789abc", "def"];
            Ok::<_, Infallible>(Response::new(Chunks(chunks.into_iter())))
        }
    }));
    let first = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(text(first).await, "0123456789abcdef", "sent whole");
    let retry = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    assert_eq!(
        rejection(&retry),
        Some(&Rejection::IdempotencyNotReplayable)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A body yielding its parts one frame at a time, with no size hint.
struct Chunks(std::vec::IntoIter<&'static str>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.0
                .next()
                .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))),
        )
    }
}

#[tokio::test]
async fn other_methods_and_routes_pass_through() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));
    for _ in 0..2 {
        let mut req = post(Some("k"), "{}");
        *req.method_mut() = http::Method::PUT;
        let res = svc.clone().oneshot(req).await.unwrap();
        assert!(!replayed(&res));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let calls = Arc::new(AtomicUsize::new(0));
    let config = IdempotencyConfig::builder()
        .routes(["/orders"])
        .build()
        .unwrap();
    let svc = layer().config(config).layer(payments(calls.clone()));
    for _ in 0..2 {
        svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "/payments is not configured"
    );
}

/// A store that always fails, like Redis when it is down.
#[derive(Clone, Debug)]
struct DownStore;

impl Store for DownStore {
    fn name(&self) -> &'static str {
        "down"
    }
    async fn claim(&self, _: StoreKey, _: Fingerprint, _: Duration) -> Result<Claim, StoreError> {
        Err(StoreError::backend("claim", "connection refused"))
    }
    async fn complete(
        &self,
        _: StoreKey,
        _: LeaseToken,
        _: Completion,
        _: Duration,
    ) -> Result<bool, StoreError> {
        Err(StoreError::backend("complete", "connection refused"))
    }
    async fn release(&self, _: StoreKey, _: LeaseToken) -> Result<bool, StoreError> {
        Err(StoreError::backend("release", "connection refused"))
    }
    fn release_detached(&self, _: StoreKey, _: LeaseToken) {}
}

#[tokio::test]
async fn store_failures_fail_closed_by_default() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = IdempotencyLayer::new(DownStore);
    let handle = layer.handle();
    let svc = layer.layer(payments(calls.clone()));
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(matches!(
        rejection(&res),
        Some(Rejection::BackendUnavailable { .. })
    ));
    let body = text(res).await;
    assert!(!body.contains("refused"), "no internal error text: {body}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(handle.stats().store_errors, 1);

    let config = IdempotencyConfig::builder()
        .failure_policy(FailurePolicy::FailOpen)
        .build()
        .unwrap();
    let svc = IdempotencyLayer::new(DownStore)
        .config(config)
        .layer(payments(calls.clone()));
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
#[allow(deprecated)]
async fn the_former_policy_names_still_work() {
    use bulwark::idempotency::OnStoreError;
    let calls = Arc::new(AtomicUsize::new(0));
    let config = IdempotencyConfig::builder()
        .on_store_error(OnStoreError::FailOpen)
        .build()
        .unwrap();
    let svc = IdempotencyLayer::new(DownStore)
        .config(config)
        .layer(payments(calls.clone()));
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_local_policy_claims_in_memory_while_the_store_is_down() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = IdempotencyConfig::builder()
        .failure_policy(FailurePolicy::Local)
        .build()
        .unwrap();
    let layer = IdempotencyLayer::new(DownStore).config(config);
    let handle = layer.handle();
    let svc = layer.layer(payments(calls.clone()));

    let first = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!replayed(&first));
    // The retry reaches the same instance: answered from the first attempt, not run again.
    let retry = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(replayed(&retry));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The same key with another body is still a mismatch.
    let other = svc.clone().oneshot(post(Some("k"), "[]")).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Another key runs once.
    let fresh = svc.oneshot(post(Some("k2"), "{}")).await.unwrap();
    assert_eq!(fresh.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Every claim met the failed store first.
    assert_eq!(handle.stats().store_errors, 4);
}

#[tokio::test]
async fn keys_are_never_logged_raw() {
    let (captured, _guard) = Captured::install();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(payments(calls.clone()));
    let key = "very-secret-key-4711";
    svc.clone().oneshot(post(Some(key), "{}")).await.unwrap();
    svc.clone().oneshot(post(Some(key), "{}")).await.unwrap();
    svc.oneshot(post(Some(key), "[]")).await.unwrap();
    let events = captured.with_target("bulwark::idempotency");
    assert!(events.len() >= 3, "{events:?}");
    let short = StoreKey::new(None, &IdempotencyKey::parse(key.as_bytes()).unwrap())
        .short()
        .to_string();
    assert!(
        events
            .iter()
            .all(|e| e.field("key") == Some(short.as_str()))
    );
    assert!(!captured.all_text().contains("secret"));
}

#[tokio::test]
async fn handle_counts_outcomes() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer();
    let handle = layer.handle();
    let svc = layer.layer(payments(calls.clone()));
    svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    svc.oneshot(post(Some("k"), "[]")).await.unwrap();
    let stats = handle.stats();
    assert_eq!((stats.new, stats.replayed, stats.mismatch), (1, 1, 1));
}

#[tokio::test]
async fn works_in_an_axum_router() {
    use axum::{Router, body::Body, routing::post as axum_post};
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app: Router = Router::new()
        .route(
            "/payments",
            axum_post(move |body: String| {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    (
                        StatusCode::CREATED,
                        [("location", format!("/payments/{n}"))],
                        body,
                    )
                }
            }),
        )
        .route_layer(layer().require_key(true));
    let req = || {
        Request::post("/payments")
            .header("idempotency-key", "k")
            .body(Body::from("{}"))
            .unwrap()
    };
    let first = app.clone().oneshot(req()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = app.clone().oneshot(req()).await.unwrap();
    assert!(replayed(&again));
    assert_eq!(again.headers()["location"], "/payments/1");
    assert_eq!(text(again).await, "{}");
    let no_key = app
        .oneshot(Request::post("/payments").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A body that yields "partial" and then fails.
struct Broken(u8);

impl Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0 += 1;
        std::task::Poll::Ready(match self.0 {
            1 => Some(Ok(Frame::data(Bytes::from_static(b"partial")))),
            2 => Some(Err(std::io::Error::other("upstream reset"))),
            _ => None,
        })
    }
}

#[tokio::test]
async fn a_failing_response_body_is_passed_on_and_not_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = layer().layer(service_fn(move |_req: In| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Broken(0))) }
    }));
    let res = svc.clone().oneshot(post(Some("k"), "{}")).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "partial");
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "upstream reset");
    // Not stored: the retry runs.
    let res = svc.oneshot(post(Some("k"), "{}")).await.unwrap();
    assert!(!replayed(&res));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn outcomes_are_counted_in_metrics() {
    use metrics_util::debugging::DebugValue;
    let recorded = support::recorded(false, async {
        let svc = layer().layer(payments(Arc::default()));
        for body in ["{}", "{}", "{}", "[]"] {
            svc.clone().oneshot(post(Some("k"), body)).await.unwrap();
        }
    });
    let counts: std::collections::BTreeMap<String, u64> = recorded
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "bulwark_idempotency_requests_total")
        .map(|(key, _, _, value)| {
            let outcome = key.key().labels().next().unwrap().value().to_owned();
            let DebugValue::Counter(n) = value else {
                panic!("not a counter");
            };
            (outcome, n)
        })
        .collect();
    assert_eq!(counts["new"], 1);
    assert_eq!(counts["replayed"], 2);
    assert_eq!(counts["mismatch"], 1);
}

#[tokio::test]
async fn works_in_a_plain_hyper_server_with_incoming_bodies() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |req: Request<RequestBody<hyper::body::Incoming>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = req.into_body().collect().await?.to_bytes();
            let res = Response::builder()
                .status(201)
                .header("location", "/payments/1")
                .body(Full::new(body))
                .unwrap();
            Ok::<_, hyper::Error>(res)
        }
    });
    let addr = support::serve_hyper(layer().layer(inner)).await;
    let req = || {
        Request::post(format!("http://{addr}/payments"))
            .header("idempotency-key", "\"hyper-1\"")
            .body(Full::new(Bytes::from_static(b"{\"amount\":1}")))
            .unwrap()
    };
    let (status, headers, body) = support::send(addr, req()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(body, "{\"amount\":1}");
    let (status, headers, body) = support::send(addr, req()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["location"], "/payments/1");
    assert_eq!(body, "{\"amount\":1}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A body that must never be read.
struct Unreadable;

impl Body for Unreadable {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        panic!("the layer read the body of a request it does not handle");
    }
}

#[tokio::test]
async fn bodies_of_requests_passed_through_are_not_read() {
    let svc = layer().layer(service_fn(|_req: Request<RequestBody<Unreadable>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    }));
    for method in ["GET", "PUT", "DELETE"] {
        let req = Request::builder()
            .method(method)
            .uri("/payments")
            .header("idempotency-key", "k")
            .body(Unreadable)
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // A POST without a key (optional) passes through unread too.
    let req = Request::post("/payments").body(Unreadable).unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::OK);
}
