//! The idempotency layer on a real Redis: two layer instances sharing one server behave as one
//! (exactly once across them, replays from either), owner-checked leases, and fail-closed
//! answers while Redis is down.
#![cfg(feature = "redis")]

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
    Rejection,
    body::RequestBody,
    idempotency::{
        Fingerprint, IdempotencyKey, IdempotencyLayer, IdempotencyStore, StoreKey,
        store::{Claim, Completion, LeaseToken, RedisStore, Store, StoredResponse},
    },
    redis::Redis,
};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Barrier, Notify};
use tower::{Layer, Service, ServiceExt, service_fn};

type In = Request<RequestBody<Full<Bytes>>>;

fn post(key: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/payments")
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn redis_on(d: &support::Deployment, prefix: &str) -> Redis {
    d.redis().prefix(prefix).timeout(Duration::from_millis(300))
}

/// Two layers, as two instances of the app would have, sharing one deployment.
fn two_instances_on(d: &support::Deployment, prefix: &str) -> [IdempotencyLayer; 2] {
    [
        IdempotencyLayer::new(IdempotencyStore::redis(redis_on(d, prefix))),
        IdempotencyLayer::new(IdempotencyStore::redis(redis_on(d, prefix))),
    ]
}

/// 201 with `Location` naming the call; a short pause so duplicates arrive while it runs.
fn payments(
    calls: Arc<AtomicUsize>,
) -> impl Service<In, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |_req: In| {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Response::builder()
                .status(201)
                .header("location", format!("/payments/{n}"))
                .header("connection", "close")
                .body(Full::new(Bytes::from(format!(r#"{{"id":{n}}}"#))))
                .unwrap())
        }
    })
}

fn replayed<B>(res: &Response<B>) -> bool {
    res.headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

every_backend! {
async fn two_instances_run_64_concurrent_duplicates_once(d) {
    const N: usize = 64;
    let calls = Arc::new(AtomicUsize::new(0));
    let [a, b] = two_instances_on(d, "exactly-once");
    let services = [
        a.layer(payments(calls.clone())),
        b.layer(payments(calls.clone())),
    ];
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let svc = services[i % 2].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let res = svc.oneshot(post("double-click", "{}")).await.unwrap();
            (res.status(), replayed(&res))
        }));
    }
    let (mut first, mut others) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::CREATED, false) => first += 1,
            (StatusCode::CREATED, true) | (StatusCode::CONFLICT, false) => others += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one execution across both instances"
    );
    assert_eq!((first, others), (1, N - 1));

    // Both instances replay the stored response, exactly, minus hop-by-hop fields.
    for svc in services {
        let res = svc.oneshot(post("double-click", "{}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        assert!(replayed(&res));
        assert_eq!(res.headers()["location"], "/payments/1");
        assert!(!res.headers().contains_key("connection"));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, r#"{"id":1}"#);
    }
}
}

every_backend! {
async fn replay_and_mismatch_from_the_other_instance(d) {
    let calls = Arc::new(AtomicUsize::new(0));
    let [a, b] = two_instances_on(d, "other-instance");
    let a = a.layer(payments(calls.clone()));
    let b = b.layer(payments(calls.clone()));
    a.oneshot(post("k", r#"{"amount":1}"#)).await.unwrap();
    let res = b
        .clone()
        .oneshot(post("k", r#"{"amount":1}"#))
        .await
        .unwrap();
    assert!(replayed(&res));
    let res = b
        .clone()
        .oneshot(post("k", r#"{"amount":2}"#))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Another prefix is another namespace.
    let c = IdempotencyLayer::new(IdempotencyStore::redis(redis_on(d, "elsewhere")))
        .layer(payments(calls.clone()));
    let res = c.oneshot(post("k", r#"{"amount":1}"#)).await.unwrap();
    assert!(!replayed(&res));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
}

fn store_key(key: &str) -> StoreKey {
    StoreKey::new(None, &IdempotencyKey::parse(key.as_bytes()).unwrap())
}

every_backend! {
async fn leases_are_owner_checked_and_separate_from_retention(d) {
    let store = RedisStore::new(redis_on(d, "leases"));
    let fp = Fingerprint::from_bytes([1; 32]);
    let key = store_key("lease");
    let lease = Duration::from_millis(100);
    let day = Duration::from_secs(86_400);

    let Claim::Acquired(old) = store.claim(key, fp, lease).await.unwrap() else {
        panic!("first claim");
    };
    assert!(matches!(
        store.claim(key, fp, lease).await.unwrap(),
        Claim::InFlight { lease_left, .. } if lease_left <= lease
    ));
    let stranger = LeaseToken::generate();
    assert!(!store.release(key, stranger).await.unwrap());
    assert!(
        !store
            .complete(key, stranger, Completion::TooLarge, day)
            .await
            .unwrap()
    );

    // The lease runs out (Redis expires it); a newer claim wins; the old owner's late
    // completion and release change nothing.
    tokio::time::sleep(lease * 3).await;
    let Claim::Acquired(newer) = store.claim(key, fp, Duration::from_secs(60)).await.unwrap()
    else {
        panic!("claim after the lease ended");
    };
    let response = StoredResponse {
        status: StatusCode::CREATED,
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"late"),
    };
    assert!(
        !store
            .complete(key, old, Completion::Response(Arc::new(response)), day)
            .await
            .unwrap()
    );
    assert!(!store.release(key, old).await.unwrap());
    let response = StoredResponse {
        status: StatusCode::CREATED,
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"newer"),
    };
    assert!(
        store
            .complete(key, newer, Completion::Response(Arc::new(response)), day)
            .await
            .unwrap()
    );
    // Completed: kept for the retention period, long after the lease would have ended.
    tokio::time::sleep(lease * 3).await;
    let Claim::Completed { response, .. } = store.claim(key, fp, lease).await.unwrap() else {
        panic!("completed entry");
    };
    assert_eq!(response.body, "newer");
    assert_eq!(response.status, StatusCode::CREATED);

    // Released by its owner: free at once.
    let key = store_key("released");
    let Claim::Acquired(token) = store.claim(key, fp, day).await.unwrap() else {
        panic!();
    };
    assert!(store.release(key, token).await.unwrap());
    assert!(matches!(
        store.claim(key, fp, day).await.unwrap(),
        Claim::Acquired(_)
    ));
}
}

every_backend! {
own async fn redis_down_fails_closed_with_503(d) {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let (counter, wait) = (calls.clone(), gate.clone());
    let layer = IdempotencyLayer::new(IdempotencyStore::redis(redis_on(d, "down")));
    let handle = layer.handle();
    let svc = layer.layer(service_fn(move |_req: In| {
        let (counter, wait) = (counter.clone(), wait.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            wait.notified().await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ran"))))
        }
    }));

    // Redis stops while a request runs: its answer still reaches the client; nothing is
    // stored for it.
    let running = tokio::spawn(svc.clone().oneshot(post("mid", "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    d.stop_all();
    gate.notify_one();
    let res = running.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(handle.stats().store_errors >= 1);

    // While Redis is down: 503 within the call timeout, the handler not called.
    let res = svc.clone().oneshot(post("new", "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(matches!(
        res.extensions().get::<Rejection>(),
        Some(Rejection::BackendUnavailable { .. })
    ));
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Back up: requests run again.
    d.restart_all();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        let svc = svc.clone();
        let req = tokio::spawn(svc.oneshot(post("after", "{}")));
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.notify_one();
        status = req.await.unwrap().unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::OK);
}
}

every_backend! {
own async fn a_completion_that_times_out_is_stored_when_redis_answers_again(d) {
    // Redis answers nothing for a moment just as the handler finishes (the soak's SIGSTOP):
    // the completion times out. The charge has run and its answer reached the client, so the
    // key must end up completed, not left to its lease: else a retry after the lease runs
    // the payment again while Redis never lost a thing.
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let (counter, wait) = (calls.clone(), gate.clone());
    let config = bulwark::idempotency::IdempotencyConfig::builder()
        .lease(Duration::from_secs(3))
        .build()
        .unwrap();
    let layer = IdempotencyLayer::new(IdempotencyStore::redis(redis_on(d, "slow-complete"))).config(config);
    let handle = layer.handle();
    let svc = layer.layer(service_fn(move |_req: In| {
        let (counter, wait) = (counter.clone(), wait.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                wait.notified().await;
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("charge {n}")))))
        }
    }));
    let first = tokio::spawn(svc.clone().oneshot(post("slow", "{}")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    d.pause_all(1_000);
    gate.notify_one();
    let res = first.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "charge 1");
    assert!(handle.stats().store_errors >= 1, "the completion timed out");

    // Past the lease: the retry is answered with the first charge's answer.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let retry = svc.clone().oneshot(post("slow", "{}")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "charged twice");
    assert!(replayed(&retry));
    assert_eq!(retry.into_body().collect().await.unwrap().to_bytes(), "charge 1");
}
}

every_backend! {
own async fn a_claim_that_times_out_does_not_hold_the_key_for_its_lease(d) {
    // The claim reaches a Redis that answers nothing: the layer gives up (503) but Redis runs
    // the claim when it wakes. Nobody will complete it, so it must not refuse the key's
    // retries with 409 for the whole lease (60 s).
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = IdempotencyLayer::new(IdempotencyStore::redis(redis_on(d, "slow-claim")));
    let svc = layer.layer(payments(calls.clone()));
    // A connection that is up already, so the claim is sent (not stuck connecting).
    let warm = svc.clone().oneshot(post("warm", "{}")).await.unwrap();
    assert_eq!(warm.status(), StatusCode::CREATED);
    d.pause_all(800);
    let res = svc.clone().oneshot(post("late", "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the refused request did not run");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut status = StatusCode::CONFLICT;
    for _ in 0..10 {
        status = svc.clone().oneshot(post("late", "{}")).await.unwrap().status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::CREATED, "the key is free once Redis answers");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
}
