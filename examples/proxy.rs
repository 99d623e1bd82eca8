//! A caching reverse proxy: bulwark's [`CacheLayer`] in policy mode (RFC 9111 shared-cache
//! rules, heuristic freshness off) around a hyper client forwarding to one origin.
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --origin http://127.0.0.1:8000
//! ```
//!
//! It is how the cache is checked against independent HTTP caching conformance suites, so it
//! behaves as a plain reverse proxy:
//!
//! - every method is forwarded with its body, path and query byte for byte (unsafe methods pass
//!   through the cache layer, which invalidates the URI on success);
//! - every header passes both ways untouched, multi-valued ones (`Set-Cookie`) as they are,
//!   except hop-by-hop fields (`Connection` and what it lists, `Keep-Alive`, `TE`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-*`); no compression, no body rewriting;
//! - any final status passes through (999 too); the cache adds `Cache-Status`, and `Age` on
//!   hits. Interim `1xx` answers from the origin (`103 Early Hints`) are read and dropped by the
//!   hyper client: hyper 1's server has no way to forward them, so the final answer follows;
//! - upstream timeout 60 s; idle upstream connections are dropped after 2 s, before origins that
//!   close idle connections at 5 s can race a reused connection;
//! - an origin that cannot be reached or breaks off mid-answer gets a 502 (or the stale entry
//!   where `stale-if-error` allows it);
//! - it starts with an empty cache and prints nothing on stdout (errors go to stderr).

use std::{
    convert::Infallible, future::Future, net::SocketAddr, pin::Pin, process::ExitCode, sync::Arc,
    time::Duration,
};

use bulwark::{
    body::ResponseBody,
    cache::{CacheLayer, CacheStore},
};
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::{Layer, Service};

const USAGE: &str = "\
Usage: proxy --listen ADDR --origin URL

A shared HTTP cache (bulwark's cache layer in policy mode) in front of one origin.

Options:
  --listen ADDR   listen on ADDR (IP:PORT), e.g. 127.0.0.1:8080
  --origin URL    forward to URL (http://HOST:PORT), e.g. http://127.0.0.1:8000
  -h, --help      print this help";

/// How long the origin may take to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle upstream connection is kept for reuse.
const UPSTREAM_IDLE: Duration = Duration::from_secs(2);
/// The cache's size.
const CACHE_BYTES: u64 = 256 * 1024 * 1024;

type BoxBody = UnsyncBoxBody<Bytes, hyper::Error>;

#[derive(Debug, PartialEq, Eq)]
struct Args {
    listen: SocketAddr,
    origin: Uri,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut listen = None;
    let mut origin = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                let v = value("--listen")?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("invalid --listen `{v}`: {e}"))?,
                );
            }
            "--origin" => {
                let v = value("--origin")?;
                let uri: Uri = v
                    .parse()
                    .map_err(|e| format!("invalid --origin `{v}`: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(format!("invalid --origin `{v}`: expected http://HOST:PORT"));
                }
                origin = Some(uri);
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(Some(Args {
        listen: listen.ok_or("--listen is required")?,
        origin: origin.ok_or("--origin is required")?,
    }))
}

/// The origin, as a `tower::Service`: forwards the request, answers 502 if the origin cannot be
/// reached, 504 if it does not answer in time.
#[derive(Clone)]
struct Forward {
    client: Client<HttpConnector, Incoming>,
    origin: Arc<Uri>,
}

impl Forward {
    fn new(origin: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(UPSTREAM_IDLE)
            // Keep header case and order as close to the wire as hyper allows.
            .http1_preserve_header_case(true)
            .build(connector);
        Self {
            client,
            origin: Arc::new(origin),
        }
    }
}

fn gateway(status: StatusCode, detail: &str) -> Response<BoxBody> {
    let body = format!(
        r#"{{"type":"about:blank","title":"{}","status":{},"detail":"{detail}"}}"#,
        status.canonical_reason().unwrap_or(""),
        status.as_u16()
    );
    let mut res = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    res
}

impl Service<Request<Incoming>> for Forward {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let mut target = http::uri::Parts::from((*self.origin).clone());
        target.path_and_query = parts.uri.path_and_query().cloned();
        let client = self.client.clone();
        Box::pin(async move {
            let Ok(uri) = Uri::from_parts(target) else {
                return Ok(gateway(
                    StatusCode::BAD_REQUEST,
                    "The request target is invalid.",
                ));
            };
            parts.uri = uri;
            bulwark::strip_hop_by_hop(&mut parts.headers);
            let req = Request::from_parts(parts, body);
            match tokio::time::timeout(UPSTREAM_TIMEOUT, client.request(req)).await {
                Ok(Ok(res)) => {
                    let (mut parts, body) = res.into_parts();
                    bulwark::strip_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, body.boxed_unsync()))
                }
                Ok(Err(e)) => {
                    eprintln!("proxy: origin request failed: {e}");
                    Ok(gateway(
                        StatusCode::BAD_GATEWAY,
                        "The origin could not be reached.",
                    ))
                }
                Err(_) => Ok(gateway(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The origin did not answer in time.",
                )),
            }
        })
    }
}

/// The proxy's service: the cache layer in policy mode around the origin.
fn proxy(
    origin: Uri,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ResponseBody<BoxBody>>,
    Error = Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    CacheLayer::new(CacheStore::memory(CACHE_BYTES)).layer(Forward::new(origin))
}

/// Serves `service` on `listener` until the process ends.
async fn serve<S>(listener: TcpListener, service: S)
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody<BoxBody>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .preserve_header_case(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                if !e.is_incomplete_message() {
                    eprintln!("proxy: connection error: {e}");
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("proxy: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("proxy: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    serve(listener, proxy(args.origin)).await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An origin that answers with `f` and counts its calls; returns its address.
    async fn origin<F>(calls: Arc<AtomicUsize>, f: F) -> SocketAddr
    where
        F: Fn(&http::request::Parts, Bytes) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let f = Arc::new(f);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let f = f.clone();
                let calls = calls.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let f = f.clone();
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(f(&parts, body))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        addr
    }

    /// Starts the proxy in front of `origin`; returns its address.
    async fn start_proxy(origin: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let uri: Uri = format!("http://{origin}").parse().unwrap();
        tokio::spawn(serve(listener, proxy(uri)));
        addr
    }

    struct Reply {
        status: u16,
        headers: http::HeaderMap,
        body: Bytes,
    }

    async fn send(
        proxy: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> Reply {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{proxy}{path}"));
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let res = client
            .request(
                b.body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    fn res(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Full::new(body.into())).unwrap()
    }

    #[tokio::test]
    async fn caches_by_policy_and_invalidates_on_put() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let origin = origin(calls.clone(), move |req, body| {
            let n = seen.load(Ordering::SeqCst);
            match req.method.as_str() {
                "PUT" => res(204, &[], Bytes::new()),
                _ => res(
                    200,
                    &[
                        ("cache-control", "max-age=60"),
                        ("x-path", req.uri.to_string().as_str()),
                    ],
                    format!("v{n} {}", body.len()),
                ),
            }
        })
        .await;
        let proxy = start_proxy(origin).await;
        let a = send(proxy, "GET", "/a/b?x=1&y=%20", &[], "").await;
        assert_eq!(
            a.headers["x-path"], "/a/b?x=1&y=%20",
            "path and query byte for byte"
        );
        assert!(
            a.headers["cache-status"]
                .to_str()
                .unwrap()
                .contains("stored")
        );
        let b = send(proxy, "GET", "/a/b?x=1&y=%20", &[], "").await;
        assert_eq!(b.body, a.body);
        assert!(
            b.headers["cache-status"]
                .to_str()
                .unwrap()
                .starts_with("bulwark; hit")
        );
        assert!(b.headers.contains_key("age"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let put = send(proxy, "PUT", "/a/b?x=1&y=%20", &[], "new body").await;
        assert_eq!(put.status, 204);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let c = send(proxy, "GET", "/a/b?x=1&y=%20", &[], "").await;
        assert!(
            c.headers["cache-status"]
                .to_str()
                .unwrap()
                .contains("fwd=miss")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn headers_statuses_and_shared_cache_rules() {
        let calls = Arc::new(AtomicUsize::new(0));
        let origin = origin(calls.clone(), |req, body| match req.uri.path() {
            "/odd" => res(999, &[], "odd"),
            "/cookies" => {
                let mut r = res(200, &[("cache-control", "max-age=60")], "c");
                r.headers_mut().append("set-cookie", "a=1".parse().unwrap());
                r.headers_mut().append("set-cookie", "b=2".parse().unwrap());
                r
            }
            "/private" => res(200, &[("cache-control", "private, max-age=60")], "p"),
            "/hop" => res(
                200,
                &[
                    ("connection", "x-hop"),
                    ("x-hop", "1"),
                    ("x-end", "2"),
                    ("keep-alive", "timeout=5"),
                ],
                "h",
            ),
            "/echo" => res(
                200,
                &[
                    (
                        "x-saw-hop",
                        if req.headers.contains_key("x-hop") {
                            "yes"
                        } else {
                            "no"
                        },
                    ),
                    (
                        "x-saw-custom",
                        req.headers
                            .get("x-custom")
                            .map_or("none", |v| v.to_str().unwrap()),
                    ),
                ],
                body,
            ),
            _ => res(200, &[("cache-control", "max-age=60")], "s"),
        })
        .await;
        let proxy = start_proxy(origin).await;
        assert_eq!(send(proxy, "GET", "/odd", &[], "").await.status, 999);
        let c = send(proxy, "GET", "/cookies", &[], "").await;
        let cookies: Vec<_> = c.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        send(proxy, "GET", "/cookies", &[], "").await;
        send(proxy, "GET", "/private", &[], "").await;
        send(proxy, "GET", "/private", &[], "").await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "set-cookie and private are not stored"
        );
        let h = send(proxy, "GET", "/hop", &[], "").await;
        assert!(!h.headers.contains_key("x-hop") && !h.headers.contains_key("keep-alive"));
        assert_eq!(h.headers["x-end"], "2");
        let e = send(
            proxy,
            "POST",
            "/echo",
            &[
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("x-custom", "kept"),
            ],
            "posted body",
        )
        .await;
        assert_eq!(
            (
                e.headers["x-saw-hop"].to_str().unwrap(),
                e.headers["x-saw-custom"].to_str().unwrap()
            ),
            ("no", "kept")
        );
        assert_eq!(e.body, "posted body");
        // Authorization: stored answers without `public`/`s-maxage` are not served.
        send(proxy, "GET", "/shared", &[], "").await;
        let before = calls.load(Ordering::SeqCst);
        send(
            proxy,
            "GET",
            "/shared",
            &[("authorization", "Bearer t")],
            "",
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn unreachable_or_broken_origin_is_a_502() {
        // Nothing listens there.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let proxy = start_proxy(closed).await;
        assert_eq!(send(proxy, "GET", "/", &[], "").await.status, 502);

        // An origin that promises 100 bytes, sends 5 and hangs up.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broken = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 100\r\n\r\nhello")
                    .await;
                drop(s);
            }
        });
        let proxy = start_proxy(broken).await;
        assert_eq!(send(proxy, "GET", "/", &[], "").await.status, 502);
    }

    #[tokio::test]
    async fn interim_answers_do_not_break_the_final_one() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n\
                      HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
                )
                .await;
        });
        let proxy = start_proxy(origin).await;
        let r = send(proxy, "GET", "/", &[], "").await;
        assert_eq!((r.status, &r.body[..]), (200, &b"final"[..]));
    }

    #[test]
    fn arguments() {
        let args = |v: &[&str]| parse_args(v.iter().map(|s| (*s).to_owned()));
        assert_eq!(
            args(&[
                "--listen",
                "127.0.0.1:8080",
                "--origin",
                "http://127.0.0.1:8000"
            ])
            .unwrap(),
            Some(Args {
                listen: "127.0.0.1:8080".parse().unwrap(),
                origin: "http://127.0.0.1:8000".parse().unwrap(),
            })
        );
        assert_eq!(args(&["--help"]).unwrap(), None);
        assert!(args(&["--listen", "nope", "--origin", "http://a"]).is_err());
        assert!(args(&["--listen", "127.0.0.1:1", "--origin", "ftp://a"]).is_err());
        assert!(args(&["--listen", "127.0.0.1:1"]).is_err());
    }
}
