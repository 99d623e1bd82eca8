use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::{
    LogBody, RequestId, X_REQUEST_ID,
    body::{Completion, LogInfo, Markers, MetricInfo},
    layer::Config,
};

pin_project! {
    /// Response future of [`RequestLog`](super::RequestLog).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<State>,
    }
}

struct State {
    id: RequestId,
    /// Only when a subscriber listens or metrics are on: otherwise the request is not timed
    /// and nothing is shared with the layer, so the pass-through path clones no `Arc`.
    tracked: Option<Tracked>,
}

/// What a logged or measured request carries to its completion.
pub(super) struct Tracked {
    pub(super) log: Option<Box<LogInfo>>,
    pub(super) metrics: Option<MetricInfo>,
    pub(super) start: Instant,
    pub(super) config: Arc<Config>,
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, id: RequestId, tracked: Option<Tracked>) -> Self {
        Self {
            inner,
            state: Some(State { id, tracked }),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("id", &self.state.as_ref().map(|s| &s.id))
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    E: fmt::Display + 'static,
{
    type Output = Result<Response<LogBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let span = this
            .state
            .as_ref()
            .and_then(|s| s.tracked.as_ref())
            .and_then(|t| t.log.as_ref())
            .map(|log| &log.span);
        let result = match span {
            Some(span) => {
                let _entered = span.enter();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        let State { id, tracked } = this.state.take().expect("polled after completion");
        Poll::Ready(match (result, tracked) {
            (Ok(mut res), None) => {
                echo_id(&mut res, id);
                Ok(res.map(LogBody::passthrough))
            }
            (Ok(mut res), Some(t)) => {
                // Time to first byte and the markers are for the log line only.
                let (head, (markers, has_id)) = if t.log.is_some() {
                    (t.start.elapsed(), Markers::of(&res))
                } else {
                    let has_id = res.headers().contains_key(&X_REQUEST_ID);
                    (std::time::Duration::ZERO, (Markers::default(), has_id))
                };
                let completion = Completion {
                    status: res.status(),
                    markers,
                    id: id.clone(),
                    log: t.log,
                    metrics: t.metrics,
                    start: t.start,
                    head,
                    bytes: 0,
                    empty: res.body().is_end_stream(),
                    config: t.config,
                };
                if !has_id {
                    set_id(&mut res, id);
                }
                Ok(res.map(|body| LogBody::new(body, completion)))
            }
            (Err(err), tracked) => {
                if let Some(t) = tracked {
                    super::body::log_error(&id, t.log.as_deref(), t.start.elapsed(), &err);
                }
                Err(err)
            }
        })
    }
}

/// Puts the request id on the response, unless the inner service set one itself.
#[inline]
fn echo_id<B>(res: &mut Response<B>, id: RequestId) {
    if !res.headers().contains_key(&X_REQUEST_ID) {
        set_id(res, id);
    }
}

/// Puts the request id on a response that has none.
#[inline]
fn set_id<B>(res: &mut Response<B>, id: RequestId) {
    res.headers_mut()
        .insert(X_REQUEST_ID.clone(), id.into_header_value());
}
