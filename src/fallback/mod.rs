//! [`FallbackLayer`]: answer with something useful when the inner service fails — another
//! service, a closure, a fixed response, or the last good response for the same request.
//!
//! tower has no fallback layer; the nearest thing is axum's `HandleErrorLayer`, which turns
//! errors into responses. This layer also acts on failing *responses* (5xx, an inner circuit
//! breaker's [`Rejection::CircuitOpen`](crate::Rejection::CircuitOpen)), can replay the last good
//! answer, and marks every answer it gives, so clients, logs and outer layers can tell.
//!
//! ```
//! use bulwark::fallback::{FallbackLayer, FallbackReason};
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(|reason: FallbackReason| async move {
//!         Response::new(format!(r#"{{"items":[],"degraded":"{reason}"}}"#))
//!     }))
//!     .service(service_fn(|_: Request<String>| async {
//!         // A failing upstream.
//!         let res = Response::builder().status(503).body(String::new()).unwrap();
//!         Ok::<_, std::convert::Infallible>(res)
//!     }));
//!
//! let res = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["bulwark-fallback"], "status");
//! assert_eq!(res.extensions().get::<FallbackReason>(), Some(&FallbackReason::Status));
//! # }
//! ```
//!
//! # Kinds of fallback
//!
//! | constructor | kind | answers with |
//! | --- | --- | --- |
//! | [`FallbackLayer::new`] | [`ReasonFn`] | `async` closure of the [`FallbackReason`] |
//! | [`FallbackLayer::from_fn`] | [`RequestFn`] | `async` closure of the reason and the request |
//! | [`FallbackLayer::service`] | [`ServiceFallback`] | another `Service<Request<Bytes>>` |
//! | [`FallbackLayer::response`] | [`StaticResponse`] | a fixed response |
//! | [`FallbackLayer::last_good`] | [`LastGood`] | the last good response for the request's key |
//! | [`FallbackLayer::from_source`] | any [`FallbackSource`] | e.g. kinds chained with [`or`](FallbackSource::or) |
//!
//! Closures and services answer with `http::Response<T>` where `T: Into<Bytes>` (a service:
//! `Response<Bytes>`); closures may also return a `Result` of one. Kinds chain:
//! `FallbackLayer::last_good(store).or(StaticResponse::new(bestsellers))` replays the last good
//! list, or the static one when none is stored yet.
//!
//! # Triggers
//!
//! Each trigger is switched with [`FallbackLayer::trigger`]; see [`Triggers`] for what fires
//! each one. On by default: `error`, `timeout`, `status` (by the classifier, default
//! [`ServerErrorsAsFailures`](crate::classify::ServerErrorsAsFailures): 500, 502, 503, 504) and
//! `circuit-open`. Off by default: `rejected` (any other bulwark rejection).
//!
//! Timeouts are found in the inner error when it is a `BoxError` (what `tower::timeout` and most
//! tower middleware return), a `std::io::Error`, or an `Elapsed` itself, anywhere in the source
//! chain. Other error types fall back as `error`; map them into a `BoxError` inside this layer
//! (`MapErrLayer`) to have their timeouts seen.
//!
//! Put this layer *outside* what it should watch: outside a circuit breaker, to see its
//! circuit-open answers, and outside a `tower::timeout::TimeoutLayer`, to see its timeouts.
//!
//! # The answer
//!
//! The fallback's answer carries the header `bulwark-fallback: <reason>` ([`BULWARK_FALLBACK`];
//! the request log logs it) and the [`FallbackReason`] as a response extension. Its body is a
//! [`ResponseBody::full`](crate::body::ResponseBody::full); responses that pass through keep the
//! inner body in [`ResponseBody::new`](crate::body::ResponseBody::new).
//!
//! **A failing fallback never hides the original failure.** When the fallback has no answer —
//! its closure returns `Err` or panics, its service fails, answers 5xx or is rejected, no last
//! good response is stored — the inner service's own result (its response, or its `Err`) is
//! returned, and both are logged.
//!
//! The service's error type is the inner one: an infallible axum stack stays infallible. An
//! inner `Err` answered by the fallback becomes `Ok(answer)`; if the fallback fails, the `Err`
//! is returned as it was.
//!
//! # What the fallback sees of the request
//!
//! The inner service consumes the request, body included. By default ([`HeadOnly`]) the layer
//! keeps the method, URI and version (cheap clones, no allocation), and a closure or service
//! fallback gets them in a `Request<Bytes>` with an **empty body**. Headers are kept only with
//! [`capture_headers(true)`](FallbackLayer::capture_headers) (cloning a header map allocates).
//! With [`buffer_body(limit)`](FallbackLayer::buffer_body) ([`BufferBody`]) the body is read
//! first, the inner service gets a copy, and so does the fallback.
//!
//! # Defaults
//!
//! | setting | default |
//! | --- | --- |
//! | triggers | `error`, `timeout`, `status`, `circuit-open` |
//! | classifier | [`ServerErrorsAsFailures`](crate::classify::ServerErrorsAsFailures) |
//! | request headers for the fallback | not captured |
//! | request body for the fallback | none ([`HeadOnly`]) |
//! | [`LastGood`] capacity / body limit / key | 1 000 entries / 64 KiB / [`MethodAndUri`] (`GET` and `HEAD` only) |
//!
//! # Hooks, events and metrics
//!
//! When a fallback answered: [`OnFallback`] (set with [`FallbackLayer::on_fallback`]) is called
//! with the reason, a `WARN` event `fallback answered` is emitted with target
//! `bulwark::fallback` (fields `reason`, `status`, `original.status` or `original.error`), and
//! `bulwark_fallbacks_total{reason, outcome="answered"}` is incremented. When it failed: an
//! `ERROR` event `fallback failed; returning the original result` (with `fallback.error` too)
//! and `outcome="failed"`; the hook is not called.

mod body_mode;
mod decide;
mod future;
mod hooks;
mod last_good;
mod layer;
mod metrics;
mod service;
mod source;
mod trigger;

pub use self::{
    body_mode::{BufferBody, HeadOnly},
    future::ResponseFuture,
    hooks::OnFallback,
    last_good::{
        DEFAULT_CAPACITY, DEFAULT_MAX_BODY_BYTES, LastGood, LastGoodBuilder, LastGoodKey,
        MethodAndUri,
    },
    layer::FallbackLayer,
    service::Fallback,
    source::{
        FallbackOutput, FallbackSource, Or, ReasonFn, RequestFn, ServiceFallback, StaticResponse,
    },
    trigger::Triggers,
};
pub use crate::marker::{BULWARK_FALLBACK, FallbackReason};
