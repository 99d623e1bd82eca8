//! The cache layer through `oneshot`, in virtual time: both modes, each directive, `Vary`,
//! revalidation, every never-store rule, coalescing, stale serving, the byte bound, purge and
//! invalidation.

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bulwark::{
    Rejection,
    cache::{CacheLayer, CacheOutcome, CacheStatus, CacheStore, MemoryStore},
    fallback::FallbackReason,
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt, service_fn};

type Res = Response<Full<Bytes>>;

/// What the origin saw: how many calls, and the headers of the last request.
#[derive(Clone, Default)]
struct Seen {
    calls: Arc<AtomicUsize>,
    last: Arc<Mutex<HeaderMap>>,
}

impl Seen {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn last(&self, name: &str) -> Option<String> {
        self.last
            .lock()
            .unwrap()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// An origin answering with `f(request, call number)` after `delay`.
fn origin<F>(
    seen: &Seen,
    delay: Duration,
    f: F,
) -> impl Service<Request<()>, Response = Res, Error = Infallible, Future: Send> + Clone + Send + 'static
where
    F: Fn(&Request<()>, usize) -> Res + Send + Sync + 'static,
{
    let seen = seen.clone();
    let f = Arc::new(f);
    service_fn(move |req: Request<()>| {
        let n = seen.calls.fetch_add(1, Ordering::SeqCst);
        *seen.last.lock().unwrap() = req.headers().clone();
        let res = f(&req, n);
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(res)
        }
    })
}

fn res(status: u16, headers: &[(&str, &str)], body: String) -> Res {
    let mut b = Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn get(path: &str) -> Request<()> {
    Request::get(path)
        .header("host", "shop.test")
        .body(())
        .unwrap()
}

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::get(path).header("host", "shop.test");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    cache: CacheStatus,
}

impl Answer {
    fn cs(&self) -> &str {
        self.headers["cache-status"].to_str().unwrap()
    }
    fn age(&self) -> Option<u64> {
        self.headers
            .get("age")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

async fn send<S>(svc: &S, req: Request<()>) -> Answer
where
    S: Service<
            Request<()>,
            Response = Response<bulwark::body::ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let cache = *res
        .extensions()
        .get::<CacheStatus>()
        .expect("every answer carries a CacheStatus");
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        cache,
    }
}

fn memory() -> CacheStore {
    CacheStore::memory(16 * 1024 * 1024)
}

fn numbered(
    headers: &'static [(&'static str, &'static str)],
) -> impl Fn(&Request<()>, usize) -> Res + Send + Sync + 'static {
    move |_, n| res(200, headers, format!("v{n}"))
}

// --- forced TTL -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn forced_ttl_miss_hit_expiry() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(10))
        .layer(origin(&seen, Duration::ZERO, numbered(&[])));
    let a = send(&svc, get("/products")).await;
    assert_eq!(a.cs(), "bulwark; fwd=miss; fwd-status=200; stored");
    assert_eq!(a.body, "v0");
    assert!(a.age().is_none());
    tokio::time::advance(Duration::from_secs(4)).await;
    let b = send(&svc, get("/products")).await;
    assert_eq!(b.cs(), "bulwark; hit; ttl=6");
    assert_eq!(b.age(), Some(4));
    assert_eq!(b.body, "v0");
    assert_eq!(seen.calls(), 1);
    tokio::time::advance(Duration::from_secs(7)).await;
    let c = send(&svc, get("/products")).await;
    assert_eq!(c.body, "v1");
    assert_eq!(seen.calls(), 2);
    // The query is part of the key.
    let d = send(&svc, get("/products?page=2")).await;
    assert_eq!(d.cache.outcome, CacheOutcome::Miss);
}

#[tokio::test(start_paused = true)]
async fn a_hit_carries_none_of_the_requests_extensions() {
    // A hit answers with the request's emptied extension map (its allocation reused): what the
    // request carried must not leak into the answer, and the answer still says it is a hit.
    #[derive(Clone)]
    struct Marker;
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(10))
        .layer(origin(&seen, Duration::ZERO, numbered(&[])));
    let marked = || {
        let mut req = get("/products");
        req.extensions_mut().insert(Marker);
        req.extensions_mut().insert(7u32);
        req
    };
    let miss = svc.clone().oneshot(marked()).await.unwrap();
    assert!(miss.extensions().get::<Marker>().is_none());
    let hit = svc.clone().oneshot(marked()).await.unwrap();
    assert_eq!(seen.calls(), 1);
    assert_eq!(
        hit.extensions().get::<CacheStatus>().map(|s| s.outcome),
        Some(CacheOutcome::Hit)
    );
    assert!(hit.extensions().get::<Marker>().is_none());
    assert!(hit.extensions().get::<u32>().is_none());
    assert_eq!(hit.extensions().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn hits_of_one_entry_follow_the_clock() {
    // Hits within a second reuse their headers; later ones carry the new Age and ttl, and a
    // second cache sharing the store writes its own name.
    let seen = Seen::default();
    let store = memory();
    let svc = CacheLayer::new(store.clone())
        .ttl(Duration::from_secs(10))
        .layer(origin(&seen, Duration::ZERO, numbered(&[])));
    let other = CacheLayer::new(store)
        .ttl(Duration::from_secs(10))
        .name("edge")
        .unwrap()
        .layer(origin(&seen, Duration::ZERO, numbered(&[])));
    send(&svc, get("/p")).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..2 {
        let a = send(&svc, get("/p")).await;
        assert_eq!((a.cs(), a.age()), ("bulwark; hit; ttl=9", Some(1)));
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    let b = send(&svc, get("/p")).await;
    assert_eq!((b.cs(), b.age()), ("bulwark; hit; ttl=7", Some(3)));
    let c = send(&other, get("/p")).await;
    // (Its own clock started at another instant: only the name is certain.)
    assert!(c.cs().starts_with("edge; hit; ttl="), "{}", c.cs());
    let head = send(
        &svc,
        Request::head("/p")
            .header("host", "shop.test")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!((head.cs(), head.age()), ("bulwark; hit; ttl=7", Some(3)));
    assert!(head.body.is_empty());
    assert_eq!(seen.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn forced_ttl_stores_only_2xx_and_ignores_client_no_cache() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(10))
        .layer(origin(&seen, Duration::ZERO, |req, n| {
            let status = if req.uri().path() == "/missing" {
                404
            } else {
                200
            };
            res(status, &[], format!("v{n}"))
        }));
    send(&svc, get("/missing")).await;
    send(&svc, get("/missing")).await;
    assert_eq!(seen.calls(), 2);
    send(&svc, get("/p")).await;
    let hit = send(&svc, get_with("/p", &[("cache-control", "no-cache")])).await;
    assert_eq!(hit.cache.outcome, CacheOutcome::Hit);
}

// --- policy mode: directives -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn max_age_and_s_maxage() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |req, n| {
        match req.uri().path() {
            "/max" => res(200, &[("cache-control", "max-age=5")], format!("v{n}")),
            _ => res(
                200,
                &[("cache-control", "max-age=1, s-maxage=20")],
                format!("v{n}"),
            ),
        }
    }));
    send(&svc, get("/max")).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(send(&svc, get("/max")).await.cs(), "bulwark; hit; ttl=2");
    tokio::time::advance(Duration::from_secs(3)).await;
    // Stale with no validator and no stale window: nothing left to reuse.
    assert_eq!(
        send(&svc, get("/max")).await.cache.outcome,
        CacheOutcome::Miss
    );
    assert_eq!(seen.calls(), 2);

    send(&svc, get("/shared")).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    let b = send(&svc, get("/shared")).await;
    assert_eq!(
        b.cache.outcome,
        CacheOutcome::Hit,
        "s-maxage wins for a shared cache"
    );
}

#[tokio::test(start_paused = true)]
async fn age_from_upstream_counts() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |_, n| {
        res(
            200,
            &[("cache-control", "max-age=10"), ("age", "8")],
            format!("v{n}"),
        )
    }));
    send(&svc, get("/a")).await;
    let hit = send(&svc, get("/a")).await;
    assert_eq!(hit.age(), Some(8));
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        send(&svc, get("/a")).await.cache.outcome,
        CacheOutcome::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn expires_header() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |_, n| {
        let now = std::time::SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(60));
        res(
            200,
            &[("date", &date), ("expires", &expires)],
            format!("v{n}"),
        )
    }));
    send(&svc, get("/e")).await;
    assert_eq!(send(&svc, get("/e")).await.cache.outcome, CacheOutcome::Hit);
    // An invalid Expires means already expired.
    let seen2 = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen2, Duration::ZERO, |_, n| {
        res(200, &[("expires", "0"), ("etag", "\"x\"")], format!("v{n}"))
    }));
    send(&svc, get("/e")).await;
    assert_ne!(send(&svc, get("/e")).await.cache.outcome, CacheOutcome::Hit);
}

#[tokio::test(start_paused = true)]
async fn no_heuristic_freshness_by_default() {
    let seen = Seen::default();
    let lm = &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")];
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, numbered(lm)));
    send(&svc, get("/h")).await;
    let b = send(&svc, get("/h")).await;
    assert_ne!(b.cache.outcome, CacheOutcome::Hit);
    // Turned on, Last-Modified gives a lifetime.
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .heuristic_freshness(0.1)
        .unwrap()
        .layer(origin(&seen, Duration::ZERO, numbered(lm)));
    send(&svc, get("/h")).await;
    assert_eq!(send(&svc, get("/h")).await.cache.outcome, CacheOutcome::Hit);
    assert!(CacheLayer::new(memory()).heuristic_freshness(2.0).is_err());
}

#[tokio::test(start_paused = true)]
async fn no_cache_and_must_revalidate_always_revalidate() {
    for cc in ["no-cache", "max-age=0, must-revalidate"] {
        let seen = Seen::default();
        let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, move |req, _| {
            if req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"e1\"")
            {
                res(
                    304,
                    &[("etag", "\"e1\""), ("cache-control", cc)],
                    String::new(),
                )
            } else {
                res(
                    200,
                    &[("etag", "\"e1\""), ("cache-control", cc)],
                    "body".into(),
                )
            }
        }));
        let a = send(&svc, get("/r")).await;
        assert!(a.cache.stored, "{cc}: stored for revalidation");
        let b = send(&svc, get("/r")).await;
        assert_eq!(seen.calls(), 2, "{cc}");
        assert_eq!(seen.last("if-none-match").as_deref(), Some("\"e1\""));
        assert_eq!(b.status, 200);
        assert_eq!(b.body, "body");
        assert_eq!(b.cs(), "bulwark; fwd=stale; fwd-status=304; stored");
    }
}

// --- revalidation and conditional requests ---------------------------------------------------

#[tokio::test(start_paused = true)]
async fn stale_entry_revalidates_with_304() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |req, _| {
        if req.headers().get("if-modified-since").is_some() {
            res(
                304,
                &[("cache-control", "max-age=10"), ("x-new", "1")],
                String::new(),
            )
        } else {
            res(
                200,
                &[
                    ("cache-control", "max-age=10"),
                    ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
                    ("content-type", "text/plain"),
                ],
                "original".into(),
            )
        }
    }));
    send(&svc, get("/v")).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let b = send(&svc, get("/v")).await;
    assert_eq!(
        seen.last("if-modified-since").as_deref(),
        Some("Mon, 01 Jan 2024 00:00:00 GMT")
    );
    assert_eq!((b.status, &b.body[..]), (StatusCode::OK, &b"original"[..]));
    assert_eq!(
        b.headers["x-new"], "1",
        "304 headers update the stored ones"
    );
    assert_eq!(b.headers["content-type"], "text/plain");
    // Fresh again for another 10 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    let c = send(&svc, get("/v")).await;
    assert_eq!(c.cache.outcome, CacheOutcome::Hit);
    assert_eq!(seen.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_entry_replaced_by_200() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |_, n| {
        res(
            200,
            &[("cache-control", "max-age=1"), ("etag", "\"a\"")],
            format!("v{n}"),
        )
    }));
    send(&svc, get("/x")).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let b = send(&svc, get("/x")).await;
    assert_eq!(b.body, "v1");
    assert_eq!(b.cs(), "bulwark; fwd=stale; fwd-status=200; stored");
    assert_eq!(send(&svc, get("/x")).await.body, "v1");
}

#[tokio::test(start_paused = true)]
async fn client_conditionals_on_hits() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |_, _| {
        res(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "W/\"t1\""),
                ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ],
            "payload".into(),
        )
    }));
    send(&svc, get("/c")).await;
    let inm = send(&svc, get_with("/c", &[("if-none-match", "\"t1\"")])).await;
    assert_eq!(inm.status, StatusCode::NOT_MODIFIED);
    assert!(inm.body.is_empty());
    assert_eq!(inm.headers["etag"], "W/\"t1\"");
    let other = send(&svc, get_with("/c", &[("if-none-match", "\"t2\"")])).await;
    assert_eq!(other.status, StatusCode::OK);
    let ims = send(
        &svc,
        get_with(
            "/c",
            &[("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")],
        ),
    )
    .await;
    assert_eq!(ims.status, StatusCode::NOT_MODIFIED);
    assert_eq!(seen.calls(), 1);
}

/// An origin that honours `If-None-Match` for `"v1"`.
fn etag_origin(
    seen: &Seen,
) -> impl Service<Request<()>, Response = Res, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    origin(seen, Duration::from_millis(100), |req, _| {
        let headers = [("cache-control", "max-age=60"), ("etag", "\"v1\"")];
        let matched = req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        full_or_304(matched, &headers, "payload")
    })
}

/// `304 Not Modified` with `headers` if the origin found the conditional request `matched`,
/// else `200` with `headers` and `body`.
fn full_or_304(matched: bool, headers: &[(&str, &str)], body: &str) -> Res {
    if matched {
        res(304, headers, String::new())
    } else {
        res(200, headers, body.into())
    }
}

/// Clients revalidating a URL the cache does not hold (purged, or expired past retention):
/// their conditionals are not forwarded, so the full answer is stored once and every client
/// gets its `304` from the cache. Forwarded, they made the origin answer `304`, which cannot be
/// stored, and every coalesced waiter then called the origin itself.
#[tokio::test(start_paused = true)]
async fn conditional_misses_fill_the_cache_and_are_answered_304() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(etag_origin(&seen));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            send(&svc, get_with("/x", &[("if-none-match", "\"v1\"")])).await
        }));
    }
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{}", a.cs());
        assert!(a.body.is_empty());
        assert_eq!(a.headers["etag"], "\"v1\"");
        assert!(!a.headers.contains_key("content-length"));
    }
    assert_eq!(seen.calls(), 1);
    assert_eq!(
        seen.last("if-none-match"),
        None,
        "the client's validator stays here"
    );
    // Stored: a later conditional request is a hit answered 304, a plain one gets the body.
    let again = send(&svc, get_with("/x", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!(
        (again.status, again.cache.outcome),
        (StatusCode::NOT_MODIFIED, CacheOutcome::Hit)
    );
    let plain = send(&svc, get("/x")).await;
    assert_eq!(
        (plain.status, &plain.body[..]),
        (StatusCode::OK, &b"payload"[..])
    );
    // A validator that does not match gets the full answer.
    let other = send(&svc, get_with("/x", &[("if-none-match", "\"v0\"")])).await;
    assert_eq!(
        (other.status, &other.body[..]),
        (StatusCode::OK, &b"payload"[..])
    );
    assert_eq!(seen.calls(), 1);
}

/// A stale entry revalidated by a client's conditional request is refreshed with the cache's
/// own validator (the origin's `304` refreshes it), and the client gets its `304` from the cache.
#[tokio::test(start_paused = true)]
async fn conditional_requests_refresh_stale_entries() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(etag_origin(&seen));
    send(&svc, get("/x")).await;
    tokio::time::advance(Duration::from_secs(61)).await;
    let a = send(&svc, get_with("/x", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{}", a.cs());
    assert_eq!(a.cs(), "bulwark; fwd=stale; fwd-status=304; stored");
    assert_eq!(seen.last("if-none-match").as_deref(), Some("\"v1\""));
    // Refreshed: fresh again, no further call.
    let b = send(&svc, get("/x")).await;
    assert_eq!(
        (b.cache.outcome, &b.body[..]),
        (CacheOutcome::Hit, &b"payload"[..])
    );
    assert_eq!(seen.calls(), 2);
}

/// An origin in the middle of a deploy: the first answer comes from an old server, without an
/// `ETag`; every later one from a new server that sends `"v2"` for the same bytes and honours
/// `If-Modified-Since`.
fn mid_deploy(req: &Request<()>, n: usize) -> Res {
    let mut headers = vec![
        ("cache-control", "max-age=10"),
        ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ];
    if n > 0 {
        headers.push(("etag", "\"v2\""));
    }
    let matched = req.headers().contains_key("if-modified-since");
    full_or_304(matched, &headers, "same bytes")
}

/// The stale entry is revalidated with `If-Modified-Since`, and the origin's `304` names a
/// representation the cache does not hold (its `ETag`). It refreshes nothing (RFC 9111, section
/// 4.3.4), and a client that asked without conditionals gets the whole stored answer, never a
/// bare `304`; the entry is dropped, so the next request fetches and stores the answer whole.
#[tokio::test(start_paused = true)]
async fn a_304_for_another_representation_is_not_passed_on() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, mid_deploy));
    send(&svc, get("/d")).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let a = send(&svc, get("/d")).await;
    assert!(seen.last("if-modified-since").is_some());
    assert_eq!(
        (a.status, &a.body[..]),
        (StatusCode::OK, &b"same bytes"[..])
    );
    assert!(
        !a.headers.contains_key("etag"),
        "the stored answer, untouched"
    );
    assert_eq!(
        a.cs(),
        "bulwark; fwd=stale; fwd-status=304; detail=validator-mismatch"
    );
    // Dropped: fetched whole (no conditionals) and stored with the origin's current validator.
    let b = send(&svc, get("/d")).await;
    assert_eq!(seen.calls(), 3);
    assert_eq!(seen.last("if-modified-since"), None);
    assert_eq!(
        (b.cache.outcome, b.cache.stored),
        (CacheOutcome::Miss, true)
    );
    assert_eq!(b.headers["etag"], "\"v2\"");
    assert_eq!(send(&svc, get("/d")).await.cache.outcome, CacheOutcome::Hit);
}

/// The same `304`, for a client that holds the representation it names: it is the client's.
#[tokio::test(start_paused = true)]
async fn a_304_for_the_clients_representation_is_passed_on() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, mid_deploy));
    send(&svc, get("/d")).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let a = send(&svc, get_with("/d", &[("if-none-match", "\"v2\"")])).await;
    assert_eq!(seen.calls(), 2);
    assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{}", a.cs());
    assert!(a.body.is_empty());
    assert_eq!(a.headers["etag"], "\"v2\"");
}

#[tokio::test(start_paused = true)]
async fn request_directives() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=60")]),
    ));
    send(&svc, get("/q")).await;
    let nc = send(&svc, get_with("/q", &[("cache-control", "no-cache")])).await;
    assert_eq!(nc.cache.outcome, CacheOutcome::Request);
    assert_eq!(nc.body, "v1");
    tokio::time::advance(Duration::from_secs(10)).await;
    let ma = send(&svc, get_with("/q", &[("cache-control", "max-age=5")])).await;
    assert_eq!(ma.cache.outcome, CacheOutcome::Request);
    let oic = send(
        &svc,
        get_with("/never", &[("cache-control", "only-if-cached")]),
    )
    .await;
    assert_eq!(oic.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(oic.cs(), "bulwark; detail=only-if-cached");
    assert!(
        String::from_utf8_lossy(&oic.body).contains(r#""status":504"#),
        "a problem document: {:?}",
        oic.body
    );
    assert_eq!(seen.calls(), 3);
}

// --- Vary -----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn vary_keeps_one_entry_per_variant() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |req, _| {
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
        res(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            lang,
        )
    }));
    let en = || get_with("/v", &[("accept-language", "en")]);
    let de = || get_with("/v", &[("accept-language", "de")]);
    assert_eq!(send(&svc, en()).await.cache.outcome, CacheOutcome::Miss);
    let d = send(&svc, de()).await;
    assert_eq!(
        (d.cache.outcome, &d.body[..]),
        (CacheOutcome::VaryMiss, &b"de"[..])
    );
    assert_eq!(send(&svc, en()).await.body, "en");
    assert_eq!(send(&svc, de()).await.body, "de");
    assert_eq!(send(&svc, get("/v")).await.body, "none");
    assert_eq!(send(&svc, get("/v")).await.cache.outcome, CacheOutcome::Hit);
    assert_eq!(seen.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn without_vary_headers_do_not_matter() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=60")]),
    ));
    send(&svc, get_with("/n", &[("accept-language", "en")])).await;
    let b = send(&svc, get_with("/n", &[("accept-language", "de")])).await;
    assert_eq!(b.cache.outcome, CacheOutcome::Hit);
}

// --- never-store rules ----------------------------------------------------------------------

async fn assert_not_stored<F>(name: &str, layer: CacheLayer, req: fn() -> Request<()>, f: F)
where
    F: Fn(&Request<()>, usize) -> Res + Send + Sync + 'static,
{
    let seen = Seen::default();
    let svc = layer.layer(origin(&seen, Duration::ZERO, f));
    let a = send(&svc, req()).await;
    assert!(!a.cache.stored, "{name}: {}", a.cs());
    let b = send(&svc, req()).await;
    assert!(!b.cache.outcome.is_hit(), "{name}");
    assert_eq!(seen.calls(), 2, "{name}");
}

#[tokio::test(start_paused = true)]
async fn never_stores() {
    let policy = || CacheLayer::new(memory());
    let forced = || CacheLayer::new(memory()).ttl(Duration::from_secs(60));
    let plain = || get("/n");
    for (name, layer) in [("policy", policy()), ("forced", forced())] {
        assert_not_stored(
            &format!("{name} set-cookie"),
            layer.clone(),
            plain,
            |_, _| {
                res(
                    200,
                    &[("cache-control", "max-age=60"), ("set-cookie", "a=1")],
                    "x".into(),
                )
            },
        )
        .await;
        assert_not_stored(&format!("{name} private"), layer.clone(), plain, |_, _| {
            res(200, &[("cache-control", "private, max-age=60")], "x".into())
        })
        .await;
        assert_not_stored(&format!("{name} no-store"), layer.clone(), plain, |_, _| {
            res(200, &[("cache-control", "no-store")], "x".into())
        })
        .await;
        assert_not_stored(&format!("{name} vary *"), layer.clone(), plain, |_, _| {
            res(
                200,
                &[("cache-control", "max-age=60"), ("vary", "*")],
                "x".into(),
            )
        })
        .await;
        assert_not_stored(
            &format!("{name} authorization"),
            layer.clone(),
            || get_with("/n", &[("authorization", "Bearer t")]),
            |_, _| res(200, &[("cache-control", "max-age=60")], "x".into()),
        )
        .await;
        assert_not_stored(
            &format!("{name} cookie"),
            layer.clone(),
            || get_with("/n", &[("cookie", "s=1")]),
            |_, _| res(200, &[("cache-control", "max-age=60")], "x".into()),
        )
        .await;
        assert_not_stored(
            &format!("{name} rejection"),
            layer.clone(),
            plain,
            |_, _| {
                let mut r = res(200, &[("cache-control", "max-age=60")], "x".into());
                r.extensions_mut().insert(Rejection::IdempotencyKeyMissing);
                r
            },
        )
        .await;
        assert_not_stored(&format!("{name} fallback"), layer.clone(), plain, |_, _| {
            let mut r = res(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("bulwark-fallback", "error"),
                ],
                "x".into(),
            );
            r.extensions_mut().insert(FallbackReason::Error);
            r
        })
        .await;
        assert_not_stored(&format!("{name} replay"), layer.clone(), plain, |_, _| {
            res(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("idempotent-replayed", "true"),
                ],
                "x".into(),
            )
        })
        .await;
        assert_not_stored(
            &format!("{name} too large"),
            layer.clone().max_body_bytes(4),
            plain,
            |_, _| res(200, &[("cache-control", "max-age=60")], "0123456789".into()),
        )
        .await;
    }
    assert_not_stored("policy no freshness", policy(), plain, |_, _| {
        res(200, &[], "x".into())
    })
    .await;
    assert_not_stored(
        "policy request no-store",
        policy(),
        || get_with("/n", &[("cache-control", "no-store")]),
        |_, _| res(200, &[("cache-control", "max-age=60")], "x".into()),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn credentials_allowed_by_response_or_config() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "public, max-age=60")]),
    ));
    let auth = || get_with("/a", &[("authorization", "Bearer t")]);
    send(&svc, auth()).await;
    assert_eq!(send(&svc, auth()).await.cache.outcome, CacheOutcome::Hit);

    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(60))
        .allow_authorized(true)
        .layer(origin(&seen, Duration::ZERO, numbered(&[])));
    send(&svc, auth()).await;
    assert_eq!(send(&svc, auth()).await.cache.outcome, CacheOutcome::Hit);

    // Stored from an anonymous request, not served to a request with credentials.
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=60")]),
    ));
    send(&svc, get("/a")).await;
    assert!(!send(&svc, auth()).await.cache.outcome.is_hit());
}

#[tokio::test(start_paused = true)]
async fn large_bodies_stream_through_untouched() {
    let seen = Seen::default();
    let big: String = "x".repeat(10_000);
    let expected = big.clone();
    // A body without a size hint, in chunks, so the limit is found while reading.
    let svc = CacheLayer::new(memory())
        .max_body_bytes(4096)
        .layer(service_fn(move |_req: Request<()>| {
            seen.calls.fetch_add(1, Ordering::SeqCst);
            let body = Chunks(
                big.as_bytes()
                    .chunks(1000)
                    .map(Bytes::copy_from_slice)
                    .collect(),
            );
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("cache-control", "max-age=60")
                        .body(body)
                        .unwrap(),
                )
            }
        }));
    let res = svc.clone().oneshot(get("/big")).await.unwrap();
    assert!(
        res.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("detail=too-large")
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, expected.as_bytes());
}

/// A body in chunks, with no size hint.
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

// --- coalescing -----------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_misses_make_one_call() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(10))
        .layer(origin(&seen, Duration::from_millis(100), numbered(&[])));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { send(&svc, get("/slow")).await }));
    }
    let mut collapsed = 0;
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.body, "v0");
        if a.cache.outcome == CacheOutcome::Collapsed {
            assert_eq!(a.cs(), "bulwark; fwd=miss; ttl=10; collapsed");
            collapsed += 1;
        }
    }
    assert_eq!(seen.calls(), 1);
    assert_eq!(collapsed, 49);
}

#[tokio::test(start_paused = true)]
async fn non_storable_leader_answer_sends_waiters_to_the_origin() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(10))
        .layer(origin(&seen, Duration::from_millis(100), |_, n| {
            res(
                200,
                &[("set-cookie", &format!("user={n}"))],
                format!("for-{n}"),
            )
        }));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { send(&svc, get("/me")).await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let a = t.await.unwrap();
        // Every answer is the one made for its own call.
        let n = a.body.strip_prefix(b"for-").unwrap().to_vec();
        assert_eq!(
            a.headers["set-cookie"].as_bytes(),
            [b"user=".as_slice(), &n].concat()
        );
        bodies.push(a.body);
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 10);
    assert_eq!(seen.calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn coalescing_wait_is_bounded() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(10))
        .coalesce_wait(Duration::from_millis(50))
        .layer(origin(&seen, Duration::from_secs(1), numbered(&[])));
    let a = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, get("/s")).await }
    });
    tokio::task::yield_now().await;
    let b = send(&svc, get("/s")).await;
    assert_eq!(b.cache.outcome, CacheOutcome::Miss);
    a.await.unwrap();
    assert_eq!(seen.calls(), 2);
}

// --- stale serving --------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_refreshes_once_in_background() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::from_millis(100),
        numbered(&[("cache-control", "max-age=1, stale-while-revalidate=30")]),
    ));
    send(&svc, get("/w")).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    let a = send(&svc, get("/w")).await;
    let b = send(&svc, get("/w")).await;
    for s in [&a, &b] {
        assert_eq!(s.body, "v0");
        assert_eq!(
            s.cs(),
            "bulwark; hit; ttl=-2; detail=stale-while-revalidate"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.calls(), 2, "one background refresh");
    let c = send(&svc, get("/w")).await;
    assert_eq!(
        (c.cache.outcome, &c.body[..]),
        (CacheOutcome::Hit, &b"v1"[..])
    );
    // Beyond the window (and without a validator) the entry is gone.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        send(&svc, get("/w")).await.cache.outcome,
        CacheOutcome::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_on_5xx_and_err() {
    let seen = Seen::default();
    let fail = Arc::new(AtomicUsize::new(0));
    let f2 = fail.clone();
    let svc = CacheLayer::new(memory()).layer(service_fn(move |_req: Request<()>| {
        let n = seen.calls.fetch_add(1, Ordering::SeqCst);
        let mode = f2.load(Ordering::SeqCst);
        async move {
            match mode {
                0 => Ok(res(
                    200,
                    &[("cache-control", "max-age=1, stale-if-error=60")],
                    format!("v{n}"),
                )),
                1 => Ok(res(503, &[], "down".into())),
                _ => Err("connection refused"),
            }
        }
    }));
    svc.clone().oneshot(get("/e")).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    fail.store(1, Ordering::SeqCst);
    let r = svc.clone().oneshot(get("/e")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-status"],
        "bulwark; fwd=stale; fwd-status=503; ttl=-4; detail=stale-if-error"
    );
    fail.store(2, Ordering::SeqCst);
    let r = svc.clone().oneshot(get("/e")).await.unwrap();
    assert_eq!(
        r.extensions().get::<CacheStatus>().unwrap().outcome,
        CacheOutcome::StaleIfError
    );
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "v0");
    // Past the window the failure goes through.
    tokio::time::advance(Duration::from_secs(120)).await;
    assert!(svc.clone().oneshot(get("/e")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn stale_options_as_layer_defaults_and_must_revalidate_forbids() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(1))
        .stale_if_error(Duration::from_secs(60))
        .layer(origin(&seen, Duration::ZERO, |_, n| {
            if n == 0 {
                res(200, &[], "good".into())
            } else {
                res(500, &[], "bad".into())
            }
        }));
    send(&svc, get("/d")).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let a = send(&svc, get("/d")).await;
    assert_eq!(
        (a.cache.outcome, &a.body[..]),
        (CacheOutcome::StaleIfError, &b"good"[..])
    );

    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .stale_if_error(Duration::from_secs(60))
        .layer(origin(&seen, Duration::ZERO, |_, n| {
            if n == 0 {
                res(
                    200,
                    &[("cache-control", "max-age=1, must-revalidate")],
                    "good".into(),
                )
            } else {
                res(500, &[], "bad".into())
            }
        }));
    send(&svc, get("/d")).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(send(&svc, get("/d")).await.status, 500);
}

// --- memory bound, purge, invalidation, HEAD ------------------------------------------------

#[tokio::test(start_paused = true)]
async fn byte_bound_holds_at_twice_capacity() {
    let store = MemoryStore::new(64 * 1024);
    let seen = Seen::default();
    let svc = CacheLayer::new(CacheStore::custom(store.clone()))
        .ttl(Duration::from_secs(60))
        .layer(origin(&seen, Duration::ZERO, |_, _| {
            res(200, &[], "y".repeat(1024))
        }));
    for i in 0..128 {
        send(&svc, get(&format!("/item/{i}"))).await;
    }
    assert!(
        store.weighted_size() <= 64 * 1024,
        "{}",
        store.weighted_size()
    );
    assert!(store.entry_count() > 0);
}

#[tokio::test(start_paused = true)]
async fn purge_by_key_and_prefix() {
    let seen = Seen::default();
    let layer = CacheLayer::new(memory()).ttl(Duration::from_secs(60));
    let handle = layer.handle();
    let svc = layer.layer(origin(&seen, Duration::ZERO, numbered(&[])));
    send(&svc, get("/p/1")).await;
    send(&svc, get("/p/2")).await;
    send(&svc, get("/q")).await;
    let key = handle.key_for(&get("/p/1").into_parts().0).unwrap();
    assert_eq!(key, "GET shop.test/p/1");
    handle.purge(&key).await.unwrap();
    assert_eq!(
        send(&svc, get("/p/1")).await.cache.outcome,
        CacheOutcome::Miss
    );
    assert_eq!(handle.purge_prefix("GET shop.test/p/").await.unwrap(), 2);
    assert_eq!(
        send(&svc, get("/p/2")).await.cache.outcome,
        CacheOutcome::Miss
    );
    assert_eq!(send(&svc, get("/q")).await.cache.outcome, CacheOutcome::Hit);
}

#[tokio::test(start_paused = true)]
async fn successful_unsafe_requests_invalidate() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |req, n| {
        match *req.method() {
            Method::GET => res(
                200,
                &[("cache-control", "max-age=60"), ("vary", "accept")],
                format!("v{n}"),
            ),
            _ if req.uri().path() == "/fail" => res(500, &[], String::new()),
            _ => res(201, &[("location", "/other")], String::new()),
        }
    }));
    send(&svc, get("/list")).await;
    send(&svc, get("/other")).await;
    let post = send(
        &svc,
        Request::post("/list")
            .header("host", "shop.test")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(post.cs(), "bulwark; fwd=method; fwd-status=201");
    assert_eq!(
        send(&svc, get("/list")).await.cache.outcome,
        CacheOutcome::Miss
    );
    assert_eq!(
        send(&svc, get("/other")).await.cache.outcome,
        CacheOutcome::Miss
    );
    // A failed one does not.
    send(&svc, get("/fail")).await;
    send(
        &svc,
        Request::delete("/fail")
            .header("host", "shop.test")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(
        send(&svc, get("/fail")).await.cache.outcome,
        CacheOutcome::Hit
    );
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_get() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=60")]),
    ));
    let head = || {
        Request::head("/h")
            .header("host", "shop.test")
            .body(())
            .unwrap()
    };
    let miss = send(&svc, head()).await;
    assert!(!miss.cache.stored);
    send(&svc, get("/h")).await;
    let hit = send(&svc, head()).await;
    assert_eq!(hit.cache.outcome, CacheOutcome::Hit);
    assert!(hit.body.is_empty());
    assert_eq!(seen.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn targeted_cache_control() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).cdn_cache_control().layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
        ]),
    ));
    send(&svc, get("/t")).await;
    let hit = send(&svc, get("/t")).await;
    assert_eq!(hit.cache.outcome, CacheOutcome::Hit);
    assert_eq!(
        hit.headers["cache-control"], "no-store",
        "passed on for caches downstream"
    );
    // Without the option the field means nothing to this cache.
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
        ]),
    ));
    send(&svc, get("/t")).await;
    assert!(!send(&svc, get("/t")).await.cache.outcome.is_hit());
}

#[tokio::test(start_paused = true)]
async fn key_hook_and_cache_name() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(60))
        .key(|p| (p.uri.path() != "/private").then(|| format!("GET {}", p.uri.path())))
        .name("edge")
        .unwrap()
        .layer(origin(&seen, Duration::ZERO, numbered(&[])));
    send(&svc, get("/a?x=1")).await;
    let b = send(&svc, get("/a?x=2")).await;
    assert!(b.cs().starts_with("edge; hit"));
    let p = send(&svc, get("/private")).await;
    assert_eq!(p.cs(), "edge; fwd=bypass; fwd-status=200; detail=key");
    assert!(CacheLayer::new(memory()).name("bad name").is_err());
    // Range requests bypass.
    let r = send(&svc, get_with("/a", &[("range", "bytes=0-1")])).await;
    assert_eq!(r.cache.outcome, CacheOutcome::Bypass);
}

#[tokio::test(start_paused = true)]
async fn existing_cache_status_is_appended_to() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[
            ("cache-control", "max-age=60"),
            ("cache-status", "origin-cache; hit"),
        ]),
    ));
    let a = send(&svc, get("/s")).await;
    assert_eq!(
        a.cs(),
        "origin-cache; hit, bulwark; fwd=miss; fwd-status=200; stored"
    );
    let b = send(&svc, get("/s")).await;
    assert_eq!(b.cs(), "origin-cache; hit, bulwark; hit; ttl=60");
}

// --- metrics --------------------------------------------------------------------------------

#[test]
fn decisions_are_counted() {
    use metrics_util::debugging::DebugValue;
    let recorded = support::recorded(true, async {
        let seen = Seen::default();
        let svc = CacheLayer::new(memory())
            .ttl(Duration::from_secs(60))
            .layer(origin(&seen, Duration::ZERO, numbered(&[])));
        send(&svc, get("/m")).await;
        send(&svc, get("/m")).await;
        send(&svc, get("/m")).await;
        send(&svc, get_with("/m", &[("range", "bytes=0-1")])).await;
    });
    let mut counts = std::collections::HashMap::new();
    for (key, _, _, value) in recorded {
        let DebugValue::Counter(n) = value else {
            continue;
        };
        let outcome = key
            .key()
            .labels()
            .find(|l| l.key() == "outcome")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        counts.insert(format!("{}:{outcome}", key.key().name()), n);
    }
    assert_eq!(
        counts.get("bulwark_cache_requests_total:miss"),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(counts.get("bulwark_cache_requests_total:hit"), Some(&2));
    assert_eq!(counts.get("bulwark_cache_requests_total:bypass"), Some(&1));
    assert_eq!(counts.get("bulwark_cache_stored_total:"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn other_statuses_with_explicit_freshness_are_stored() {
    for status in [400u16, 500, 503, 599, 999] {
        let seen = Seen::default();
        let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, move |_, n| {
            res(status, &[("cache-control", "max-age=60")], format!("v{n}"))
        }));
        send(&svc, get("/s")).await;
        let b = send(&svc, get("/s")).await;
        assert_eq!(
            (b.status.as_u16(), b.cache.outcome),
            (status, CacheOutcome::Hit)
        );
        // Without explicit freshness they are not.
        let seen = Seen::default();
        let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, move |_, n| {
            res(status, &[("etag", "\"e\"")], format!("v{n}"))
        }));
        assert!(!send(&svc, get("/s")).await.cache.stored, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn absurd_header_values_do_not_panic() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |req, n| {
        match req.uri().path() {
            "/age" => res(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "18446744073709551615"),
                ],
                format!("v{n}"),
            ),
            "/age2" => res(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "99999999999999999999999"),
                ],
                format!("v{n}"),
            ),
            // `u64::from_str` takes the sign; the policy library would add to this and overflow.
            "/age3" => res(
                200,
                &[
                    ("cache-control", "max-age=60, stale-while-revalidate=60"),
                    ("etag", "\"x\""),
                    ("age", "+18446744073709551615"),
                ],
                format!("v{n}"),
            ),
            "/max" => res(
                200,
                &[(
                    "cache-control",
                    "max-age=18446744073709551615, stale-while-revalidate=18446744073709551615",
                )],
                format!("v{n}"),
            ),
            _ => res(
                200,
                &[
                    ("cache-control", "max-age=-1, s-maxage=x"),
                    ("expires", "garbage"),
                ],
                format!("v{n}"),
            ),
        }
    }));
    for path in ["/age", "/age2", "/age3", "/max", "/bad"] {
        send(&svc, get(path)).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        send(
            &svc,
            get_with(
                path,
                &[(
                    "cache-control",
                    "max-stale=18446744073709551615, min-fresh=18446744073709551615",
                )],
            ),
        )
        .await;
        send(&svc, get(path)).await;
    }
    // An Age beyond any max-age is stale at once.
    assert!(!send(&svc, get("/age")).await.cache.outcome.is_hit());
    // A signed Age is no Age at all (RFC 9111 section 5.1): the answer is fresh for its max-age.
    let signed = send(&svc, get("/age3")).await;
    assert_eq!(signed.cache.outcome, CacheOutcome::Hit);
    assert!(signed.age().is_some_and(|a| a < 60), "{:?}", signed.age());
    assert_eq!(
        send(&svc, get("/max")).await.cache.outcome,
        CacheOutcome::Hit
    );
}

/// An event stream under a forced TTL is passed through as it streams: buffering it to store it
/// would hold its head back for as long as it runs.
#[tokio::test(start_paused = true)]
async fn an_event_stream_is_never_stored() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(60))
        .layer(origin(&seen, Duration::ZERO, |_, n| {
            res(
                200,
                &[("content-type", "Text/Event-Stream; charset=utf-8")],
                format!("data: {n}\n\n"),
            )
        }));
    for _ in 0..2 {
        let a = send(&svc, get("/events")).await;
        assert_eq!(a.cache.outcome, CacheOutcome::Miss);
        assert!(!a.cache.stored);
        assert_eq!(a.cache.detail, Some("event-stream"));
    }
}

/// Directive names are case-insensitive (RFC 9111 section 5.2): `No-Cache` still means revalidate,
/// `MAX-AGE` still gives freshness.
#[tokio::test(start_paused = true)]
async fn directive_names_are_case_insensitive() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, |req, n| {
        match req.uri().path() {
            "/no-cache" => res(
                200,
                &[("cache-control", "No-Cache, max-age=60"), ("etag", "\"v\"")],
                format!("v{n}"),
            ),
            _ => res(200, &[("cache-control", "MAX-AGE=60")], format!("v{n}")),
        }
    }));
    send(&svc, get("/no-cache")).await;
    assert!(!send(&svc, get("/no-cache")).await.cache.outcome.is_hit());
    send(&svc, get("/upper")).await;
    assert_eq!(
        send(&svc, get("/upper")).await.cache.outcome,
        CacheOutcome::Hit
    );
}

#[tokio::test(start_paused = true)]
async fn qualified_no_cache_and_private_omit_the_listed_fields() {
    for cc in [
        "no-cache=\"a, b\", max-age=3600",
        "private=\"a, b\", max-age=3600",
    ] {
        let seen = Seen::default();
        let svc = CacheLayer::new(memory()).layer(origin(&seen, Duration::ZERO, move |_, n| {
            res(
                200,
                &[("cache-control", cc), ("a", "1"), ("b", "2"), ("c", "3")],
                format!("v{n}"),
            )
        }));
        let first = send(&svc, get("/q")).await;
        assert_eq!(first.headers["a"], "1", "the first answer is untouched");
        let hit = send(&svc, get("/q")).await;
        assert_eq!(hit.cache.outcome, CacheOutcome::Hit, "{cc}");
        assert!(!hit.headers.contains_key("a") && !hit.headers.contains_key("b"));
        assert_eq!(hit.headers["c"], "3");
    }
}

/// A memory store whose second `get` reads at once but answers only when `release` gets a
/// permit: a request that missed, held between its lookup and its joining a flight.
struct HeldSecondGet {
    inner: MemoryStore,
    gets: AtomicUsize,
    read: Arc<tokio::sync::Semaphore>,
    release: Arc<tokio::sync::Semaphore>,
}

impl bulwark::cache::Store for HeldSecondGet {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> bulwark::cache::store::StoreFuture<'a, Option<bulwark::cache::Entry>> {
        Box::pin(async move {
            let found = self.inner.get(key).await;
            if self.gets.fetch_add(1, Ordering::SeqCst) == 1 {
                self.read.add_permits(1);
                self.release.acquire().await.unwrap().forget();
            }
            found
        })
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: bulwark::cache::Entry,
    ) -> bulwark::cache::store::StoreFuture<'a, ()> {
        self.inner.put(key, entry)
    }
    fn remove<'a>(&'a self, key: &'a str) -> bulwark::cache::store::StoreFuture<'a, ()> {
        self.inner.remove(key)
    }
    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> bulwark::cache::store::StoreFuture<'a, u64> {
        self.inner.remove_prefix(prefix)
    }
    fn name(&self) -> &'static str {
        "held"
    }
}

#[tokio::test]
async fn a_miss_whose_flight_landed_before_it_joined_looks_again() {
    // The late request misses while the first one's call runs, and reaches the flight table
    // only after that call stored its answer and left: it must find the answer, not call again.
    let read = Arc::new(tokio::sync::Semaphore::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let store = HeldSecondGet {
        inner: MemoryStore::new(1 << 20),
        gets: AtomicUsize::new(0),
        read: read.clone(),
        release: release.clone(),
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (g, calls) = (gate.clone(), Arc::new(AtomicUsize::new(0)));
    let c = calls.clone();
    let svc = CacheLayer::new(CacheStore::custom(store))
        .ttl(Duration::from_secs(600))
        .layer(service_fn(move |_req: Request<()>| {
            c.fetch_add(1, Ordering::SeqCst);
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(res(200, &[], "one".into()))
            }
        }));
    let s = svc.clone();
    let first = tokio::spawn(async move { send(&s, get("/r")).await });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let s = svc.clone();
    let late = tokio::spawn(async move { send(&s, get("/r")).await });
    read.acquire().await.unwrap().forget();
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().body, "one");
    release.add_permits(1);
    // A second inner call would wait at the closed gate: give up rather than hang.
    let late = tokio::time::timeout(Duration::from_secs(10), late)
        .await
        .expect("the late request answered without a second inner call")
        .unwrap();
    assert_eq!(late.body, "one");
    assert_eq!(late.cache.outcome, CacheOutcome::Collapsed);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one inner call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalescing_on_the_multi_thread_runtime() {
    let seen = Seen::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let calls = seen.calls.clone();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(600))
        .layer(service_fn(move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let g = g.clone();
            async move {
                // Held until the test opens the gate, so every request arrives meanwhile.
                let _permit = g.acquire().await.unwrap();
                Ok::<_, Infallible>(res(200, &[], "one".into()))
            }
        }));
    let barrier = Arc::new(tokio::sync::Barrier::new(51));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (svc, barrier) = (svc.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            send(&svc, get("/mt")).await
        }));
    }
    barrier.wait().await;
    // Let the requests reach the cache, then release the one inner call.
    while seen.calls() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().body, "one");
    }
    assert_eq!(seen.calls(), 1);
}

/// Coalescing with a leader that never finishes: its task is aborted (a client gone) or its
/// inner call fails, while 20 requests for the same key wait on it from other threads. No
/// waiter hangs: each is answered, by a later leader's stored answer or its own call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_are_answered_when_their_leader_is_cancelled_or_fails() {
    for fail in [false, true] {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let leader_in = Arc::new(tokio::sync::Notify::new());
        let l = leader_in.clone();
        let svc = CacheLayer::new(memory())
            .ttl(Duration::from_secs(600))
            .layer(service_fn(move |_req: Request<()>| {
                let first = c.fetch_add(1, Ordering::SeqCst) == 0;
                let l = l.clone();
                async move {
                    if first {
                        l.notify_one();
                        if fail {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return Err::<Response<Full<Bytes>>, std::io::Error>(
                                std::io::Error::other("leader failed"),
                            );
                        }
                        std::future::pending::<()>().await;
                    }
                    Ok(res(200, &[], "one".into()))
                }
            }));
        let leader = {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(get("/flight")).await.map(|_| ()) })
        };
        leader_in.notified().await;
        let barrier = Arc::new(tokio::sync::Barrier::new(21));
        let mut waiters = Vec::new();
        for _ in 0..20 {
            let (svc, barrier) = (svc.clone(), barrier.clone());
            waiters.push(tokio::spawn(async move {
                barrier.wait().await;
                svc.oneshot(get("/flight")).await
            }));
        }
        barrier.wait().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !fail {
            leader.abort();
        }
        for w in waiters {
            let answered = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a waiter is answered")
                .unwrap();
            let res = answered.expect("the inner service answered this waiter");
            assert_eq!(res.status(), 200);
        }
        assert!(
            calls.load(Ordering::SeqCst) >= 2,
            "someone called after the leader"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn each_answer_gets_its_own_cache_status_when_statuses_alternate() {
    // The layer reuses the last `Cache-Status` value it made when the next answer's status is
    // the same; alternating statuses must each get theirs.
    let svc =
        CacheLayer::new(memory())
            .key(|_| None)
            .layer(service_fn(|req: Request<()>| async move {
                let code = if req.uri().path() == "/gone" {
                    404
                } else {
                    200
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(code)
                        .body(Full::new(Bytes::from_static(b"x")))
                        .unwrap(),
                )
            }));
    for path in ["/a", "/a", "/gone", "/a", "/gone", "/gone"] {
        let res = send(&svc, get(path)).await;
        let code = if path == "/gone" { 404 } else { 200 };
        assert_eq!(
            res.cs(),
            format!("bulwark; fwd=bypass; fwd-status={code}; detail=key"),
            "{path}"
        );
        assert_eq!(res.cache.fwd_status, Some(code));
    }
}

/// A memory store that keeps every key it was given and the bytes of every entry put.
#[derive(Clone)]
struct Recording {
    inner: Arc<MemoryStore>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl bulwark::cache::Store for Recording {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> bulwark::cache::store::StoreFuture<'a, Option<bulwark::cache::Entry>> {
        self.seen.lock().unwrap().push(key.to_owned());
        self.inner.get(key)
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: bulwark::cache::Entry,
    ) -> bulwark::cache::store::StoreFuture<'a, ()> {
        let bytes = String::from_utf8_lossy(&entry.to_bytes()).into_owned();
        self.seen.lock().unwrap().extend([key.to_owned(), bytes]);
        self.inner.put(key, entry)
    }
    fn remove<'a>(&'a self, key: &'a str) -> bulwark::cache::store::StoreFuture<'a, ()> {
        self.inner.remove(key)
    }
    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> bulwark::cache::store::StoreFuture<'a, u64> {
        self.inner.remove_prefix(prefix)
    }
    fn name(&self) -> &'static str {
        "recording"
    }
}

/// Responses that vary on a credential (`Vary: Authorization`, `Vary: Cookie`) are stored per
/// credential, but the credential itself never becomes part of a store key or a stored entry
/// (a Redis key name and value, readable with `SCAN` and `MONITOR`): its digest does.
#[tokio::test(start_paused = true)]
async fn credentials_named_by_vary_never_reach_the_store() {
    for vary in ["authorization", "cookie"] {
        let store = Recording {
            inner: Arc::new(MemoryStore::new(1 << 20)),
            seen: Arc::default(),
        };
        let seen = Seen::default();
        let svc = CacheLayer::new(CacheStore::custom(store.clone()))
            .allow_authorized(true)
            .layer(origin(&seen, Duration::ZERO, move |req, n| {
                let credential = req.headers().get(vary).map_or("", |v| v.to_str().unwrap());
                let who = if credential.ends_with('A') {
                    "alice"
                } else {
                    "bob"
                };
                res(
                    200,
                    &[("cache-control", "public, max-age=60"), ("vary", vary)],
                    format!("{who} v{n}"),
                )
            }));
        let (alice, bob) = match vary {
            "authorization" => ("Bearer TOPSECRET-A", "Bearer TOPSECRET-B"),
            _ => ("sid=TOPSECRET-A", "sid=TOPSECRET-B"),
        };
        let a1 = send(&svc, get_with("/me", &[(vary, alice)])).await;
        let b1 = send(&svc, get_with("/me", &[(vary, bob)])).await;
        let a2 = send(&svc, get_with("/me", &[(vary, alice)])).await;
        // A reload (the request's own directives) still finds its variant.
        let a3 = send(
            &svc,
            get_with("/me", &[(vary, alice), ("cache-control", "max-stale=5")]),
        )
        .await;
        assert_eq!(a1.body, "alice v0");
        assert_eq!(b1.body, "bob v1", "each credential has its variant");
        for a in [&a2, &a3] {
            assert_eq!(
                (a.cache.outcome, &a.body),
                (CacheOutcome::Hit, &a1.body),
                "{vary}"
            );
        }
        assert_eq!(seen.calls(), 2);
        let seen_by_store = store.seen.lock().unwrap().join("\n");
        assert!(seen_by_store.contains("sha256:"), "{seen_by_store}");
        assert!(
            !seen_by_store.contains("TOPSECRET"),
            "{vary}: {seen_by_store}"
        );
    }
}

/// The cache's own events name the key, with the query's secret values redacted as the request
/// log does.
#[tokio::test(start_paused = true)]
async fn cache_events_redact_query_secrets() {
    let (captured, _guard) = support::Captured::install();
    let seen = Seen::default();
    let svc = CacheLayer::new(memory())
        .ttl(Duration::from_secs(10))
        .layer(origin(&seen, Duration::ZERO, numbered(&[])));
    send(&svc, get("/download?token=TOPSECRET&file=a")).await;
    send(&svc, get("/download?token=TOPSECRET&file=a")).await;
    let events = captured.with_target("bulwark::cache");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[1]
            .field("key")
            .is_some_and(|k| k.contains("token=REDACTED&file=a"))
    );
    assert!(!captured.all_text().contains("TOPSECRET"));
}

/// A request with its own directives (a browser reload) is matched to the stored answer by the
/// key, whatever the URI form: HTTP/2 requests carry `https://host/path`, HTTP/1.1 ones
/// `/path` and a `Host` field.
#[tokio::test(start_paused = true)]
async fn request_directives_work_across_uri_forms() {
    let seen = Seen::default();
    let svc = CacheLayer::new(memory()).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=60")]),
    ));
    let h2 = Request::get("https://shop.test/p").body(()).unwrap();
    send(&svc, h2).await;
    let h1 = send(&svc, get_with("/p", &[("cache-control", "max-stale=5")])).await;
    assert_eq!(
        (h1.cache.outcome, &h1.body[..]),
        (CacheOutcome::Hit, &b"v0"[..])
    );
    let reload = send(&svc, get_with("/p", &[("cache-control", "No-Cache")])).await;
    assert_eq!(
        reload.cache.outcome,
        CacheOutcome::Request,
        "directive names are case-insensitive"
    );
    assert_eq!(seen.calls(), 2);
}

/// A background refresh that hangs is given up after `coalesce_wait`: it no longer holds the
/// flight, so a later stale request starts another refresh and the entry is renewed.
#[tokio::test(start_paused = true)]
async fn a_hung_background_refresh_is_given_up() {
    let seen = Seen::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=1, stale-while-revalidate=100")]),
    );
    // The second call (the first refresh) never answers.
    let hanging = tower::service_fn(move |req: Request<()>| {
        let hang = calls.fetch_add(1, Ordering::SeqCst) == 1;
        let call = origin.clone().oneshot(req);
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            call.await
        }
    });
    let svc = CacheLayer::new(memory())
        .coalesce_wait(Duration::from_secs(5))
        .layer(hanging);
    send(&svc, get("/w")).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    let a = send(&svc, get("/w")).await;
    assert_eq!(a.cache.outcome, CacheOutcome::StaleWhileRevalidate);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let b = send(&svc, get("/w")).await;
    assert_eq!(b.cache.outcome, CacheOutcome::StaleWhileRevalidate);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        seen.calls(),
        2,
        "a second refresh was started, and answered"
    );
    let c = send(&svc, get("/w")).await;
    assert_eq!(
        (c.cache.outcome, &c.body[..]),
        (CacheOutcome::Hit, &b"v1"[..])
    );
}

/// A request served stale while the entry is refreshed in the background counts once in
/// `bulwark_cache_requests_total`: the refresh answers nobody.
#[test]
fn a_background_refresh_is_not_counted_as_a_request() {
    use metrics_util::debugging::DebugValue;
    let recorded = support::recorded(true, async {
        let seen = Seen::default();
        let svc = CacheLayer::new(memory()).layer(origin(
            &seen,
            Duration::ZERO,
            numbered(&[("cache-control", "max-age=1, stale-while-revalidate=30")]),
        ));
        send(&svc, get("/w")).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        send(&svc, get("/w")).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(seen.calls(), 2, "the refresh ran");
    });
    let mut requests = Vec::new();
    for (key, _, _, value) in recorded {
        if let (DebugValue::Counter(n), "bulwark_cache_requests_total") = (value, key.key().name())
        {
            let outcome = key.key().labels().find(|l| l.key() == "outcome").unwrap();
            requests.push((outcome.value().to_owned(), n));
        }
    }
    requests.retain(|(_, n)| *n > 0);
    requests.sort();
    assert_eq!(
        requests,
        [
            ("miss".to_owned(), 1),
            ("stale_while_revalidate".to_owned(), 1)
        ]
    );
}

/// Purging a URL whose answers vary removes every variant from the store, not only the index
/// that made them reachable.
#[tokio::test(start_paused = true)]
async fn purge_removes_every_variant() {
    let store = Recording {
        inner: Arc::new(MemoryStore::new(1 << 20)),
        seen: Arc::default(),
    };
    let seen = Seen::default();
    let layer = CacheLayer::new(CacheStore::custom(store.clone()));
    let handle = layer.handle();
    let svc = layer.layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=60"), ("vary", "accept")]),
    ));
    for accept in ["text/html", "application/json"] {
        send(&svc, get_with("/v", &[("accept", accept)])).await;
    }
    send(&svc, get("/other")).await;
    // Per URL an index and its variants: two for /v, one for /other.
    assert_eq!(store.inner.entry_count(), 5);
    handle.purge("GET shop.test/v").await.unwrap();
    assert_eq!(
        store.inner.entry_count(),
        2,
        "/other's index and variant are left"
    );
}

/// A variant stored late in its index's life stays reachable for its own lifetime: the index
/// is kept at least as long as the latest variant.
#[tokio::test(start_paused = true)]
async fn a_late_variant_outlives_the_first_one() {
    let seen = Seen::default();
    let svc = CacheLayer::new(CacheStore::custom(Expiring::default())).layer(origin(
        &seen,
        Duration::ZERO,
        numbered(&[("cache-control", "max-age=60"), ("vary", "accept")]),
    ));
    send(&svc, get_with("/v", &[("accept", "text/html")])).await;
    tokio::time::advance(Duration::from_secs(50)).await;
    send(&svc, get_with("/v", &[("accept", "application/json")])).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let b = send(&svc, get_with("/v", &[("accept", "application/json")])).await;
    assert_eq!(
        (b.cache.outcome, &b.body[..]),
        (CacheOutcome::Hit, &b"v1"[..])
    );
    assert_eq!(seen.calls(), 2);
}

/// A store whose entries expire in tokio's (virtual) time, after `Entry::time_to_keep`, as
/// Redis's do in real time.
#[derive(Default)]
struct Expiring(
    Mutex<std::collections::HashMap<String, (tokio::time::Instant, bulwark::cache::Entry)>>,
);

impl bulwark::cache::Store for Expiring {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> bulwark::cache::store::StoreFuture<'a, Option<bulwark::cache::Entry>> {
        let mut map = self.0.lock().unwrap();
        let found = match map.get(key) {
            Some((until, _)) if *until <= tokio::time::Instant::now() => {
                map.remove(key);
                None
            }
            other => other.map(|(_, e)| e.clone()),
        };
        Box::pin(async move { Ok(found) })
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: bulwark::cache::Entry,
    ) -> bulwark::cache::store::StoreFuture<'a, ()> {
        let until = tokio::time::Instant::now() + entry.time_to_keep();
        self.0
            .lock()
            .unwrap()
            .insert(key.to_owned(), (until, entry));
        Box::pin(async { Ok(()) })
    }
    fn remove<'a>(&'a self, key: &'a str) -> bulwark::cache::store::StoreFuture<'a, ()> {
        self.0.lock().unwrap().remove(key);
        Box::pin(async { Ok(()) })
    }
    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> bulwark::cache::store::StoreFuture<'a, u64> {
        let mut map = self.0.lock().unwrap();
        let before = map.len();
        map.retain(|k, _| !k.starts_with(prefix));
        let n = (before - map.len()) as u64;
        Box::pin(async move { Ok(n) })
    }
    fn name(&self) -> &'static str {
        "expiring"
    }
}
