//! Shared pieces of the comparison benches (`benches/compare.rs`): one request, one bare
//! baseline and one way of calling a service, used for bulwark and its peers alike, so that
//! every overhead is read against the same baseline in the same run.
#![allow(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Service, service_fn};

/// The request and response body type of every service measured here.
pub type Body = Full<Bytes>;

/// The peer address every request comes from.
pub const PEER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)),
    40_000,
);

/// The baseline: a `service_fn` answering 200 at once.
pub fn bare() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    bare_for()
}

/// [`bare`] for any request body type (layers that buffer bodies hand the inner service their
/// own body type).
pub fn bare_for<B: Send + 'static>() -> impl Service<
    Request<B>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<B>| async { Ok(Response::new(Full::new(Bytes::from_static(b"ok")))) })
}

/// The baseline's twin that answers 503.
pub fn unavailable() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<Body>| async {
        let mut res = Response::new(Full::new(Bytes::from_static(b"down")));
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Ok(res)
    })
}

/// A GET as a server hands it over: peer address (as a `SocketAddr` extension), a valid
/// request id and a user agent.
pub fn request() -> Request<Body> {
    let mut req = Request::get("http://example.test/products?page=2")
        .header("x-request-id", wire().0.clone())
        .header("user-agent", wire().1.clone())
        .body(Body::default())
        .expect("valid request");
    req.extensions_mut().insert(PEER);
    req
}

/// Polls a service ready and calls it, driving the future with a no-op waker.
///
/// Every measured service answers without waiting; a runtime context must be entered by the
/// caller for peers that touch tokio's clock.
///
/// # Panics
///
/// If the service or its future is not ready at once.
pub fn call<S, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => panic!("bench service not ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(res) => res,
        Poll::Pending => panic!("bench future not ready at once"),
    }
}

/// The baseline with axum's body type (tower_governor answers only with it).
pub fn axum_bare() -> impl Service<
    Request<axum::body::Body>,
    Response = Response<axum::body::Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<axum::body::Body>| async {
        Ok(Response::new(axum::body::Body::from("ok")))
    })
}

/// [`request`] with axum's body type, carrying axum's `ConnectInfo` as well.
pub fn axum_request() -> Request<axum::body::Body> {
    let mut req = Request::get("http://example.test/products?page=2")
        .header("x-request-id", wire().0.clone())
        .header("user-agent", wire().1.clone())
        .body(axum::body::Body::empty())
        .expect("valid request");
    req.extensions_mut().insert(PEER);
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(PEER));
    req
}

/// The request's `x-request-id` and `user-agent` values as hyper's parser hands them over:
/// slices of the connection's shared read buffer, so taking one is a reference-count
/// increment, not a copy.
pub fn wire() -> &'static (http::HeaderValue, http::HeaderValue) {
    use std::sync::OnceLock;
    static WIRE: OnceLock<(http::HeaderValue, http::HeaderValue)> = OnceLock::new();
    WIRE.get_or_init(|| {
        let buf = Bytes::from(b"bench-0001bench/1".to_vec());
        let value = |range| {
            http::HeaderValue::from_maybe_shared(buf.slice(range)).expect("valid header value")
        };
        (value(0..10), value(10..17))
    })
}
