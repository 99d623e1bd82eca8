use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;

use super::state::Permit;
use crate::{body::ResponseBody, classify::Classify};

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker): the inner call with its
    /// permit, or the 503 answer. Dropping it before it completes records nothing (a cancelled
    /// call says nothing about the service) and frees a half-open probe slot.
    pub struct ResponseFuture<F, C, B> {
        #[pin]
        kind: Kind<F, C, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C, B> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classifier: C,
        },
        Rejected {
            response: Option<Response<ResponseBody<B>>>,
        },
    }
}

impl<F, C, B> ResponseFuture<F, C, B> {
    pub(super) fn called(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classifier,
            },
        }
    }

    pub(super) fn rejected(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, C, B> fmt::Debug for ResponseFuture<F, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Called { .. } => "ResponseFuture::Called",
            Kind::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify<Response<B>, E>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(classifier.classify(result.as_ref()));
                }
                Poll::Ready(result.map(|res| res.map(ResponseBody::new)))
            }
            KindProj::Rejected { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}
