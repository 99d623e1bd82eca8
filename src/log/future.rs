use std::{
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Method, Response, Uri};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::{Level, Span};

use super::{RequestId, X_REQUEST_ID};
use crate::Rejection;

static BULWARK_FALLBACK: HeaderName = HeaderName::from_static("bulwark-fallback");
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// What the completion event needs from the request; only gathered when someone listens.
pub(super) struct RequestInfo {
    pub(super) span: Span,
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) route: Option<HeaderValue>,
    pub(super) client: Option<IpAddr>,
    pub(super) user_agent: Option<HeaderValue>,
}

pin_project! {
    /// Response future of [`RequestLog`](super::RequestLog).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<RequestId>,
        info: Option<RequestInfo>,
        start: Instant,
        slow: Duration,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        id: RequestId,
        info: Option<RequestInfo>,
        start: Instant,
        slow: Duration,
    ) -> Self {
        Self {
            inner,
            id: Some(id),
            info,
            start,
            slow,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn header_str<'a>(res_headers: &'a http::HeaderMap, name: &HeaderName) -> Option<&'a str> {
    res_headers.get(name).and_then(|v| v.to_str().ok())
}

fn opt_str(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

/// `tracing` levels are constants in its macros; pick the macro at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!(target: "bulwark::log", $($rest)+),
            Level::WARN => tracing::warn!(target: "bulwark::log", $($rest)+),
            _ => tracing::info!(target: "bulwark::log", $($rest)+),
        }
    };
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.info {
            Some(info) => {
                let _entered = info.span.enter();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        let id = this.id.take().expect("polled after completion");
        let elapsed = this.start.elapsed();
        let result = result.map(|mut res| {
            res.headers_mut()
                .entry(&X_REQUEST_ID)
                .or_insert_with(|| id.header_value().clone());
            res
        });
        if let Some(info) = this.info.take() {
            let _entered = info.span.enter();
            let duration_ms = elapsed.as_secs_f64() * 1000.0;
            let method = info.method.as_str();
            let path = info.uri.path();
            let route = opt_str(info.route.as_ref());
            let client = info.client.map(tracing::field::display);
            let user_agent = opt_str(info.user_agent.as_ref());
            match &result {
                Ok(res) => {
                    let status = res.status();
                    let level = if status.is_server_error() {
                        Level::ERROR
                    } else if status.is_client_error() || elapsed > *this.slow {
                        Level::WARN
                    } else {
                        Level::INFO
                    };
                    let h = res.headers();
                    let rejection = res.extensions().get::<Rejection>().map(Rejection::kind);
                    let fallback = header_str(h, &BULWARK_FALLBACK);
                    let cache_status = header_str(h, &CACHE_STATUS);
                    let replayed = h.contains_key(&IDEMPOTENT_REPLAYED).then_some(true);
                    event_at!(
                        level,
                        {
                        http.request.method = method,
                        url.path = path,
                        http.route = route,
                        http.response.status_code = status.as_u16(),
                        client.address = client,
                        user_agent.original = user_agent,
                        request_id = id.as_str(),
                        duration_ms,
                        bulwark.rejection = rejection,
                        bulwark.fallback = fallback,
                        bulwark.cache_status = cache_status,
                        bulwark.replayed = replayed,
                        },
                        "request completed"
                    );
                }
                Err(err) => {
                    tracing::error!(
                        target: "bulwark::log",
                        {
                        http.request.method = method,
                        url.path = path,
                        http.route = route,
                        client.address = client,
                        user_agent.original = user_agent,
                        request_id = id.as_str(),
                        duration_ms,
                        error.r#type = "_OTHER",
                        error.message = %err,
                        },
                        "request failed"
                    );
                }
            }
        }
        Poll::Ready(result)
    }
}
