//! The response future and the pass-through body of [`Idempotency`](super::Idempotency).

use std::{
    any::Any,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

pin_project! {
    /// The body of a response the idempotency layer passed on without keeping it whole: the
    /// inner service's body, or, for a response found too large to store while it was read,
    /// the part already read followed by the rest.
    pub struct PassBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain { #[pin] body: B },
        Rest { prefix: Option<Bytes>, body: Pin<Box<B>> },
        Failed { prefix: Option<Bytes>, error: Option<Box<dyn Any + Send + Sync>> },
    }
}

impl<B> PassBody<B> {
    pub(crate) fn new(body: B) -> Self {
        Self {
            kind: Kind::Plain { body },
        }
    }

    pub(crate) fn rest(prefix: Bytes, body: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Rest {
                prefix: (!prefix.is_empty()).then_some(prefix),
                body,
            },
        }
    }
}

impl<B> PassBody<B> {
    /// What was read of a body that then failed with `error` (a `B::Error`), which is passed
    /// on after the bytes read.
    pub(crate) fn failed<E: Send + Sync + 'static>(prefix: Bytes, error: E) -> Self {
        Self {
            kind: Kind::Failed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                error: Some(Box::new(error)),
            },
        }
    }
}

impl<B> fmt::Debug for PassBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "Plain",
            Kind::Rest { .. } => "Rest",
            Kind::Failed { .. } => "Failed",
        };
        f.debug_struct("PassBody").field("kind", &kind).finish()
    }
}

impl<B> Body for PassBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Plain { body } => body.poll_frame(cx),
            KindProj::Rest { prefix, body } => match prefix.take() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                None => body.as_mut().poll_frame(cx),
            },
            KindProj::Failed { prefix, error } => match prefix.take() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                // Always a `B::Error`: `failed` is only called with one.
                None => Poll::Ready(
                    error
                        .take()
                        .and_then(|e| e.downcast::<B::Error>().ok())
                        .map(|e| Err(*e)),
                ),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Rest { prefix, body } => prefix.is_none() && body.is_end_stream(),
            Kind::Failed { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Rest { prefix, body } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
            Kind::Failed { prefix, .. } => {
                SizeHint::with_exact(prefix.as_ref().map_or(0, |p| p.len() as u64))
            }
        }
    }
}

/// The layer's answer to a keyed request, boxed.
pub(crate) type BoxAnswer<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<PassBody<B>>>, E>> + Send>>;

pin_project! {
    /// Response future of [`Idempotency`](super::Idempotency): the inner future for requests
    /// the layer passes through (no allocation), a boxed future for keyed requests, or an
    /// answer ready at once (a bad or missing key).
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        Inner { #[pin] future: F },
        Boxed { future: BoxAnswer<B, E> },
        Ready { response: Option<Response<ResponseBody<PassBody<B>>>> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(crate) fn boxed(future: BoxAnswer<B, E>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }

    pub(crate) fn ready(response: Response<ResponseBody<PassBody<B>>>) -> Self {
        Self {
            state: State::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::Boxed { .. } => "Boxed",
            State::Ready { .. } => "Ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<PassBody<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(|b| ResponseBody::new(PassBody::new(b)))))
            }
            StateProj::Boxed { future } => future.as_mut().poll(cx),
            StateProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
