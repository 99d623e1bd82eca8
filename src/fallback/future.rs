use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::{
    FallbackSource, OnFallback,
    decide::{BoxAnswer, Keeping, Next, Shared, after_inner, kept},
};
use crate::{
    body::{Collect, ResponseBody},
    classify::Classify,
};

pin_project! {
    /// Response future of [`Fallback`](super::Fallback).
    ///
    /// While the inner service works it is the inner future plus what the fallback kept of the
    /// request, and while a good response is read to be kept, that response's body: no
    /// allocation. Only a fallback moves it to a boxed state.
    pub struct ResponseFuture<Fut, B, E, F: FallbackSource, C, H> {
        #[pin]
        state: State<Fut, B, E, F, C, H>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, B, E, F: FallbackSource, C, H> {
        Inner {
            #[pin]
            future: Fut,
            pending: Option<Pending<F, C, H>>,
        },
        Keeping {
            #[pin]
            body: B,
            head: Option<http::response::Parts>,
            collect: Collect,
            pending: Option<Pending<F, C, H>>,
        },
        Boxed {
            future: BoxAnswer<B, E>,
        },
    }
}

struct Pending<F: FallbackSource, C, H> {
    shared: Arc<Shared<F, C, H>>,
    memo: F::Memo,
}

impl<Fut, B, E, F: FallbackSource, C, H> ResponseFuture<Fut, B, E, F, C, H> {
    pub(super) fn inner(future: Fut, shared: Arc<Shared<F, C, H>>, memo: F::Memo) -> Self {
        Self {
            state: State::Inner {
                future,
                pending: Some(Pending { shared, memo }),
            },
        }
    }

    pub(super) fn boxed(future: BoxAnswer<B, E>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }
}

impl<Fut, B, E, F: FallbackSource, C, H> fmt::Debug for ResponseFuture<Fut, B, E, F, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::Keeping { .. } => "Keeping",
            State::Boxed { .. } => "Boxed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<Fut, B, E, F, C, H> Future for ResponseFuture<Fut, B, E, F, C, H>
where
    Fut: Future<Output = Result<Response<B>, E>>,
    F: FallbackSource,
    C: Classify<Response<B>, E>,
    H: OnFallback,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: fmt::Display,
    E: fmt::Display + Send + 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner { future, pending } => {
                    let result = ready!(future.poll(cx));
                    let Pending { shared, memo } = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match after_inner(&shared, memo, result, Bytes::new()) {
                        Next::Ready(out) => return Poll::Ready(out),
                        Next::Later(future) => State::Boxed { future },
                        Next::Keep(Keeping {
                            head,
                            body,
                            collect,
                            memo,
                            request_body: _,
                        }) => State::Keeping {
                            body,
                            head: Some(head),
                            collect,
                            pending: Some(Pending { shared, memo }),
                        },
                    }
                }
                StateProj::Keeping {
                    body,
                    head,
                    collect,
                    pending,
                } => {
                    let buffered = ready!(collect.poll(body, cx)).map_err(|err| err.to_string());
                    let (Some(head), Some(Pending { shared, memo })) =
                        (head.take(), pending.take())
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    match kept(&shared, memo, head, buffered, Bytes::new()) {
                        Next::Ready(out) => return Poll::Ready(out),
                        Next::Later(future) => State::Boxed { future },
                    }
                }
                StateProj::Boxed { future } => return future.as_mut().poll(cx),
            };
            self.as_mut().project().state.set(next);
        }
    }
}
