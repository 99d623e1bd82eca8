//! Shared bench helpers: the bare baseline service, a request factory, and a poll-once
//! executor (every service here answers without waiting, so no runtime is measured).
#![allow(dead_code, unreachable_pub)]

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

pub type Body = Full<Bytes>;

/// The baseline every layer is compared with: a `service_fn` answering 200 at once.
pub fn bare() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>>,
> + Clone {
    bare_for()
}

/// [`bare`] for any request body type (layers that buffer bodies hand the inner service their
/// own body type).
pub fn bare_for<B>() -> impl Service<
    Request<B>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>>,
> + Clone {
    service_fn(|_req: Request<B>| async { Ok(Response::new(Full::new(Bytes::from_static(b"ok")))) })
}

/// A GET with a peer address and a valid request id, as a server would hand it over.
pub fn request() -> Request<Body> {
    let (id, agent) = wire();
    let mut req = Request::get("http://example.test/products?page=2")
        .header("x-request-id", id)
        .header("user-agent", agent)
        .body(Body::default())
        .expect("valid request");
    req.extensions_mut()
        .insert(SocketAddr::from(([198, 51, 100, 7], 40_000)));
    req
}

/// Polls a service ready and calls it, driving the future to completion with a no-op waker.
///
/// # Panics
///
/// If the service or its future is not ready at once (no bench service waits).
pub fn call<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("bench service not ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(Ok(res)) => res,
        _ => panic!("bench future not ready at once"),
    }
}

/// The request's `x-request-id` and `user-agent` values as hyper's parser hands them over:
/// slices of the connection's shared read buffer, so taking one is a reference-count
/// increment, not a copy.
///
/// One buffer per thread, as each of a server's connections has its own: with one buffer for
/// the whole process, the two threads of the `contention` bench would increment and decrement
/// one shared reference count four times per request, and measure that line bouncing between
/// cores rather than the layer (the bare baseline itself then scaled only ~1.6× to two threads).
pub fn wire() -> (http::HeaderValue, http::HeaderValue) {
    thread_local! {
        static WIRE: (http::HeaderValue, http::HeaderValue) = {
            let buf = Bytes::from(b"bench-0001bench/1".to_vec());
            let value = |range| {
                http::HeaderValue::from_maybe_shared(buf.slice(range))
                    .expect("valid header value")
            };
            (value(0..10), value(10..17))
        };
    }
    WIRE.with(|(id, agent)| (id.clone(), agent.clone()))
}
