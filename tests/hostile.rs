//! What hostile or broken traffic gets, end to end through a real hyper server on loopback:
//! heads past hyper's limits, bad bytes in keys and ids, 8 MiB and endless request bodies,
//! request bodies cut mid-stream, clients that leave mid-response, and handlers whose response
//! bodies fail. Each gets a clear answer (problem+json from bulwark, or hyper's own status) or
//! a clean close; no key is left in flight, nothing half-read is stored or replayed, and the
//! server keeps answering.

mod support;

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, routing::get, routing::post};
use bulwark::{
    cache::{CacheLayer, CacheStore},
    idempotency::{IdempotencyLayer, IdempotencyStore},
    log::RequestLogLayer,
};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::Full;
use std::net::SocketAddr;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A response body: `left` chunks of `size` bytes, then an error (`fail`), or the end; with
/// the length it announces (`hint`, as a `Content-Length` would), if any.
struct Chunks {
    left: usize,
    size: usize,
    fail: bool,
    hint: Option<u64>,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(
                self.fail
                    .then(|| Err(std::io::Error::other("upstream broke"))),
            );
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.hint.map_or_else(
            http_body::SizeHint::default,
            http_body::SizeHint::with_exact,
        )
    }
}

#[derive(Clone, Default)]
struct Calls {
    pay: Arc<AtomicUsize>,
    big_pay: Arc<AtomicUsize>,
    broken_pay: Arc<AtomicUsize>,
    broken: Arc<AtomicUsize>,
    short: Arc<AtomicUsize>,
    big: Arc<AtomicUsize>,
    cached: Arc<AtomicUsize>,
}

fn cacheable(body: Body) -> Response<Body> {
    Response::builder()
        .header("cache-control", "max-age=60")
        .body(body)
        .unwrap()
}

/// The stack: request log, cache, idempotency (1 MiB request limit), and routes that answer
/// well, with a large body, or with a body that breaks.
async fn server() -> (SocketAddr, Calls) {
    let calls = Calls::default();
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/pay",
            post({
                let c = c.clone();
                move |body: Bytes| async move {
                    c.pay.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::CREATED, format!("charged {} bytes", body.len()))
                }
            }),
        )
        .route(
            "/pay/big",
            post({
                let c = c.clone();
                move || async move {
                    c.big_pay.fetch_add(1, Ordering::SeqCst);
                    Response::builder()
                        .status(StatusCode::CREATED)
                        .body(Body::new(Chunks {
                            left: 32,
                            size: 8 * 1024,
                            fail: false,
                            hint: None,
                        }))
                        .unwrap()
                }
            }),
        )
        .route(
            "/pay/broken",
            post({
                let c = c.clone();
                move || async move {
                    c.broken_pay.fetch_add(1, Ordering::SeqCst);
                    Response::builder()
                        .status(StatusCode::CREATED)
                        .body(Body::new(Chunks {
                            left: 2,
                            size: 100,
                            fail: true,
                            hint: None,
                        }))
                        .unwrap()
                }
            }),
        )
        .route(
            "/broken",
            get({
                let c = c.clone();
                move || async move {
                    c.broken.fetch_add(1, Ordering::SeqCst);
                    cacheable(Body::new(Chunks {
                        left: 2,
                        size: 100,
                        fail: true,
                        hint: None,
                    }))
                }
            }),
        )
        .route(
            "/short",
            get({
                let c = c.clone();
                move || async move {
                    c.short.fetch_add(1, Ordering::SeqCst);
                    cacheable(Body::new(Chunks {
                        left: 1,
                        size: 10,
                        fail: false,
                        hint: Some(100),
                    }))
                }
            }),
        )
        .route(
            "/big",
            get({
                let c = c.clone();
                move || async move {
                    c.big.fetch_add(1, Ordering::SeqCst);
                    cacheable(Body::new(Chunks {
                        left: 128,
                        size: 64 * 1024,
                        fail: false,
                        hint: None,
                    }))
                }
            }),
        )
        .route(
            "/endless",
            get(|| async {
                cacheable(Body::new(Chunks {
                    left: usize::MAX,
                    size: 16 * 1024,
                    fail: false,
                    hint: None,
                }))
            }),
        )
        .route(
            "/cached",
            get({
                let c = c.clone();
                move || async move {
                    c.cached.fetch_add(1, Ordering::SeqCst);
                    cacheable(Body::from("fresh"))
                }
            }),
        )
        .layer(IdempotencyLayer::new(IdempotencyStore::memory()))
        .layer(
            CacheLayer::new(CacheStore::memory(64 * 1024 * 1024))
                .coalesce_wait(Duration::from_millis(300)),
        )
        .layer(RequestLogLayer::new());
    (support::serve_hyper(app).await, calls)
}

fn post_req(path: &str, key: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "shop.test")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

fn get_req(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "shop.test")
        .body(Full::default())
        .unwrap()
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json")
}

/// Writes `head` then `body` (ignoring write errors: the server may stop reading) while reading
/// what comes back, for at most 5 s; returns the status code of the answer, if any arrived.
async fn raw(
    addr: SocketAddr,
    head: Vec<u8>,
    body: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for chunk in body {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

async fn still_up(addr: SocketAddr) {
    let (status, _, body) = support::send(addr, get_req("/cached")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "fresh");
}

#[tokio::test]
async fn heads_past_hypers_limits_get_its_answer_and_the_server_stays_up() {
    let (addr, _) = server().await;
    let mut many = b"GET /cached HTTP/1.1\r\nhost: shop.test\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        raw(addr, many, std::iter::empty()).await,
        Some(431),
        "too many fields"
    );
    let mut long = b"GET /cached HTTP/1.1\r\nhost: shop.test\r\nx-long: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        raw(addr, long, std::iter::empty()).await,
        Some(431),
        "a 1 MiB field"
    );
    let control = b"GET /cached HTTP/1.1\r\nhost: shop.test\r\nx-request-id: a\x01b\r\nidempotency-key: \x7f\r\n\r\n";
    assert_eq!(
        raw(addr, control.to_vec(), std::iter::empty()).await,
        Some(400),
        "control bytes"
    );
    still_up(addr).await;
}

#[tokio::test]
async fn bad_bytes_in_keys_and_ids_get_clear_answers() {
    let (addr, calls) = server().await;
    for key in [&b"\xff\xfe"[..], b"a,b", &[b'k'; 300], b"\"unclosed", b""] {
        let mut req = post_req("/pay", "placeholder", b"{}");
        req.headers_mut().insert(
            "idempotency-key",
            http::HeaderValue::from_bytes(key).unwrap(),
        );
        let (status, headers, _) = support::send(addr, req).await;
        assert_eq!(status, 400, "key {key:?}");
        assert!(is_problem(&headers), "key {key:?}: {headers:?}");
    }
    assert_eq!(
        calls.pay.load(Ordering::SeqCst),
        0,
        "no refused key reached the handler"
    );
    for id in [&b"\xff\xfe"[..], b"a b", &[b'i'; 200], b"id\"quote"] {
        let mut req = get_req("/cached");
        req.headers_mut()
            .insert("x-request-id", http::HeaderValue::from_bytes(id).unwrap());
        req.headers_mut()
            .insert("traceparent", http::HeaderValue::from_bytes(id).unwrap());
        let (status, headers, _) = support::send(addr, req).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers["x-request-id"].len(),
            36,
            "a generated id replaces {id:?}"
        );
    }
}

#[tokio::test]
async fn large_and_endless_request_bodies_are_refused_and_leave_the_key_free() {
    let (addr, calls) = server().await;
    let eight_mib = 8 * 1024 * 1024;
    let head = format!(
        "POST /pay HTTP/1.1\r\nhost: shop.test\r\nidempotency-key: big-1\r\ncontent-length: {eight_mib}\r\n\r\n"
    );
    let body = std::iter::repeat_n(vec![b'x'; 64 * 1024], eight_mib / (64 * 1024));
    assert_eq!(raw(addr, head.into_bytes(), body).await, Some(413));

    let head = "POST /pay HTTP/1.1\r\nhost: shop.test\r\nidempotency-key: big-2\r\ntransfer-encoding: chunked\r\n\r\n";
    // Endless, as far as the server can tell: 64 KiB chunks until it stops reading.
    let chunk = {
        let mut c = format!("{:x}\r\n", 64 * 1024).into_bytes();
        c.extend(std::iter::repeat_n(b'x', 64 * 1024));
        c.extend_from_slice(b"\r\n");
        c
    };
    assert_eq!(
        raw(
            addr,
            head.as_bytes().to_vec(),
            std::iter::repeat_n(chunk, 10_000)
        )
        .await,
        Some(413)
    );

    for key in ["big-1", "big-2"] {
        let (status, headers, body) = support::send(addr, post_req("/pay", key, b"{}")).await;
        assert_eq!(status, 201, "{key}: the refused request claimed nothing");
        assert!(!headers.contains_key("idempotent-replayed"));
        assert_eq!(body, "charged 2 bytes");
    }
    assert_eq!(calls.pay.load(Ordering::SeqCst), 2);
    still_up(addr).await;
}

#[tokio::test]
async fn a_request_body_cut_mid_stream_leaves_the_key_free() {
    let (addr, calls) = server().await;
    let head = "POST /pay HTTP/1.1\r\nhost: shop.test\r\nidempotency-key: cut-1\r\ncontent-length: 1000\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, headers, _) = support::send(addr, post_req("/pay", "cut-1", b"{}")).await;
    assert_eq!(
        status, 201,
        "not 409: the cut request never claimed the key ({headers:?})"
    );
    assert_eq!(calls.pay.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_that_leaves_mid_response_does_not_leave_its_key_in_flight() {
    let (addr, calls) = server().await;
    let head = "POST /pay/big HTTP/1.1\r\nhost: shop.test\r\nidempotency-key: gone-1\r\ncontent-length: 2\r\n\r\n{}";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 201"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    drop(stream);
    // The retry is answered: replayed if the layer kept the answer, run again if it let the key
    // go; never 409 for a key whose client is gone (the lease would hold it for 60 s).
    let mut last = None;
    for _ in 0..40 {
        let (status, headers, body) =
            support::send(addr, post_req("/pay/big", "gone-1", b"{}")).await;
        if status != StatusCode::CONFLICT {
            last = Some((status, headers, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, headers, body) = last.expect("the key is answered within 2 s");
    assert_eq!(status, 201);
    assert_eq!(body.len(), 32 * 8 * 1024, "the whole answer");
    assert_eq!(
        headers.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(calls.big_pay.load(Ordering::SeqCst), 1, "charged once");
}

#[tokio::test]
async fn response_bodies_that_fail_are_neither_cached_nor_replayed() {
    let (addr, calls) = server().await;
    let head = || b"GET /broken HTTP/1.1\r\nhost: shop.test\r\n\r\n".to_vec();
    for _ in 0..2 {
        // The cache reads the whole body before it answers a storable response: a body that
        // breaks is answered 502 (bulwark's problem+json), never stored.
        let status = raw(addr, head(), std::iter::empty()).await;
        assert_eq!(status, Some(502));
    }
    assert_eq!(calls.broken.load(Ordering::SeqCst), 2, "nothing was stored");
    // A body that ends before the length it announced: never stored as if it were whole.
    // (Found by this test: the cache stored the 10 bytes and served them as a whole answer,
    // `Content-Length: 10`, for a minute.)
    for _ in 0..2 {
        let head = b"GET /short HTTP/1.1\r\nhost: shop.test\r\n\r\n".to_vec();
        assert_eq!(raw(addr, head, std::iter::empty()).await, Some(502));
    }
    assert_eq!(
        calls.short.load(Ordering::SeqCst),
        2,
        "a short body was not stored"
    );

    for _ in 0..2 {
        let head = b"POST /pay/broken HTTP/1.1\r\nhost: shop.test\r\nidempotency-key: broken-1\r\ncontent-length: 2\r\n\r\n{}".to_vec();
        let status = raw(addr, head, std::iter::empty()).await;
        // The idempotency layer passes the failure on (what was read, then the error): hyper
        // cuts the connection, before or after the head. Never 409, never a replay.
        assert!(matches!(status, None | Some(201)), "{status:?}");
    }
    assert_eq!(
        calls.broken_pay.load(Ordering::SeqCst),
        2,
        "the key was let go both times"
    );
    still_up(addr).await;
}

#[tokio::test]
async fn large_and_endless_responses_stream_through_the_cache() {
    let (addr, calls) = server().await;
    for _ in 0..2 {
        let (status, headers, body) = support::send(addr, get_req("/big")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body.len(),
            8 * 1024 * 1024,
            "over the cache's limit, streamed whole"
        );
        assert!(headers.contains_key("cache-status"));
    }
    assert_eq!(calls.big.load(Ordering::SeqCst), 2, "not stored");

    // An endless response: a second client asking meanwhile is not held past the coalescing
    // wait, and both can leave.
    let head = b"GET /endless HTTP/1.1\r\nhost: shop.test\r\n\r\n";
    let mut a = TcpStream::connect(addr).await.unwrap();
    a.write_all(head).await.unwrap();
    let mut buf = [0u8; 16];
    a.read_exact(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    let mut b = TcpStream::connect(addr).await.unwrap();
    b.write_all(head).await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), b.read_exact(&mut buf))
        .await
        .expect("the second client is answered")
        .unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    drop((a, b));
    still_up(addr).await;
}

/// A breaker's probe whose client disconnects (hyper drops the call) frees its probe slot: the
/// breaker is never stuck half-open waiting for an answer nobody will read.
#[tokio::test]
async fn a_probe_whose_client_leaves_frees_its_slot() {
    use bulwark::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};

    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let config = CircuitBreakerConfig::builder()
        .count_window(2)
        .minimum_calls(2)
        .wait_in_open(Duration::from_millis(200))
        .half_open_probes(1)
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::new(config);
    let handle = breaker.handle();
    let f = failing.clone();
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let f = f.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if f.load(Ordering::SeqCst) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .layer(breaker);
    let addr = support::serve_hyper(app).await;
    for _ in 0..2 {
        assert_eq!(support::send(addr, get_req("/slow")).await.0, 500);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The probe: sent, then the client leaves before the answer.
    let mut probe = TcpStream::connect(addr).await.unwrap();
    probe
        .write_all(b"GET /slow HTTP/1.1\r\nhost: shop.test\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..100 {
        if handle.state() == CircuitState::HalfOpen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.state(), CircuitState::HalfOpen, "the probe is in");
    drop(probe);
    failing.store(false, Ordering::SeqCst);
    // Once hyper sees the connection close it drops the call, and the slot is free; until
    // then a second caller is refused with 503 (one probe at a time). Bounded: 2 s.
    let mut answered = None;
    for _ in 0..40 {
        let (status, headers, _) = support::send(addr, get_req("/slow")).await;
        if status == 200 {
            answered = Some(status);
            break;
        }
        assert_eq!(status, 503, "{headers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        answered,
        Some(StatusCode::OK),
        "the freed slot lets the next probe through"
    );
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// A forwarding chain of garbage, 64 KiB long, from a trusted proxy: the limiter keys the
/// request by the last trusted hop and answers; a forged address on the left never becomes
/// the key of a request from an untrusted peer.
#[tokio::test]
async fn a_forwarding_chain_of_garbage_is_answered() {
    use bulwark::{
        key::TrustedProxyIp,
        rate_limit::{Quota, RateLimitLayer},
    };
    use std::num::NonZeroU32;

    let limiter = RateLimitLayer::new(Quota::per_minute(NonZeroU32::new(3).unwrap()))
        .key(TrustedProxyIp::try_new(["127.0.0.0/8"]).unwrap());
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(limiter);
    let addr = support::serve_hyper(app).await;
    let garbage: String = (0..8_000)
        .map(|i| format!("{},", ["unknown", "_x", "::::", "1.2.3"][i % 4]))
        .collect();
    let mut statuses = Vec::new();
    for i in 0..5 {
        // Each request claims another client on the left; they all come from one trusted hop
        // after garbage, so they share one key.
        let chain = format!("203.0.113.{i}, {garbage} 127.0.0.1");
        let req = Request::get("/")
            .header("x-forwarded-for", chain)
            .body(Full::default())
            .unwrap();
        let (status, headers, _) = support::send(addr, req).await;
        if status == 429 {
            assert!(is_problem(&headers));
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "one key for all: the forged clients are ignored"
    );
}

/// The fallback's last good answer survives an upstream whose body breaks: the broken answer is
/// never kept, the client gets the kept one (marked), and the route keeps answering. (A body of
/// unknown length is never kept, so it streams through as it comes, breakage included.)
#[tokio::test]
async fn a_broken_body_behind_the_last_good_fallback_is_not_kept() {
    use bulwark::fallback::{FallbackLayer, LastGood};

    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let b = broken.clone();
    let store = LastGood::new(100).unwrap();
    let app = Router::new()
        .route(
            "/news",
            get(move || {
                let b = b.clone();
                async move {
                    if b.load(Ordering::SeqCst) {
                        // It announces 100 bytes, sends 10, then breaks (an upstream that went
                        // away mid-answer).
                        Response::new(Body::new(Chunks {
                            left: 1,
                            size: 10,
                            fail: true,
                            hint: Some(100),
                        }))
                    } else {
                        Response::new(Body::from("today's news"))
                    }
                }
            }),
        )
        .layer(FallbackLayer::last_good(store.clone()));
    let addr = support::serve_hyper(app).await;
    let (status, _, body) = support::send(addr, get_req("/news")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"today's news"[..]));
    assert_eq!(store.entry_count(), 1, "kept");
    broken.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let (status, headers, body) = support::send(addr, get_req("/news")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body, "today's news",
            "the kept answer, never the broken one"
        );
        assert!(headers.contains_key("bulwark-fallback"), "{headers:?}");
    }
}

/// The flag gate reads its context from request headers a client controls: bytes that are not
/// UTF-8, control-free but absurd values, 64 KiB values. Each request gets the gate's answer
/// (through, or the configured problem+json), never a panic.
#[tokio::test]
async fn hostile_context_headers_get_the_gates_answer() {
    use bulwark::flag::{FeatureFlagLayer, FlagDefinition, Flags, HeaderContext};
    use http::HeaderName;

    let flags = Flags::new().with(
        "beta",
        FlagDefinition::from_json(
            r#"{"enabled": true, "default": false,
                "rules": [{"attribute": "tier", "in": ["gold"]}],
                "rollout": {"percentage": 50}}"#,
        )
        .unwrap(),
    );
    let gate = FeatureFlagLayer::new(flags, "beta")
        .context(HeaderContext::default().header(HeaderName::from_static("x-tier"), "tier"));
    let app = Router::new()
        .route("/beta", get(|| async { "beta" }))
        .layer(gate);
    let addr = support::serve_hyper(app).await;
    let long = vec![b'u'; 64 * 1024];
    let cases: [(&[u8], &[u8]); 4] = [
        (b"\xff\xfe\xfd", b"gold"),
        (b"u-1", b"\xc3\x28"),
        (&long, &long),
        (b"\"quoted, with=signs\"", b"gold,silver"),
    ];
    for (user, tier) in cases {
        let req = Request::get("/beta")
            .header("x-user-id", http::HeaderValue::from_bytes(user).unwrap())
            .header("x-tier", http::HeaderValue::from_bytes(tier).unwrap())
            .body(Full::default())
            .unwrap();
        let (status, headers, body) = support::send(addr, req).await;
        match status.as_u16() {
            200 => assert_eq!(body, "beta"),
            404 => assert!(is_problem(&headers), "{headers:?}"),
            other => panic!("status {other}"),
        }
    }
    let req = Request::get("/beta")
        .header("x-tier", "gold")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        support::send(addr, req).await.0,
        200,
        "a rule still matches"
    );
}
