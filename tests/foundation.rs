//! The shared vocabulary, end to end: rejection responses, the override hook, body limits with
//! axum's and hyper's bodies, classification of real tower timeouts, request ids and the log
//! event, and the Redis test harness.

mod support;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::body::Body;
use bulwark::{
    RateLimitInfo, Rejection, ResponseForRejection,
    body::{ResponseBody, to_bytes_limited},
    classify::{Classify, Outcome, ServerErrorsAsFailures, is_timeout},
    key::{KeyExtractor, PeerIp},
    log::{RequestId, RequestLogLayer},
};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt, service_fn};

async fn problem(res: Response<ResponseBody<Body>>) -> (http::response::Parts, Value) {
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn every_rejection_has_its_status_headers_and_problem_body() {
    let secs = Duration::from_millis(2_500);
    let limit = RateLimitInfo::new(
        "login",
        5,
        Duration::from_secs(60),
        0,
        Duration::from_secs(12),
    );
    let cases: Vec<(Rejection, u16, bool)> = vec![
        (Rejection::rate_limited(secs, Some(limit)), 429, true),
        (Rejection::circuit_open(secs), 503, true),
        (
            Rejection::feature_disabled("beta", StatusCode::NOT_FOUND),
            404,
            false,
        ),
        (
            Rejection::feature_disabled("beta", StatusCode::FORBIDDEN),
            403,
            false,
        ),
        (Rejection::IdempotencyKeyMissing, 400, false),
        (Rejection::IdempotencyKeyInvalid, 400, false),
        (Rejection::idempotency_in_flight(secs), 409, true),
        (Rejection::IdempotencyMismatch, 422, false),
        (Rejection::IdempotencyNotReplayable, 409, false),
        (Rejection::payload_too_large(1024), 413, false),
        (Rejection::BodyReadFailed, 400, false),
        (Rejection::backend_unavailable(secs), 503, true),
    ];
    for (rejection, status, has_retry_after) in cases {
        let kind = rejection.kind();
        let (parts, json) = problem(rejection.clone().into_response::<Body>()).await;
        assert_eq!(parts.status.as_u16(), status, "{kind}");
        assert_eq!(
            parts.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(json["status"], status, "{kind}");
        assert!(
            json["type"].as_str().unwrap().starts_with("https://"),
            "{kind}"
        );
        assert!(!json["title"].as_str().unwrap().is_empty(), "{kind}");
        assert!(!json["detail"].as_str().unwrap().is_empty(), "{kind}");
        assert_eq!(
            parts.extensions.get::<Rejection>(),
            Some(&rejection),
            "{kind}"
        );
        if has_retry_after {
            assert_eq!(
                parts.headers[header::RETRY_AFTER],
                "3",
                "{kind}: 2.5 s rounds up"
            );
            assert_eq!(json["retry_after_seconds"], 3, "{kind}");
        } else {
            assert!(!parts.headers.contains_key(header::RETRY_AFTER), "{kind}");
        }
    }
}

#[tokio::test]
async fn rate_limited_carries_the_ietf_headers() {
    let limit = RateLimitInfo::new(
        "login",
        5,
        Duration::from_secs(60),
        0,
        Duration::from_millis(11_200),
    );
    let res =
        Rejection::rate_limited(Duration::from_millis(200), Some(limit)).into_response::<Body>();
    assert_eq!(res.headers()["retry-after"], "1", "never 0");
    assert_eq!(res.headers()["ratelimit-policy"], r#""login";q=5;w=60"#);
    assert_eq!(res.headers()["ratelimit"], r#""login";r=0;t=12"#);
    let (_, json) = problem(res).await;
    assert_eq!(json["policy"], "login");
    assert_eq!(json["quota"], 5);
}

#[tokio::test]
async fn payload_too_large_names_the_limit_and_disabled_features_stay_anonymous() {
    let (_, json) = problem(Rejection::payload_too_large(1024).into_response::<Body>()).await;
    assert_eq!(json["max_body_bytes"], 1024);
    let (_, json) = problem(
        Rejection::feature_disabled("secret-project", StatusCode::NOT_FOUND)
            .into_response::<Body>(),
    )
    .await;
    assert!(!json.to_string().contains("secret-project"));
}

#[tokio::test]
async fn an_override_keeps_protocol_headers_and_the_extension() {
    let hook = |r: &Rejection| {
        let mut res = Response::new(Bytes::from_static(b"nope"));
        *res.status_mut() = r.status();
        res
    };
    let rejection = Rejection::circuit_open(Duration::from_secs(7));
    assert_eq!(hook.response_for(&rejection).status(), 503);
    let res = rejection.clone().into_response_with::<Body, _>(&hook);
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()["retry-after"],
        "7",
        "added although the hook left it out"
    );
    assert_eq!(res.extensions().get::<Rejection>(), Some(&rejection));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "nope");

    // A hook that sets its own Retry-After keeps it.
    let own = |r: &Rejection| {
        let mut res = r.default_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, "60".parse().unwrap());
        res
    };
    let res = rejection.into_response_with::<Body, _>(&own);
    assert_eq!(res.headers()["retry-after"], "60");
}

// ---------------------------------------------------------------------------------------------
// Body limits

#[tokio::test]
async fn body_limit_with_axum_bodies() {
    let body = |n: usize| Body::from(vec![b'x'; n]);
    assert_eq!(to_bytes_limited(body(99), 100).await.unwrap().len(), 99);
    assert_eq!(to_bytes_limited(body(100), 100).await.unwrap().len(), 100);
    let err = to_bytes_limited(body(101), 100).await.unwrap_err();
    assert!(err.is_too_large());
    assert_eq!(err.rejection().status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A streamed body of unknown length is cut off while reading.
    let chunks = futures_chunks(vec![vec![b'x'; 60], vec![b'x'; 60]]);
    assert!(
        to_bytes_limited(chunks, 100)
            .await
            .unwrap_err()
            .is_too_large()
    );
}

/// An axum body streamed in chunks, with no length known in advance.
fn futures_chunks(chunks: Vec<Vec<u8>>) -> Body {
    struct Chunks(std::vec::IntoIter<Vec<u8>>);
    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(
                self.0
                    .next()
                    .map(|c| Ok(http_body::Frame::data(Bytes::from(c)))),
            )
        }
    }
    Body::new(Chunks(chunks.into_iter()))
}

/// A hyper server whose handler buffers with a limit of 100 bytes and answers the length, or
/// the rejection's status.
async fn limited_hyper_server() -> SocketAddr {
    let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
        let res: Response<ResponseBody<Full<Bytes>>> =
            match to_bytes_limited(req.into_body(), 100).await {
                Ok(b) => Response::new(ResponseBody::full(b.len().to_string())),
                Err(e) => e.rejection().into_response(),
            };
        Ok::<_, Infallible>(res)
    });
    support::serve_hyper(svc).await
}

#[tokio::test]
async fn body_limit_with_hyper_incoming() {
    let addr = limited_hyper_server().await;
    for (len, status, body) in [(99, 200, "99"), (100, 200, "100"), (101, 413, "")] {
        let req = Request::post(format!("http://{addr}/"))
            .body(Full::new(Bytes::from(vec![b'x'; len])))
            .unwrap();
        let (got, headers, got_body) = support::send(addr, req).await;
        assert_eq!(got.as_u16(), status, "{len} bytes");
        if status == 200 {
            assert_eq!(got_body, body);
        } else {
            assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Classification

#[tokio::test(start_paused = true)]
async fn a_real_tower_timeout_is_a_failure_and_a_timeout() {
    let slow = service_fn(|_: Request<Body>| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(slow);
    let err = svc.oneshot(Request::new(Body::empty())).await.unwrap_err();
    assert!(is_timeout(&*err));
    let c = ServerErrorsAsFailures::new();
    assert_eq!(
        Classify::<Response<Body>, _>::classify(&c, Err(&err)),
        Outcome::Failure
    );
    let res = Response::builder().status(503).body(()).unwrap();
    assert_eq!(Classify::<_, ()>::classify(&c, Ok(&res)), Outcome::Failure);
    let res = Response::builder().status(200).body(()).unwrap();
    assert_eq!(Classify::<_, ()>::classify(&c, Ok(&res)), Outcome::Success);
}

// ---------------------------------------------------------------------------------------------
// Keys through axum

#[tokio::test]
async fn peer_ip_reads_axum_connect_info() {
    let mut req = Request::new(());
    req.extensions_mut().insert(axum::extract::ConnectInfo(
        "192.0.2.44:5555".parse::<SocketAddr>().unwrap(),
    ));
    assert_eq!(
        PeerIp::new().extract(&req),
        Some("192.0.2.44".parse().unwrap())
    );
}

// ---------------------------------------------------------------------------------------------
// Request ids and the log event

fn echo_id() -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(|req: Request<Body>| async move {
        let ext = req.extensions().get::<RequestId>().unwrap().to_string();
        let header = req.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(ext, header, "extension and header agree");
        Ok::<_, Infallible>(Response::new(Body::from(ext)))
    })
}

async fn id_round_trip(incoming: Option<&str>) -> (String, String) {
    let svc = RequestLogLayer::new().layer_into(echo_id());
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    if let Some(id) = incoming {
        req.headers_mut()
            .insert("x-request-id", id.parse().unwrap());
    }
    let res = svc.oneshot(req).await.unwrap();
    let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (seen, echoed)
}

trait LayerInto<S> {
    type Out;
    fn layer_into(self, s: S) -> Self::Out;
}
impl<L: tower::Layer<S>, S> LayerInto<S> for L {
    type Out = L::Service;
    fn layer_into(self, s: S) -> L::Service {
        self.layer(s)
    }
}

#[tokio::test]
async fn request_ids_are_kept_generated_and_replaced() {
    let (seen, echoed) = id_round_trip(Some("order-42.retry:1")).await;
    assert_eq!(
        (seen.as_str(), echoed.as_str()),
        ("order-42.retry:1", "order-42.retry:1")
    );

    let (seen, echoed) = id_round_trip(None).await;
    assert_eq!(seen, echoed);
    assert_eq!(seen.len(), 36, "a UUID");

    let long = "a".repeat(129);
    for bad in ["has space", "quote\"d", long.as_str()] {
        let (seen, echoed) = id_round_trip(Some(bad)).await;
        assert_ne!(seen, bad);
        assert_eq!(seen, echoed);
        assert_eq!(seen.len(), 36);
    }
}

#[tokio::test]
async fn the_completion_event_has_otel_fields_and_bulwark_markers() {
    let (captured, _guard) = support::Captured::install();
    let svc = RequestLogLayer::new().layer_into(service_fn(|req: Request<Body>| async move {
        let res = match req.uri().path() {
            "/ok" => Response::new(ResponseBody::new(Body::from("fine"))),
            "/limited" => Rejection::rate_limited(Duration::from_secs(1), None).into_response(),
            _ => {
                let mut res = Response::new(ResponseBody::new(Body::empty()));
                *res.status_mut() = StatusCode::BAD_GATEWAY;
                res
            }
        };
        Ok::<_, Infallible>(res)
    }));
    for path in ["/ok", "/limited", "/broken"] {
        let mut req = Request::get(path)
            .header("user-agent", "probe/1")
            .header("x-request-id", format!("id{}", path.replace('/', "-")))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert("198.51.100.7:4000".parse::<SocketAddr>().unwrap());
        svc.clone().oneshot(req).await.unwrap();
    }
    let events = captured.with_target("bulwark::log");
    assert_eq!(events.len(), 3, "one event per request: {events:?}");
    let ok = &events[0];
    assert_eq!(ok.level, tracing::Level::INFO);
    assert_eq!(ok.field("http.request.method"), Some("GET"));
    assert_eq!(ok.field("url.path"), Some("/ok"));
    assert_eq!(ok.field("http.response.status_code"), Some("200"));
    assert_eq!(ok.field("client.address"), Some("198.51.100.7"));
    assert_eq!(ok.field("user_agent.original"), Some("probe/1"));
    assert_eq!(ok.field("request_id"), Some("id-ok"));
    assert!(ok.field("duration_ms").is_some());
    assert_eq!(ok.field("bulwark.rejection"), None);

    let limited = &events[1];
    assert_eq!(limited.level, tracing::Level::WARN);
    assert_eq!(limited.field("bulwark.rejection"), Some("rate_limited"));
    assert_eq!(limited.field("http.response.status_code"), Some("429"));

    assert_eq!(events[2].level, tracing::Level::ERROR);
    assert_eq!(events[2].field("http.response.status_code"), Some("502"));
}

#[tokio::test]
async fn inner_errors_are_logged_with_their_message() {
    let (captured, _guard) = support::Captured::install();
    let svc = RequestLogLayer::new().layer_into(service_fn(|_: Request<Body>| async {
        Err::<Response<Body>, _>(std::io::Error::other("upstream reset"))
    }));
    let err = svc.oneshot(Request::new(Body::empty())).await.unwrap_err();
    assert_eq!(err.to_string(), "upstream reset");
    let events = captured.with_target("bulwark::log");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level, tracing::Level::ERROR);
    assert_eq!(events[0].field("error.type"), Some("_OTHER"));
    assert_eq!(events[0].field("error.message"), Some("upstream reset"));
}

// ---------------------------------------------------------------------------------------------
// Redis harness

#[tokio::test]
async fn the_redis_harness_starts_and_stops_a_real_server() {
    let Some(mut server) = support::RedisServer::start() else {
        return;
    };
    let redis = bulwark::redis::Redis::open(&server.url())
        .unwrap()
        .timeout(Duration::from_millis(300));
    redis.ping().await.expect("a running server answers");
    server.stop();
    assert!(redis.ping().await.is_err(), "a stopped server does not");
    server.restart();
    let mut ok = false;
    for _ in 0..50 {
        if redis.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the connection recovers when the server is back");
}
