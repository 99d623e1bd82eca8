//! [`RequestLogLayer`]: one `tracing` span and one completion event per request, with a request
//! id on the request and the response.
//!
//! Compared with tower-http's `TraceLayer`, this layer knows bulwark's decisions: the completion
//! event carries the [`Rejection`](crate::Rejection) kind, the fallback reason, the cache status
//! and whether the response was an idempotent replay, and its level follows the outcome.
//!
//! | event field | from |
//! | --- | --- |
//! | `http.request.method` | the request method (`_OTHER` for a non-standard one, then also `http.request.method_original`) |
//! | `url.scheme`, `url.path` | the request's scheme and path |
//! | `url.query` | the query, with the values of secret-looking parameters redacted |
//! | `http.route` | axum's `MatchedPath` (feature `axum`), e.g. `/payments/{id}` |
//! | `server.address`, `server.port` | the `Host` (or the URI's authority): the name (an IPv6 address without brackets), and the port when it has one |
//! | `network.protocol.version` | the HTTP version |
//! | `http.response.status_code` | the response status |
//! | `http.response.body.size`, `http.response.body.complete` | bytes sent, and whether the body ended |
//! | `client.address` | the peer IP (see [`key::peer_ip`](crate::key::peer_ip)) |
//! | `user_agent.original` | the `User-Agent` header |
//! | `http.request.headers` | the request headers, secrets redacted, with [`log_request_headers`](RequestLogLayer::log_request_headers) |
//! | `request_id` | the [`RequestId`] |
//! | `trace_id`, `span_id` | from a valid `traceparent` |
//! | `duration_ms` | time until the response body ended (or failed, or was dropped) |
//! | `time_to_first_byte_ms` | time until the response head was ready |
//! | `error.type` | `timeout` or `_OTHER` for an inner error, `cancelled` for a request dropped before its response head, `body` for a failed body, the status for a 5xx |
//! | `error.message` | the inner service's error, when it returned one |
//! | `bulwark.rejection` | [`Rejection::kind`](crate::Rejection::kind) when a layer rejected |
//! | `bulwark.fallback` | the `bulwark-fallback` header, when a fallback answered |
//! | `bulwark.cache_status` | the `Cache-Status` header |
//! | `bulwark.replayed` | `true` for idempotent replays |
//!
//! The span (`request`, target `bulwark::log`, level `INFO`) is entered while the inner service
//! runs, so the inner service's own events can be grouped by it; it carries `otel.name` (method
//! and route), `otel.kind`, `request_id`, and `trace_id`/`span_id` from a valid `traceparent`.
//! The completion event is written outside the span and carries every field itself, so a
//! subscriber that writes the current span with each event (tracing-subscriber's JSON format
//! does) does not write the request's fields twice.
//!
//! The event is `request completed` when the response's body ended (or failed, or was dropped),
//! `request failed` when the inner service returned an error, and `request cancelled` when the
//! response future was dropped before the head was ready (the client went away, or an outer
//! timeout gave up); the last two have no status code and are in the duration histogram under
//! `status_class="error"`.
//!
//! Level: `ERROR` for 5xx and inner errors, `WARN` for 4xx, cancelled requests and requests
//! slower than the slow threshold (default 1 s), `INFO` otherwise. Events have target `bulwark::log`; when no
//! subscriber listens to it, the layer only handles the request id.
//!
//! # Request ids
//!
//! An incoming `x-request-id` is kept only if it is 1 to 128 characters of `A-Z a-z 0-9 . _ : -`;
//! otherwise a UUIDv7 is generated. The id is set on the request (header and [`RequestId`]
//! extension) before the inner service runs, and echoed on the response.
//!
//! ```
//! use bulwark::log::{RequestId, RequestLogLayer};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestLogLayer::new())
//!     .service(service_fn(|req: Request<String>| async move {
//!         let id = req.extensions().get::<RequestId>().unwrap().to_string();
//!         Ok::<_, std::convert::Infallible>(Response::new(id))
//!     }));
//!
//! let res = svc
//!     .oneshot(Request::builder().header("x-request-id", "abc-1").body(String::new()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(res.headers()["x-request-id"], "abc-1");
//! # }
//! ```

mod body;
mod future;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod layer;
mod metrics;
mod request_id;
mod route;
mod service;
mod trace_context;

pub use self::{
    body::LogBody,
    future::ResponseFuture,
    layer::RequestLogLayer,
    request_id::{DefaultMakeRequestId, MakeRequestId, RequestId, X_REQUEST_ID},
    service::RequestLog,
};
