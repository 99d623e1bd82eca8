use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;

use super::{
    LogBody, RequestId, X_REQUEST_ID,
    body::{Markers, Tracked},
};

pin_project! {
    /// Response future of [`RequestLog`](super::RequestLog).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<State>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the head was ready: the request still gets its event and its
            // histogram sample, marked as cancelled.
            if let Some(State { tracked: Some(c), .. }) = this.project().state.take() {
                c.cancelled();
            }
        }
    }
}

struct State {
    id: RequestId,
    /// Only when a subscriber listens or metrics are on: otherwise the request is not timed
    /// and nothing is shared with the layer, so the pass-through path clones no `Arc`.
    tracked: Option<Tracked>,
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
            .and_then(|c| c.log.as_ref())
            .map(|log| &log.info.span);
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
            (Ok(mut res), Some(mut c)) => {
                // Time to first byte and the markers are for the log line only.
                c.status = res.status();
                if let Some(log) = &mut c.log {
                    log.head = c.start.elapsed();
                    log.markers = Markers::of(&res);
                    log.empty = res.body().is_end_stream();
                }
                echo_id(&mut res, id);
                Ok(res.map(|body| LogBody::new(body, c)))
            }
            (Err(err), tracked) => {
                if let Some(c) = tracked {
                    c.failed(&err);
                }
                Err(err)
            }
        })
    }
}

/// Puts the request id on the response, in place of any the response carried: a cached or
/// replayed answer (or a proxied origin) may bring another request's id, and the client must
/// get the id its request was logged under.
#[inline]
fn echo_id<B>(res: &mut Response<B>, id: RequestId) {
    res.headers_mut()
        .insert(X_REQUEST_ID.clone(), id.into_header_value());
}
