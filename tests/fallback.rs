//! The fallback layer through `ServiceBuilder` and `oneshot`: every trigger on and off, every
//! kind of fallback, the last good store, failing fallbacks, the request body, and axum.

mod support;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bulwark::{
    BoxError, Rejection,
    body::ResponseBody,
    classify::StatusInRangeAsFailures,
    fallback::{
        FallbackLayer, FallbackReason, FallbackSource, LastGood, ServiceFallback, StaticResponse,
        Triggers,
    },
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

type Full8 = Full<Bytes>;

fn res(status: u16, body: &'static str) -> Response<Full8> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn get(uri: &str) -> Request<Full8> {
    Request::get(uri).body(Full8::default()).unwrap()
}

async fn text<B>(res: Response<B>) -> String
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn reason_of<B>(res: &Response<B>) -> Option<(&str, FallbackReason)> {
    let header = res.headers().get("bulwark-fallback")?.to_str().unwrap();
    Some((header, *res.extensions().get::<FallbackReason>()?))
}

/// A fixed fallback answer: 200 "fallback".
fn fixed() -> FallbackLayer<StaticResponse> {
    FallbackLayer::response(Response::new("fallback"))
}

/// An inner service answering `status` with body "inner".
fn answering(
    status: u16,
) -> impl Service<
    Request<Full8>,
    Response = Response<Full8>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full8>, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |_: Request<Full8>| async move { Ok(res(status, "inner")) })
}

/// An inner service failing with `Err("boom")`.
fn erroring() -> impl Service<Request<Full8>, Response = Response<Full8>, Error = BoxError> + Clone
{
    service_fn(|_: Request<Full8>| async { Err::<Response<Full8>, BoxError>("boom".into()) })
}

/// An inner service answering with `rejection`'s default response.
fn rejecting(
    rejection: Rejection,
) -> impl Service<Request<Full8>, Response = Response<ResponseBody<Full8>>, Error = Infallible> + Clone
{
    service_fn(move |_: Request<Full8>| {
        let rejection = rejection.clone();
        async move { Ok(rejection.into_response::<Full8>()) }
    })
}

// ---------------------------------------------------------------------------------------------
// Triggers

#[tokio::test]
async fn error_trigger_on_and_off() {
    let res = fixed().layer(erroring()).oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(reason_of(&res), Some(("error", FallbackReason::Error)));
    assert_eq!(text(res).await, "fallback");

    let err = fixed()
        .trigger(FallbackReason::Error, false)
        .layer(erroring())
        .oneshot(get("/"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "boom");
}

#[tokio::test]
async fn status_trigger_on_and_off() {
    for status in [500, 502, 503, 504] {
        let res = fixed()
            .layer(answering(status))
            .oneshot(get("/"))
            .await
            .unwrap();
        assert_eq!(
            reason_of(&res),
            Some(("status", FallbackReason::Status)),
            "{status}"
        );
        assert_eq!(text(res).await, "fallback");
    }
    for status in [200, 404, 429, 501] {
        let res = fixed()
            .layer(answering(status))
            .oneshot(get("/"))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(reason_of(&res), None, "{status}");
        assert_eq!(text(res).await, "inner");
    }
    let res = fixed()
        .trigger(FallbackReason::Status, false)
        .layer(answering(503))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("bulwark-fallback").is_none());
    assert_eq!(text(res).await, "inner");
}

#[tokio::test]
async fn the_status_trigger_asks_the_classifier() {
    let layer = fixed().classifier(StatusInRangeAsFailures::new(429..=599));
    let res = layer
        .clone()
        .layer(answering(429))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    let res = layer.layer(answering(404)).oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn circuit_open_trigger_on_and_off() {
    let open = Rejection::circuit_open(Duration::from_secs(3));
    let res = fixed()
        .layer(rejecting(open.clone()))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        reason_of(&res),
        Some(("circuit-open", FallbackReason::CircuitOpen))
    );
    assert!(
        res.extensions().get::<Rejection>().is_none(),
        "the answer is no rejection"
    );
    assert_eq!(text(res).await, "fallback");

    // Off: the breaker's 503 goes out as it is. The status trigger (on) does not fire either:
    // the classifier ignores rejections.
    let res = fixed()
        .trigger(FallbackReason::CircuitOpen, false)
        .layer(rejecting(open.clone()))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[header::RETRY_AFTER], "3");
    assert_eq!(res.extensions().get::<Rejection>(), Some(&open));
    assert_eq!(reason_of(&res), None);

    // Off, with `rejected` on: still a rejection.
    let res = fixed()
        .trigger(FallbackReason::CircuitOpen, false)
        .trigger(FallbackReason::Rejected, true)
        .layer(rejecting(open))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(
        reason_of(&res),
        Some(("rejected", FallbackReason::Rejected))
    );
}

#[tokio::test]
async fn rejected_trigger_is_off_by_default() {
    let limited = Rejection::rate_limited(Duration::from_secs(1), None);
    let res = fixed()
        .layer(rejecting(limited.clone()))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(reason_of(&res), None);

    let res = fixed()
        .trigger(FallbackReason::Rejected, true)
        .layer(rejecting(limited))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        reason_of(&res),
        Some(("rejected", FallbackReason::Rejected))
    );
}

fn slow_behind_timeout() -> impl Service<
    Request<Full8>,
    Response = Response<Full8>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<Full8>, BoxError>>,
> + Clone {
    ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .service_fn(|_: Request<Full8>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Infallible>(res(200, "slow"))
        })
}

#[tokio::test(start_paused = true)]
async fn a_tower_timeout_inside_gives_the_timeout_reason() {
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(|reason: FallbackReason| async move {
            Response::new(format!("fallback: {reason}"))
        }))
        .service(slow_behind_timeout());
    let started = tokio::time::Instant::now();
    let res = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(reason_of(&res), Some(("timeout", FallbackReason::Timeout)));
    assert_eq!(text(res).await, "fallback: timeout");

    // Timeouts are only ever `timeout`: with that trigger off, the error trigger lets them be.
    let err = fixed()
        .trigger(FallbackReason::Timeout, false)
        .layer(slow_behind_timeout())
        .oneshot(get("/"))
        .await
        .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());

    // And with the error trigger off, timeouts still fall back.
    let res = fixed()
        .triggers(Triggers::none().with(FallbackReason::Timeout, true))
        .layer(slow_behind_timeout())
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(reason_of(&res), Some(("timeout", FallbackReason::Timeout)));
}

#[tokio::test]
async fn no_trigger_no_fallback() {
    let layer = fixed().triggers(Triggers::none());
    let res = layer
        .clone()
        .layer(answering(503))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(layer.layer(erroring()).oneshot(get("/")).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// Kinds of fallback

#[tokio::test]
async fn a_reason_closure_gets_the_reason() {
    let layer = FallbackLayer::new(|reason| async move {
        Response::builder()
            .status(203)
            .body(format!("because {reason}"))
            .unwrap()
    });
    let res = layer
        .clone()
        .layer(answering(502))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 203);
    assert_eq!(text(res).await, "because status");
    let res = layer.layer(erroring()).oneshot(get("/")).await.unwrap();
    assert_eq!(text(res).await, "because error");
}

#[tokio::test]
async fn a_request_closure_gets_the_head_and_headers_only_when_captured() {
    type Seen = (Method, String, Version, HeaderMap, Bytes, FallbackReason);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let layer = {
        let seen = seen.clone();
        FallbackLayer::from_fn(move |reason, req: Request<Bytes>| {
            let seen = seen.clone();
            async move {
                let ext = *req.extensions().get::<FallbackReason>().unwrap();
                assert_eq!(ext, reason);
                let (parts, body) = req.into_parts();
                seen.lock().unwrap().push((
                    parts.method,
                    parts.uri.to_string(),
                    parts.version,
                    parts.headers,
                    body,
                    reason,
                ));
                Response::new(Bytes::from_static(b"from fn"))
            }
        })
    };
    let req = || {
        Request::put("/items/7?x=1")
            .version(Version::HTTP_2)
            .header("x-tenant", "acme")
            .body(Full8::new(Bytes::from_static(b"payload")))
            .unwrap()
    };
    let res = layer
        .clone()
        .layer(answering(500))
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(text(res).await, "from fn");
    let res = layer
        .capture_headers(true)
        .layer(answering(500))
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(text(res).await, "from fn");

    let seen = seen.lock().unwrap();
    let (method, uri, version, headers, body, reason) = &seen[0];
    assert_eq!(method, Method::PUT);
    assert_eq!(uri, "/items/7?x=1");
    assert_eq!(*version, Version::HTTP_2);
    assert!(headers.is_empty(), "headers are not captured by default");
    assert!(body.is_empty(), "the inner service consumed the body");
    assert_eq!(*reason, FallbackReason::Status);
    assert_eq!(seen[1].3["x-tenant"], "acme");
    assert!(seen[1].4.is_empty());
}

#[tokio::test]
async fn a_fallback_service_gets_the_request_with_the_reason() {
    let backup = service_fn(|req: Request<Bytes>| async move {
        let reason = req.extensions().get::<FallbackReason>().unwrap();
        Ok::<_, Infallible>(
            Response::builder()
                .header("x-backup", "yes")
                .body(Bytes::from(format!("backup {} {reason}", req.uri())))
                .unwrap(),
        )
    });
    let res = FallbackLayer::service(backup)
        .layer(erroring())
        .oneshot(get("/p?q=1"))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-backup"], "yes");
    assert_eq!(reason_of(&res), Some(("error", FallbackReason::Error)));
    assert_eq!(text(res).await, "backup /p?q=1 error");
}

#[tokio::test]
async fn a_fallback_service_is_polled_ready_before_each_call() {
    let backup = support::ReadyProbe::new(service_fn(|_: Request<Bytes>| async {
        Ok::<_, Infallible>(Response::new(Bytes::from_static(b"backup")))
    }));
    let svc = FallbackLayer::service(backup).layer(answering(503));
    for _ in 0..3 {
        let res = svc.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(text(res).await, "backup");
    }
}

#[tokio::test]
async fn a_static_response_keeps_status_headers_and_body() {
    let layer = FallbackLayer::response(
        Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .body(r#"["bestseller"]"#)
            .unwrap(),
    );
    for _ in 0..2 {
        let res = layer
            .clone()
            .layer(answering(503))
            .oneshot(get("/"))
            .await
            .unwrap();
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(res.headers()["bulwark-fallback"], "status");
        assert_eq!(text(res).await, r#"["bestseller"]"#);
    }
}

#[tokio::test]
async fn the_answer_carries_the_header_and_extension_and_calls_the_hook() {
    let calls: Arc<Mutex<Vec<FallbackReason>>> = Arc::default();
    let hook = {
        let calls = calls.clone();
        move |reason| calls.lock().unwrap().push(reason)
    };
    let layer = fixed().on_fallback(hook);
    let res = layer
        .clone()
        .layer(answering(504))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.headers()["bulwark-fallback"], "status");
    assert_eq!(
        res.extensions().get::<FallbackReason>(),
        Some(&FallbackReason::Status)
    );
    let _ = layer
        .clone()
        .layer(erroring())
        .oneshot(get("/"))
        .await
        .unwrap();
    let _ = layer.layer(answering(200)).oneshot(get("/")).await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [FallbackReason::Status, FallbackReason::Error]
    );
}

#[tokio::test]
async fn the_answer_is_logged_under_bulwark_fallback() {
    let (captured, _guard) = support::Captured::install();
    let _ = fixed()
        .layer(answering(503))
        .oneshot(get("/"))
        .await
        .unwrap();
    let events = captured.with_target("bulwark::fallback");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level, tracing::Level::WARN);
    assert_eq!(events[0].field("reason"), Some("status"));
    assert_eq!(events[0].field("original.status"), Some("503"));
    assert_eq!(events[0].field("status"), Some("200"));
}

// ---------------------------------------------------------------------------------------------
// A failing fallback returns the original

#[tokio::test]
async fn a_failing_fallback_service_returns_the_original_error() {
    let (captured, _guard) = support::Captured::install();
    let broken = service_fn(|_: Request<Bytes>| async {
        Err::<Response<Bytes>, BoxError>("backup down".into())
    });
    let err = FallbackLayer::service(broken)
        .layer(erroring())
        .oneshot(get("/"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "boom");
    let events = captured.with_target("bulwark::fallback");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level, tracing::Level::ERROR);
    assert_eq!(events[0].field("reason"), Some("error"));
    assert_eq!(events[0].field("original.error"), Some("boom"));
    assert_eq!(events[0].field("fallback.error"), Some("backup down"));
}

#[tokio::test]
async fn a_fallback_service_answering_5xx_or_rejected_returns_the_original_response() {
    let five_hundred = service_fn(|_: Request<Bytes>| async {
        let mut res = Response::new(Bytes::from_static(b"backup broken"));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        Ok::<_, Infallible>(res)
    });
    let res = FallbackLayer::service(five_hundred)
        .layer(answering(503))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(reason_of(&res), None);
    assert_eq!(text(res).await, "inner");

    let open = service_fn(|_: Request<Bytes>| async {
        let res = Rejection::circuit_open(Duration::from_secs(1)).default_response();
        let mut res = res;
        res.extensions_mut()
            .insert(Rejection::circuit_open(Duration::from_secs(1)));
        *res.status_mut() = StatusCode::OK; // even a 200, if it is a rejection
        Ok::<_, Infallible>(res)
    });
    let res = FallbackLayer::service(open)
        .layer(answering(502))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
}

#[tokio::test]
async fn a_failing_or_panicking_closure_returns_the_original() {
    let failing =
        FallbackLayer::new(|_| async { Err::<Response<Bytes>, BoxError>("no stale copy".into()) });
    let res = failing
        .layer(answering(503))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(text(res).await, "inner");

    let panics_in_future = FallbackLayer::new(|_| async {
        if true {
            panic!("bug in the fallback");
        }
        Response::new("unreachable")
    });
    let err = panics_in_future
        .layer(erroring())
        .oneshot(get("/"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "boom");

    let panics_at_once = FallbackLayer::new(
        |_reason: FallbackReason| -> std::future::Ready<Response<&'static str>> {
            panic!("bug before the future")
        },
    );
    let res = panics_at_once
        .layer(answering(500))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
}

#[tokio::test]
async fn or_tries_the_next_fallback() {
    let failing = service_fn(|_: Request<Bytes>| async {
        Err::<Response<Bytes>, BoxError>("backup down".into())
    });
    let res = FallbackLayer::service(failing)
        .or(StaticResponse::new(Response::new("static")))
        .layer(answering(503))
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    assert_eq!(text(res).await, "static");

    // Both failing: the original, and one error event naming both.
    let (captured, _guard) = support::Captured::install();
    let failing = service_fn(|_: Request<Bytes>| async {
        Err::<Response<Bytes>, BoxError>("backup down".into())
    });
    let res =
        FallbackLayer::from_source(ServiceFallback::new(failing).or(LastGood::new(10).unwrap()))
            .layer(answering(503))
            .oneshot(get("/"))
            .await
            .unwrap();
    assert_eq!(res.status(), 503);
    let events = captured.with_target("bulwark::fallback");
    let failed = events
        .iter()
        .find(|e| e.level == tracing::Level::ERROR)
        .unwrap();
    assert_eq!(
        failed.field("fallback.error"),
        Some("backup down; then no last good response is stored for this request")
    );
}

// ---------------------------------------------------------------------------------------------
// The last good response

/// An upstream answering 200 with the request's path and query, or 503 while `failing`.
#[derive(Clone, Default)]
struct Upstream {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Service<Request<Full8>> for Upstream {
    type Response = Response<Full8>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full8>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full8>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let res = if self.failing.load(Ordering::SeqCst) {
            res(503, "upstream down")
        } else {
            let mut res = Response::new(Full::new(Bytes::from(req.uri().to_string())));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
            h.insert(header::CACHE_CONTROL, "max-age=3600".parse().unwrap());
            h.insert(
                header::EXPIRES,
                "Thu, 01 Jan 2099 00:00:00 GMT".parse().unwrap(),
            );
            h.insert(header::ETAG, "\"v1\"".parse().unwrap());
            res
        };
        std::future::ready(Ok(res))
    }
}

#[tokio::test]
async fn last_good_is_kept_and_replayed_per_key() {
    let store = LastGood::new(100).unwrap();
    let upstream = Upstream::default();
    let svc = FallbackLayer::last_good(store.clone()).layer(upstream.clone());

    for uri in ["/a", "/b?page=2"] {
        let res = svc.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(reason_of(&res), None);
        assert_eq!(text(res).await, uri, "passed on from the buffer");
    }
    assert_eq!(store.entry_count(), 2);

    upstream.fail(true);
    for uri in ["/a", "/b?page=2"] {
        let res = svc.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/plain");
        // An old answer: not to be kept downstream for the freshness it had when current.
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert!(!res.headers().contains_key(header::EXPIRES));
        assert_eq!(res.headers()[header::ETAG], "\"v1\"");
        assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
        assert_eq!(text(res).await, uri);
    }
    // Other query, other key: nothing stored, no secondary: the original.
    let res = svc.clone().oneshot(get("/b?page=3")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(text(res).await, "upstream down");
    // Failures are not stored over the good ones.
    assert_eq!(store.entry_count(), 2);

    // A later good answer replaces the kept one.
    upstream.fail(false);
    let _ = svc.clone().oneshot(get("/a")).await.unwrap();
    upstream.fail(true);
    let res = svc.clone().oneshot(get("/a")).await.unwrap();
    assert_eq!(text(res).await, "/a");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn last_good_or_a_static_list_when_nothing_is_stored_yet() {
    let upstream = Upstream::default();
    let svc = FallbackLayer::last_good(LastGood::new(100).unwrap())
        .or(StaticResponse::new(Response::new(r#"["bestseller"]"#)))
        .layer(upstream.clone());

    upstream.fail(true);
    let res = svc.clone().oneshot(get("/recommendations")).await.unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    assert_eq!(text(res).await, r#"["bestseller"]"#);

    upstream.fail(false);
    let _ = svc.clone().oneshot(get("/recommendations")).await.unwrap();
    upstream.fail(true);
    let res = svc.clone().oneshot(get("/recommendations")).await.unwrap();
    assert_eq!(text(res).await, "/recommendations");
}

#[tokio::test]
async fn last_good_keeps_only_good_plain_get_answers() {
    let store = LastGood::new(100).unwrap();
    let layer = FallbackLayer::last_good(store.clone());
    // Not kept: a POST, a 404, a failure, a rejection, a Set-Cookie answer, an inner fallback's
    // answer, an answer to a request with Authorization, a 206.
    let _ = layer
        .clone()
        .layer(Upstream::default())
        .oneshot(Request::post("/a").body(Full8::default()).unwrap())
        .await
        .unwrap();
    let _ = layer
        .clone()
        .layer(answering(404))
        .oneshot(get("/b"))
        .await
        .unwrap();
    let _ = layer
        .clone()
        .layer(answering(500))
        .oneshot(get("/c"))
        .await
        .unwrap();
    let _ = layer
        .clone()
        .layer(rejecting(Rejection::rate_limited(
            Duration::from_secs(1),
            None,
        )))
        .oneshot(get("/d"))
        .await
        .unwrap();
    let cookie = service_fn(|_: Request<Full8>| async {
        let mut res = res(200, "yours");
        res.headers_mut()
            .insert(header::SET_COOKIE, "session=1".parse().unwrap());
        Ok::<_, Infallible>(res)
    });
    let _ = layer
        .clone()
        .layer(cookie)
        .oneshot(get("/e"))
        .await
        .unwrap();
    let nested = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(fixed())
        .service(answering(503));
    let res = nested.oneshot(get("/f")).await.unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    let _ = layer
        .clone()
        .layer(Upstream::default())
        .oneshot(
            Request::get("/g")
                .header(header::AUTHORIZATION, "Bearer t")
                .body(Full8::default())
                .unwrap(),
        )
        .await
        .unwrap();
    // A part of a resource (206): replayed to a plain GET it would be corrupt content.
    let _ = layer
        .clone()
        .layer(answering(206))
        .oneshot(get("/h"))
        .await
        .unwrap();
    assert_eq!(store.entry_count(), 0);

    // A POST that fails gets no replay of anything.
    let upstream = Upstream::default();
    upstream.fail(true);
    let res = layer
        .layer(upstream)
        .oneshot(Request::post("/a").body(Full8::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
}

/// A body of unknown length (like a chunked upstream answer).
struct Chunked(Option<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn large_and_unknown_length_answers_pass_through_unkept() {
    let store = LastGood::builder()
        .capacity(10)
        .max_body_bytes(4)
        .build()
        .unwrap();
    let layer = FallbackLayer::last_good(store.clone());
    let res = layer
        .clone()
        .layer(answering(200))
        .oneshot(get("/big"))
        .await
        .unwrap();
    assert_eq!(text(res).await, "inner", "5 bytes, over the limit of 4");
    let chunked = service_fn(|_: Request<Full8>| async {
        Ok::<_, Infallible>(Response::new(Chunked(Some(Bytes::from_static(b"ok")))))
    });
    let res = layer.layer(chunked).oneshot(get("/chunked")).await.unwrap();
    assert_eq!(text(res).await, "ok");
    assert_eq!(store.entry_count(), 0);
}

#[tokio::test]
async fn last_good_is_bounded() {
    let store = LastGood::new(5).unwrap();
    let svc = FallbackLayer::last_good(store.clone()).layer(Upstream::default());
    for i in 0..200 {
        let _ = svc
            .clone()
            .oneshot(get(&format!("/item/{i}")))
            .await
            .unwrap();
    }
    let n = store.entry_count();
    assert!((1..=5).contains(&n), "{n} entries");
}

#[tokio::test]
async fn last_good_with_a_key_hook() {
    // Keyed by path only: the query does not matter.
    let store = LastGood::builder()
        .key(|head: &http::request::Parts| Some(head.uri.path().to_owned()))
        .build()
        .unwrap();
    let upstream = Upstream::default();
    let svc = FallbackLayer::last_good(store).layer(upstream.clone());
    let _ = svc.clone().oneshot(get("/list?page=1")).await.unwrap();
    upstream.fail(true);
    let res = svc.oneshot(get("/list?page=9")).await.unwrap();
    assert_eq!(text(res).await, "/list?page=1");
}

/// A body that says it has 5 bytes and then fails.
struct Broken;

impl Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other("connection reset"))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(5)
    }
}

#[tokio::test]
async fn a_body_failing_while_kept_is_a_failure() {
    let broken =
        service_fn(|_: Request<Full8>| async { Ok::<_, Infallible>(Response::new(Broken)) });
    let res = FallbackLayer::last_good(LastGood::new(10).unwrap())
        .layer(broken)
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 502, "nothing stored: the honest original");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(
        res.extensions().get::<Rejection>().is_none(),
        "no layer refused"
    );
    let problem: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(problem["status"], 502);
    assert_eq!(problem["detail"], "The upstream answer broke off.");

    // With a secondary fallback, that answers instead; the same when the layer buffers request
    // bodies (its own path through the layer).
    let with_static = || {
        FallbackLayer::last_good(LastGood::new(10).unwrap())
            .or(StaticResponse::new(Response::new("static")))
    };
    let head_only = with_static().layer(broken).oneshot(get("/"));
    let buffered = with_static()
        .buffer_body(16)
        .unwrap()
        .layer(broken)
        .oneshot(get("/"));
    for res in [head_only.await.unwrap(), buffered.await.unwrap()] {
        assert_eq!(reason_of(&res), Some(("error", FallbackReason::Error)));
        assert_eq!(text(res).await, "static");
    }
}

/// With `refresh_after`, a key's good answers pass through untouched for that long after one
/// was kept: not kept (a failure replays the older one), not buffered (a failing body streams
/// its error to the client instead of becoming a 502).
#[tokio::test(start_paused = true)]
async fn last_good_refreshes_at_most_once_per_interval() {
    use http_body_util::Either;
    const FAILING: usize = 0;
    const BROKEN: usize = usize::MAX;

    let store = LastGood::builder()
        .refresh_after(Duration::from_secs(10))
        .build()
        .unwrap();
    let mode = Arc::new(AtomicUsize::new(1));
    let upstream = service_fn({
        let mode = mode.clone();
        move |_: Request<Full8>| {
            let res = match mode.load(Ordering::SeqCst) {
                FAILING => res(503, "upstream down").map(Either::Left),
                BROKEN => Response::new(Either::Right(Broken)),
                version => Response::new(Either::Left(Full8::from(format!("v{version}")))),
            };
            std::future::ready(Ok::<_, Infallible>(res))
        }
    });
    let svc = FallbackLayer::last_good(store.clone()).layer(upstream);
    let call = |answer: usize| {
        mode.store(answer, Ordering::SeqCst);
        svc.clone().oneshot(get("/recommendations"))
    };
    let replayed = |answer| async move {
        let res = call(FAILING).await.unwrap();
        assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
        assert_eq!(text(res).await, answer);
    };

    assert_eq!(text(call(1).await.unwrap()).await, "v1");
    // Inside the interval: passed on, not kept...
    assert_eq!(text(call(2).await.unwrap()).await, "v2");
    // ... and not buffered.
    let res = call(BROKEN).await.unwrap();
    assert_eq!((res.status(), reason_of(&res)), (StatusCode::OK, None));
    assert!(res.into_body().collect().await.is_err());
    replayed("v1").await;

    // After it, the next good answer is kept.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(text(call(3).await.unwrap()).await, "v3");
    assert_eq!(text(call(4).await.unwrap()).await, "v4");
    replayed("v3").await;

    // An unchanged answer after the interval starts a new one (without a write).
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(text(call(3).await.unwrap()).await, "v3");
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(text(call(5).await.unwrap()).await, "v5");
    replayed("v3").await;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(text(call(5).await.unwrap()).await, "v5");
    replayed("v5").await;

    // Cleared inside an interval: the next good answer is kept at once.
    store.clear();
    assert_eq!(text(call(6).await.unwrap()).await, "v6");
    replayed("v6").await;
}

#[tokio::test]
async fn a_good_answer_is_kept_with_buffered_request_bodies_too() {
    let store = LastGood::new(10).unwrap();
    let upstream = Upstream::default();
    let svc = FallbackLayer::last_good(store.clone())
        .buffer_body(16)
        .unwrap()
        .layer(upstream.clone());
    let res = svc.clone().oneshot(get("/list?page=1")).await.unwrap();
    assert_eq!(text(res).await, "/list?page=1");
    assert_eq!(store.entry_count(), 1);
    upstream.fail(true);
    let res = svc.oneshot(get("/list?page=1")).await.unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    assert_eq!(text(res).await, "/list?page=1");
}

// ---------------------------------------------------------------------------------------------
// Request bodies

fn echo_then_fail(
    calls: support::Counter,
) -> impl Service<
    Request<Full8>,
    Response = Response<Full8>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full8>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |req: Request<Full8>| {
        calls.hit();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "hello", "the inner service gets the whole body");
            Ok(res(503, "inner"))
        }
    })
}

/// A closure fallback answering with the request body it was given.
type EchoFn = fn(FallbackReason, Request<Bytes>) -> std::future::Ready<Response<Bytes>>;

fn body_echo() -> FallbackLayer<bulwark::fallback::RequestFn<EchoFn>> {
    FallbackLayer::from_fn(
        (|_, req: Request<Bytes>| std::future::ready(Response::new(req.into_body()))) as EchoFn,
    )
}

fn post(body: &'static str) -> Request<Full8> {
    Request::post("/")
        .body(Full8::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn by_default_the_fallback_sees_no_body() {
    let calls = support::Counter::default();
    let res = body_echo()
        .layer(echo_then_fail(calls.clone()))
        .oneshot(post("hello"))
        .await
        .unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    assert_eq!(text(res).await, "");
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn with_buffer_body_both_see_the_body() {
    let calls = support::Counter::default();
    let layer = body_echo().buffer_body(16).unwrap();
    let res = layer
        .clone()
        .layer(echo_then_fail(calls.clone()))
        .oneshot(post("hello"))
        .await
        .unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    assert_eq!(text(res).await, "hello");
    assert_eq!(calls.get(), 1);

    // Over the limit: 413, the inner service is not called, no fallback.
    let res = layer
        .layer(echo_then_fail(calls.clone()))
        .oneshot(post("hello, this is too long"))
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::payload_too_large(16))
    );
    assert_eq!(reason_of(&res), None);
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn buffer_body_takes_a_rejection_hook_and_refuses_zero() {
    let hook = |r: &Rejection| {
        let mut res = Response::new(Bytes::from_static(b"too big"));
        *res.status_mut() = r.status();
        res
    };
    let res = body_echo()
        .buffer_body(2)
        .unwrap()
        .on_rejection(hook)
        .layer(answering(200))
        .oneshot(post("hello"))
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert!(res.extensions().get::<Rejection>().is_some());
    assert_eq!(text(res).await, "too big");

    let err = fixed().buffer_body(0).unwrap_err();
    assert_eq!(err.to_string(), "invalid buffer_body: limit must be > 0");
}

#[tokio::test]
async fn buffer_body_calls_only_ready_inner_instances() {
    let inner = support::ReadyProbe::new(answering(503));
    let svc = body_echo().buffer_body(64).unwrap().layer(inner);
    for _ in 0..3 {
        let res = svc.clone().oneshot(post("hello")).await.unwrap();
        assert_eq!(text(res).await, "hello");
    }
    // One service value, several calls in a row.
    let mut svc = svc;
    for _ in 0..3 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(post("again"))
            .await
            .unwrap();
        assert_eq!(text(res).await, "again");
    }
}

// ---------------------------------------------------------------------------------------------
// axum

fn assert_infallible<S: Service<R, Error = Infallible>, R>(_: &S) {}

#[tokio::test]
async fn an_axum_router_stays_infallible() {
    use axum::{Router, body::Body, routing::get as route_get};

    let app: Router = Router::new()
        .route(
            "/down",
            route_get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route("/up", route_get(|| async { "up" }))
        .layer(
            FallbackLayer::last_good(LastGood::new(10).unwrap())
                .or(StaticResponse::new(Response::new("static"))),
        );
    assert_infallible::<_, Request<Body>>(&app);

    let res = app
        .clone()
        .oneshot(Request::get("/down").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["bulwark-fallback"], "status");
    assert_eq!(text(res).await, "static");

    let res = app
        .oneshot(Request::get("/up").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(text(res).await, "up");
}

#[tokio::test]
async fn buffer_body_with_axum_bodies() {
    use axum::{Router, body::Body, routing::post as route_post};

    let app: Router = Router::new()
        .route(
            "/pay",
            route_post(|body: String| async move {
                assert_eq!(body, "amount=5");
                StatusCode::BAD_GATEWAY
            }),
        )
        .layer(body_echo().buffer_body(1024).unwrap());
    assert_infallible::<_, Request<Body>>(&app);
    let res = app
        .oneshot(Request::post("/pay").body(Body::from("amount=5")).unwrap())
        .await
        .unwrap();
    assert_eq!(reason_of(&res), Some(("status", FallbackReason::Status)));
    assert_eq!(text(res).await, "amount=5");
}

#[test]
fn layers_and_services_print_without_debug_closures() {
    let layer = FallbackLayer::new(|_| async { Response::new("x") })
        .on_fallback(|_| {})
        .buffer_body(8)
        .unwrap()
        .on_rejection(|r: &Rejection| r.default_response());
    let text = format!("{layer:?}");
    assert!(
        text.starts_with("FallbackLayer { source: ReasonFn("),
        "{text}"
    );
    assert!(
        text.contains("triggers: {Error, Status, CircuitOpen, Timeout}"),
        "{text}"
    );
    assert!(text.contains("BufferBody { limit: 8"), "{text}");
    let text = format!(
        "{:?}",
        LastGood::builder().key(|_: &http::request::Parts| Some(1))
    );
    assert!(text.contains("capacity: 1000"), "{text}");
}

#[tokio::test]
async fn last_good_answers_errors_and_open_circuits_too() {
    // 200 "fresh" normally; `x-mode: open` gets a breaker's 503, `x-mode: err` an `Err`.
    let inner = service_fn(|req: Request<Full8>| async move {
        match req.headers().get("x-mode").map(|v| v.as_bytes()) {
            Some(b"open") => Ok(Rejection::circuit_open(Duration::from_secs(5)).into_response()),
            Some(b"err") => Err::<_, BoxError>("boom".into()),
            _ => Ok(Response::new(ResponseBody::new(Full8::from("fresh")))),
        }
    });
    let svc = FallbackLayer::last_good(LastGood::new(10).unwrap()).layer(inner);
    let req = |mode: &str| {
        Request::get("/list")
            .header("x-mode", mode)
            .body(Full8::default())
            .unwrap()
    };
    let res = svc.clone().oneshot(req("ok")).await.unwrap();
    assert_eq!(text(res).await, "fresh");
    for (mode, reason) in [("open", "circuit-open"), ("err", "error")] {
        let res = svc.clone().oneshot(req(mode)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["bulwark-fallback"], reason);
        assert_eq!(text(res).await, "fresh");
    }
}
