use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

use super::{invalidate::InvalidationTarget, respond::bypassed, shared::Shared};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`Cache`](super::Cache).
    ///
    /// Requests with other methods than `GET` and `HEAD` go straight to the inner service through
    /// an unboxed variant; a successful unsafe one then waits for its invalidation. `GET` and
    /// `HEAD` that find a fresh entry in a store answering at once (the memory store) are answered
    /// without boxing; the others run the cache's asynchronous lookup, coalescing and storing in a
    /// boxed future.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Forward {
            #[pin]
            future: F,
            shared: Arc<Shared>,
            target: Option<InvalidationTarget>,
        },
        Bypass {
            #[pin]
            future: F,
            shared: Arc<Shared>,
            detail: &'static str,
        },
        Invalidating {
            invalidation: BoxFuture<()>,
            response: Option<Response<ResponseBody<B>>>,
        },
        Cached {
            future: BoxFuture<Result<Response<ResponseBody<B>>, E>>,
        },
        Ready {
            response: Option<Response<ResponseBody<B>>>,
        },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(super) fn forward(
        future: F,
        shared: Arc<Shared>,
        target: Option<InvalidationTarget>,
    ) -> Self {
        Self {
            kind: Kind::Forward {
                future,
                shared,
                target,
            },
        }
    }

    /// A `GET` or `HEAD` the cache does not handle (its key hook declined): straight to the
    /// inner service, unboxed, then marked `fwd=bypass` with `detail`.
    pub(super) fn bypass(future: F, shared: Arc<Shared>, detail: &'static str) -> Self {
        Self {
            kind: Kind::Bypass {
                future,
                shared,
                detail,
            },
        }
    }

    /// An answer made at once (a fresh hit found without waiting).
    pub(super) fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(super) fn cached(future: BoxFuture<Result<Response<ResponseBody<B>>, E>>) -> Self {
        Self {
            kind: Kind::Cached { future },
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Forward { .. } => "ResponseFuture::Forward",
            Kind::Bypass { .. } => "ResponseFuture::Bypass",
            Kind::Invalidating { .. } => "ResponseFuture::Invalidating",
            Kind::Cached { .. } => "ResponseFuture::Cached",
            Kind::Ready { .. } => "ResponseFuture::Ready",
        })
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Bypass {
                    future,
                    shared,
                    detail,
                } => {
                    let res = ready!(future.poll(cx))?;
                    let (parts, body) = res.into_parts();
                    return Poll::Ready(Ok(bypassed(
                        shared,
                        parts,
                        ResponseBody::new(body),
                        detail,
                    )));
                }
                KindProj::Forward {
                    future,
                    shared,
                    target,
                } => {
                    let res = ready!(future.poll(cx))?;
                    let (mut parts, body) = res.into_parts();
                    InvalidationTarget::report(shared, &mut parts);
                    let res = Response::from_parts(parts, ResponseBody::new(body));
                    let success = res.status().is_success() || res.status().is_redirection();
                    match target.take() {
                        Some(target) if success => {
                            let keys = target.keys(shared, res.headers());
                            let shared = shared.clone();
                            let invalidation: BoxFuture<()> =
                                Box::pin(async move { shared.invalidate(&keys).await });
                            this.kind.set(Kind::Invalidating {
                                invalidation,
                                response: Some(res),
                            });
                        }
                        _ => return Poll::Ready(Ok(res)),
                    }
                }
                KindProj::Invalidating {
                    invalidation,
                    response,
                } => {
                    ready!(invalidation.as_mut().poll(cx));
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
                KindProj::Cached { future } => return future.as_mut().poll(cx),
                KindProj::Ready { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
            }
        }
    }
}
