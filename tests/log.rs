//! The request log: field names and values, levels, markers, sampling, redaction, trace
//! context, body-end timing and the request-duration histogram.

mod support;

use std::{convert::Infallible, net::SocketAddr, num::NonZeroU64, time::Duration};

use axum::{Router, body::Body, routing::get};
use bulwark::{Rejection, body::ResponseBody, log::RequestLogLayer};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::{Captured, CapturedEvent};
use tower::{Layer, ServiceExt, service_fn};

/// Sends `req` through `svc` and reads the whole body (the event fires at the body's end).
async fn run<S, B>(svc: S, req: Request<Body>) -> Response<bytes::Bytes>
where
    S: tower::Service<Request<Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, bytes)
}

fn request(uri: &str) -> Request<Body> {
    let mut req = Request::get(uri)
        .header("host", "shop.example")
        .header("user-agent", "probe/1")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert("198.51.100.7:4000".parse::<SocketAddr>().unwrap());
    req
}

fn only_event(captured: &Captured) -> CapturedEvent {
    let events = captured.with_target("bulwark::log");
    assert_eq!(events.len(), 1, "{events:?}");
    events.into_iter().next().unwrap()
}

/// `server.address` is the host alone and `server.port` the port, from `Host` or else the URI's
/// authority, on the completion event and on the event of a request that failed.
#[tokio::test]
async fn the_host_port_is_server_port() {
    let (captured, _guard) = Captured::install();
    let mut req = request("/items/1");
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("shop.example:8443"));
    run(app(), req).await;
    let e = only_event(&captured);
    assert_eq!(e.field("server.address"), Some("shop.example"), "{e:?}");
    assert_eq!(e.field("server.port"), Some("8443"), "{e:?}");

    let (captured, _guard) = Captured::install();
    let failing = tower::ServiceBuilder::new()
        .layer(RequestLogLayer::new())
        .service(tower::service_fn(|_req: Request<Body>| async {
            Err::<Response<Body>, _>(std::io::Error::other("down"))
        }));
    let mut req = request("http://[2001:db8::1]:3000/items/1");
    req.headers_mut().remove("host");
    assert!(failing.oneshot(req).await.is_err());
    let e = only_event(&captured);
    assert_eq!(e.field("server.address"), Some("2001:db8::1"), "{e:?}");
    assert_eq!(e.field("server.port"), Some("3000"), "{e:?}");
}

/// An axum app with a route template, so `http.route` and the span name can be checked.
fn app() -> Router {
    Router::new()
        .route("/items/{id}", get(|| async { "an item" }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/broken",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .layer(RequestLogLayer::new())
}

#[tokio::test]
async fn a_success_has_every_otel_field() {
    let (captured, _guard) = Captured::install();
    run(app(), request("http://shop.example/items/42?page=2")).await;
    let e = only_event(&captured);
    assert_eq!(e.level, tracing::Level::INFO);
    for (field, value) in [
        ("http.request.method", "GET"),
        ("url.scheme", "http"),
        ("url.path", "/items/42"),
        ("url.query", "page=2"),
        ("http.route", "/items/{id}"),
        ("server.address", "shop.example"),
        ("network.protocol.version", "1.1"),
        ("http.response.status_code", "200"),
        ("http.response.body.size", "7"),
        ("http.response.body.complete", "true"),
        ("client.address", "198.51.100.7"),
        ("user_agent.original", "probe/1"),
    ] {
        assert_eq!(e.field(field), Some(value), "{field}: {e:?}");
    }
    assert_eq!(e.field("server.port"), None, "the Host has no port");
    assert!(e.field("request_id").is_some_and(|id| id.len() == 36));
    let ttfb: f64 = e.field("time_to_first_byte_ms").unwrap().parse().unwrap();
    let total: f64 = e.field("duration_ms").unwrap().parse().unwrap();
    assert!(ttfb <= total);
    assert_eq!(e.field("error.type"), None);

    let span = captured
        .spans()
        .into_iter()
        .find(|s| s.target == "request")
        .unwrap();
    assert_eq!(span.field("otel.name"), Some("GET /items/{id}"));
}

#[tokio::test]
async fn levels_follow_the_outcome() {
    let (captured, _guard) = Captured::install();
    run(app(), request("/missing")).await;
    run(app(), request("/broken")).await;
    let events = captured.with_target("bulwark::log");
    assert_eq!(events[0].level, tracing::Level::WARN);
    assert_eq!(events[0].field("http.response.status_code"), Some("404"));
    assert_eq!(events[1].level, tracing::Level::ERROR);
    assert_eq!(events[1].field("error.type"), Some("500"));
}

#[tokio::test(start_paused = true)]
async fn slow_requests_warn_and_duration_covers_the_body() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new()
        .slow_threshold(Duration::from_millis(100))
        .layer(service_fn(|_: Request<Body>| async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok::<_, Infallible>(Response::new(Body::from("late")))
        }));
    run(svc, request("/slow")).await;
    let e = only_event(&captured);
    assert_eq!(e.level, tracing::Level::WARN);
    let total: f64 = e.field("duration_ms").unwrap().parse().unwrap();
    assert!(total >= 250.0, "{total}");
}

#[tokio::test]
async fn inner_errors_carry_their_source_chain_and_timeouts_are_named() {
    #[derive(Debug)]
    struct Upstream(std::io::Error);
    impl std::fmt::Display for Upstream {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("upstream call failed")
        }
    }
    impl std::error::Error for Upstream {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
        let e: bulwark::BoxError = Box::new(Upstream(std::io::Error::other("connection reset")));
        Err::<Response<Body>, _>(e)
    }));
    assert!(svc.oneshot(request("/x")).await.is_err());
    let e = only_event(&captured);
    assert_eq!(e.level, tracing::Level::ERROR);
    assert_eq!(
        e.field("error.message"),
        Some("upstream call failed: connection reset")
    );
    assert_eq!(e.field("error.type"), Some("_OTHER"));

    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
        let e: bulwark::BoxError = Box::new(tower::timeout::error::Elapsed::new());
        Err::<Response<Body>, _>(e)
    }));
    assert!(svc.oneshot(request("/x")).await.is_err());
    assert_eq!(only_event(&captured).field("error.type"), Some("timeout"));
}

#[tokio::test]
async fn every_bulwark_marker_becomes_a_field() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|req: Request<Body>| async move {
        let res = match req.uri().path() {
            "/rejected" => Rejection::circuit_open(Duration::from_secs(2)).into_response(),
            "/fallback" => Response::builder()
                .header("bulwark-fallback", "circuit-open")
                .body(ResponseBody::new(Body::empty()))
                .unwrap(),
            "/cached" => Response::builder()
                .header("x-request-id", "inner-2")
                .header("cache-status", "bulwark; hit; ttl=9")
                .body(ResponseBody::new(Body::empty()))
                .unwrap(),
            "/replayed" => Response::builder()
                .header("idempotent-replayed", "true")
                .body(ResponseBody::new(Body::empty()))
                .unwrap(),
            // Many fields (markers found by lookup rather than by a walk over the fields),
            // and a request id of the inner service's own.
            _ => {
                let mut b = Response::builder();
                for i in 0..20 {
                    b = b.header(format!("x-filler-{i}"), "1");
                }
                b.header("cache-status", "bulwark; fwd=miss")
                    .header("bulwark-fallback", "error")
                    .header("idempotent-replayed", "true")
                    .header("x-request-id", "inner-id")
                    .body(ResponseBody::new(Body::empty()))
                    .unwrap()
            }
        };
        Ok::<_, Infallible>(res)
    }));
    for path in ["/rejected", "/fallback", "/cached", "/replayed"] {
        let res = svc.clone().oneshot(request(path)).await.unwrap();
        let ids: Vec<_> = res.headers().get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{path}: {ids:?}");
        if path == "/cached" {
            // A cached answer's id is another request's: the client gets its own.
            assert_ne!(
                ids,
                ["inner-2"],
                "the request's own id replaces the cached one"
            );
        }
        drop(res);
    }
    let res = svc.clone().oneshot(request("/many")).await.unwrap();
    let ids: Vec<_> = res.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids, ["inner-id"], "the request's own id, alone");
    drop(res);
    let events = captured.with_target("bulwark::log");
    assert_eq!(events[0].field("bulwark.rejection"), Some("circuit_open"));
    assert_eq!(events[1].field("bulwark.fallback"), Some("circuit-open"));
    assert_eq!(
        events[2].field("bulwark.cache_status"),
        Some("bulwark; hit; ttl=9")
    );
    assert_eq!(events[3].field("bulwark.replayed"), Some("true"));
    assert_eq!(events[4].field("bulwark.fallback"), Some("error"));
    assert_eq!(
        events[4].field("bulwark.cache_status"),
        Some("bulwark; fwd=miss")
    );
    assert_eq!(events[4].field("bulwark.replayed"), Some("true"));
}

#[tokio::test]
async fn sampling_keeps_one_in_n_successes_and_every_error() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new()
        .sample_successes(NonZeroU64::new(3).unwrap())
        .layer(service_fn(|req: Request<Body>| async move {
            let status = if req.uri().path() == "/bad" { 500 } else { 200 };
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(res)
        }));
    for _ in 0..6 {
        run(svc.clone(), request("/ok")).await;
    }
    for _ in 0..2 {
        run(svc.clone(), request("/bad")).await;
    }
    let events = captured.with_target("bulwark::log");
    let ok = events
        .iter()
        .filter(|e| e.field("http.response.status_code") == Some("200"))
        .count();
    let bad = events
        .iter()
        .filter(|e| e.field("http.response.status_code") == Some("500"))
        .count();
    assert_eq!((ok, bad), (2, 2));
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new()
        .log_request_headers(true)
        .redact_query_param("email")
        .layer(service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("set-cookie", "sid=RESPONSE-COOKIE-SECRET")
                    .body(Body::empty())
                    .unwrap(),
            )
        }));
    let mut req = request(
        "/login?token=QUERY-TOKEN-SECRET&password=QUERY-PASSWORD-SECRET&api_key=QUERY-KEY-SECRET&email=a@b.c&page=1",
    );
    let h = req.headers_mut();
    h.insert("authorization", "Bearer AUTH-SECRET".parse().unwrap());
    h.insert("proxy-authorization", "Basic PROXY-SECRET".parse().unwrap());
    h.insert("cookie", "sid=COOKIE-SECRET".parse().unwrap());
    h.insert("x-api-key", "HEADER-KEY-SECRET".parse().unwrap());
    h.insert("x-upstream-token", "HEADER-TOKEN-SECRET".parse().unwrap());
    h.insert("accept", "application/json".parse().unwrap());
    run(svc, req).await;
    let text = captured.all_text();
    for secret in [
        "QUERY-TOKEN-SECRET",
        "QUERY-PASSWORD-SECRET",
        "QUERY-KEY-SECRET",
        "a@b.c",
        "AUTH-SECRET",
        "PROXY-SECRET",
        "COOKIE-SECRET",
        "HEADER-KEY-SECRET",
        "HEADER-TOKEN-SECRET",
        "RESPONSE-COOKIE-SECRET",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let e = only_event(&captured);
    assert_eq!(
        e.field("url.query"),
        Some("token=REDACTED&password=REDACTED&api_key=REDACTED&email=REDACTED&page=1")
    );
    assert!(
        e.field("http.request.headers")
            .unwrap()
            .contains("accept: application/json")
    );
}

#[tokio::test]
async fn traceparent_ids_are_recorded_when_valid() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    let mut req = request("/");
    req.headers_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    run(svc.clone(), req).await;
    let mut bad = request("/");
    bad.headers_mut().insert(
        "traceparent",
        "00-zzzz-00f067aa0ba902b7-01".parse().unwrap(),
    );
    run(svc, bad).await;
    let events = captured.with_target("bulwark::log");
    assert_eq!(
        events[0].field("trace_id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(events[0].field("span_id"), Some("00f067aa0ba902b7"));
    assert_eq!(events[1].field("trace_id"), None);
}

/// A repeated field is logged by its first value, as `HeaderMap::get` would give it, and a valid
/// sent id is kept; with a subscriber listening, as without one.
#[tokio::test]
async fn repeated_fields_are_logged_by_their_first_value() {
    let svc = RequestLogLayer::new().layer(service_fn(|req: Request<Body>| async move {
        let id = req.headers().get("x-request-id").cloned();
        Ok::<_, Infallible>(Response::new(Body::from(
            id.map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
        )))
    }));
    let repeated = || {
        Request::get("/")
            .header("accept", "*/*")
            .header("user-agent", "first/1")
            .header("x-request-id", "sent-1")
            .header("host", "first.example")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("user-agent", "second/2")
            .header("x-request-id", "sent-2")
            .header("host", "second.example")
            .header(
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            )
            .body(Body::empty())
            .unwrap()
    };
    let (captured, guard) = Captured::install();
    let res = run(svc.clone(), repeated()).await;
    assert_eq!(res.headers()["x-request-id"], "sent-1");
    assert_eq!(res.body(), "sent-1", "the inner service sees the sent id");
    let e = only_event(&captured);
    for (field, value) in [
        ("request_id", "sent-1"),
        ("user_agent.original", "first/1"),
        ("server.address", "first.example"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ] {
        assert_eq!(e.field(field), Some(value), "{field}: {e:?}");
    }
    drop(guard);

    // Nobody listening: the id alone is read, the same way.
    let res = run(svc, repeated()).await;
    assert_eq!(res.headers()["x-request-id"], "sent-1");
    assert_eq!(res.body(), "sent-1");
}

#[tokio::test]
async fn a_body_dropped_early_is_logged_as_incomplete() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("never read")))
    }));
    let res = svc.oneshot(request("/")).await.unwrap();
    drop(res);
    assert_eq!(
        only_event(&captured).field("http.response.body.complete"),
        Some("false")
    );
}

#[tokio::test]
async fn an_empty_body_dropped_unread_is_complete() {
    // Servers may never poll a body that is at its end (a 204, an empty answer).
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::NO_CONTENT;
        Ok::<_, Infallible>(res)
    }));
    let res = svc.oneshot(request("/")).await.unwrap();
    drop(res);
    let event = only_event(&captured);
    assert_eq!(event.field("http.response.body.complete"), Some("true"));
    assert_eq!(event.field("http.response.body.size"), Some("0"));
    assert_eq!(event.field("http.response.status_code"), Some("204"));
}

#[test]
fn the_duration_histogram_is_recorded_with_bounded_labels() {
    use metrics_util::debugging::DebugValue;
    let snapshot = support::recorded(false, async {
        for id in 0..20 {
            run(app(), request(&format!("/items/{id}"))).await;
        }
        run(app(), request("/broken")).await;
    });
    let histograms: Vec<_> = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "http_server_request_duration_seconds")
        .collect();
    // 20 different paths, one route template: one label set, plus one for the 5xx.
    assert_eq!(histograms.len(), 2, "{histograms:?}");
    for (key, _, _, value) in histograms {
        let labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let DebugValue::Histogram(samples) = value else {
            panic!("not a histogram");
        };
        if labels.contains(&("route".to_owned(), "/items/{id}".to_owned())) {
            assert_eq!(samples.len(), 20);
            assert!(labels.contains(&("status_class".to_owned(), "2xx".to_owned())));
            assert!(labels.contains(&("method".to_owned(), "GET".to_owned())));
        } else {
            assert!(
                labels.contains(&("status_class".to_owned(), "5xx".to_owned())),
                "{labels:?}"
            );
        }
    }
}

/// Each method (unknown ones as `_OTHER`) and the requests no route matched have their own
/// label sets: the handles kept per method and route never mix them.
#[test]
fn methods_and_unrouted_requests_have_their_own_label_sets() {
    use metrics_util::debugging::DebugValue;
    let snapshot = support::recorded(false, async {
        let plain = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
        for (method, times) in [("GET", 3), ("POST", 2), ("PURGE", 1), ("DELETE", 4)] {
            for _ in 0..times {
                let mut req = request("/anything");
                *req.method_mut() = method.parse().unwrap();
                run(plain.clone(), req).await;
            }
        }
        for _ in 0..5 {
            run(app(), request("/items/1")).await;
        }
    });
    let mut sets: Vec<(String, String, String, usize)> = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "http_server_request_duration_seconds")
        .map(|(key, _, _, value)| {
            let label = |name: &str| {
                key.key()
                    .labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap()
            };
            let DebugValue::Histogram(samples) = value else {
                panic!("not a histogram");
            };
            (
                label("method"),
                label("route"),
                label("status_class"),
                samples.len(),
            )
        })
        .collect();
    sets.sort();
    let expected: Vec<(String, String, String, usize)> = [
        ("DELETE", "", 4),
        ("GET", "", 3),
        ("GET", "/items/{id}", 5),
        ("POST", "", 2),
        ("_OTHER", "", 1),
    ]
    .into_iter()
    .map(|(m, r, n)| (m.to_owned(), r.to_owned(), "2xx".to_owned(), n))
    .collect();
    assert_eq!(sets, expected);
}

#[tokio::test]
async fn a_request_cancelled_before_its_head_is_logged_as_cancelled() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| {
        std::future::pending::<Result<Response<Body>, Infallible>>()
    }));
    // The client goes away (or an outer timeout fires): the response future is dropped.
    let call = svc.oneshot(request("/slow?page=2"));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call)
            .await
            .is_err()
    );
    let e = only_event(&captured);
    assert_eq!(e.level, tracing::Level::WARN);
    assert_eq!(e.field("message"), Some("request cancelled"));
    assert_eq!(e.field("error.type"), Some("cancelled"));
    assert_eq!(e.field("url.path"), Some("/slow"));
    assert_eq!(e.field("http.response.status_code"), None);
    assert!(e.field("request_id").is_some());
}

/// Requests that end without a response (an inner error, a cancelled call) are in the
/// duration histogram too, under `status_class="error"`.
#[test]
fn unanswered_requests_are_in_the_histogram_as_errors() {
    use metrics_util::debugging::DebugValue;
    let snapshot = support::recorded(false, async {
        let failing = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
            Err::<Response<Body>, _>(std::io::Error::other("reset"))
        }));
        assert!(failing.oneshot(request("/x")).await.is_err());
        let hanging = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| {
            std::future::pending::<Result<Response<Body>, Infallible>>()
        }));
        let call = hanging.oneshot(request("/x"));
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err()
        );
    });
    let samples: Vec<_> = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "http_server_request_duration_seconds")
        .map(|(key, _, _, value)| {
            let class = key
                .key()
                .labels()
                .find(|l| l.key() == "status_class")
                .map(|l| l.value().to_owned());
            let DebugValue::Histogram(samples) = value else {
                panic!("not a histogram");
            };
            (class, samples.len())
        })
        .collect();
    assert_eq!(samples, vec![(Some("error".to_owned()), 2)]);
}

#[tokio::test]
async fn unknown_methods_are_other() {
    let (captured, _guard) = Captured::install();
    let svc = RequestLogLayer::new().layer(service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    let req = Request::builder()
        .method("PURGE")
        .uri("/x")
        .body(Body::empty())
        .unwrap();
    run(svc, req).await;
    let e = only_event(&captured);
    assert_eq!(e.field("http.request.method"), Some("_OTHER"));
    assert_eq!(e.field("http.request.method_original"), Some("PURGE"));
}

/// A `MakeWriter` collecting JSON lines in memory.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn with_a_json_subscriber_each_field_is_written_once_and_handler_events_are_grouped() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(lines.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/items/{id}",
            get(|| async {
                tracing::info!(target: "shop", "looking the item up");
                "an item"
            }),
        )
        .layer(RequestLogLayer::new());
    let mut req = request("/items/7");
    req.headers_mut()
        .insert("x-request-id", "req-json-1".parse().unwrap());
    run(app, req).await;

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    // The handler's event runs inside the request span, which names the request.
    let handler = &lines[0];
    assert_eq!(handler["target"], "shop");
    assert_eq!(handler["span"]["request_id"], "req-json-1");
    assert_eq!(handler["span"]["otel.name"], "GET /items/{id}");
    // The completion line carries the request's fields itself, each once: no copy of the span.
    let done = &lines[1];
    assert_eq!(done["target"], "bulwark::log");
    assert_eq!(done["fields"]["request_id"], "req-json-1");
    assert_eq!(done["fields"]["http.route"], "/items/{id}");
    assert_eq!(done["fields"]["http.response.status_code"], 200);
    assert!(
        done.get("span").is_none() && done.get("spans").is_none(),
        "{done}"
    );
    assert_eq!(text.matches("req-json-1").count(), 3, "{text}");
}
