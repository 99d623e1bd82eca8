use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::AtomicU64},
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
    log: Option<Box<LogInfo>>,
    metrics: Option<MetricInfo>,
    start: Instant,
    config: Arc<Config>,
    sampled: Arc<AtomicU64>,
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        id: RequestId,
        log: Option<Box<LogInfo>>,
        metrics: Option<MetricInfo>,
        start: Instant,
        config: Arc<Config>,
        sampled: Arc<AtomicU64>,
    ) -> Self {
        Self {
            inner,
            state: Some(State {
                id,
                log,
                metrics,
                start,
                config,
                sampled,
            }),
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
        let result = match this.state.as_ref().and_then(|s| s.log.as_ref()) {
            Some(log) => {
                let _entered = log.span.enter();
                ready!(this.inner.poll(cx))
            }
            None => ready!(this.inner.poll(cx)),
        };
        let state = this.state.take().expect("polled after completion");
        let head = state.start.elapsed();
        Poll::Ready(match result {
            Ok(mut res) => {
                res.headers_mut()
                    .entry(&X_REQUEST_ID)
                    .or_insert_with(|| state.id.header_value().clone());
                if state.log.is_none() && state.metrics.is_none() {
                    Ok(res.map(LogBody::passthrough))
                } else {
                    let completion = Completion {
                        status: res.status(),
                        markers: Markers::of(&res),
                        id: state.id,
                        log: state.log,
                        metrics: state.metrics,
                        start: state.start,
                        head,
                        bytes: 0,
                        empty: res.body().is_end_stream(),
                        config: state.config,
                        sampled: state.sampled,
                    };
                    Ok(res.map(|body| LogBody::new(body, completion)))
                }
            }
            Err(err) => {
                super::body::log_error(&state.id, state.log.as_deref(), head, &err);
                Err(err)
            }
        })
    }
}
