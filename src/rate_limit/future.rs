use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, Response};
use pin_project_lite::pin_project;

use crate::{RATELIMIT, RateLimitInfo, body::ResponseBody};

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit) with the in-memory store: the inner
    /// call (adding the `RateLimit` headers when the layer is asked to), or the 429 answer.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Allowed {
            #[pin]
            future: F,
            headers: Option<RateLimitInfo>,
        },
        // Boxed: the allowed path's future (moved through every outer layer) is then the
        // inner future and the headers, not the size of a whole response.
        Rejected {
            response: Option<Box<Response<ResponseBody<B>>>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn allowed(future: F, headers: Option<RateLimitInfo>) -> Self {
        Self {
            kind: Kind::Allowed { future, headers },
        }
    }

    pub(super) fn rejected(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(Box::new(response)),
            },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Allowed { .. } => "ResponseFuture::Allowed",
            Kind::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Allowed { future, headers } => {
                let (mut parts, body) = ready!(future.poll(cx))?.into_parts();
                if let Some(info) = headers.take() {
                    add_headers(&mut parts.headers, &info);
                }
                Poll::Ready(Ok(Response::from_parts(parts, ResponseBody::new(body))))
            }
            KindProj::Rejected { response } => {
                Poll::Ready(Ok(*response.take().expect("polled after completion")))
            }
        }
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields on an allowed response, unless an inner layer
/// (a more specific limiter) already set them.
pub(super) fn add_headers(headers: &mut HeaderMap, info: &RateLimitInfo) {
    if !headers.contains_key(&RATELIMIT) {
        info.write_headers(headers);
    }
}

#[cfg(feature = "redis")]
pub use self::redis::RedisResponseFuture;

#[cfg(feature = "redis")]
mod redis {
    use super::*;

    use http::Request;
    use tower_service::Service;

    use crate::{ResponseForRejection, rate_limit::limiter::Verdict};

    pin_project! {
        /// Response future of [`RateLimit`](crate::rate_limit::RateLimit) with the Redis
        /// store: waits for the store's decision (one script call, bounded by the
        /// [`Redis`](crate::redis::Redis) call timeout), then calls the inner service, which
        /// was polled ready before the decision began, or answers 429 or 503.
        ///
        /// The decision is a boxed future: the Redis client's calls are `async fn`s, whose
        /// types cannot be named. That one allocation sits next to a network round trip.
        pub struct RedisResponseFuture<S, ReqB, ResB, R>
        where
            S: Service<Request<ReqB>>,
        {
            #[pin]
            state: State<S, ReqB, ResB, R>,
        }
    }

    pin_project! {
        #[project = StateProj]
        enum State<S, ReqB, ResB, R>
        where
            S: Service<Request<ReqB>>,
        {
            Deciding {
                decision: crate::rate_limit::store::redis::Decision,
                inner: Option<S>,
                req: Option<Request<ReqB>>,
                on_rejection: R,
                want_headers: bool,
            },
            Called {
                #[pin]
                future: S::Future,
                headers: Option<RateLimitInfo>,
            },
            Answered {
                response: Option<Response<ResponseBody<ResB>>>,
            },
        }
    }

    impl<S, ReqB, ResB, R> RedisResponseFuture<S, ReqB, ResB, R>
    where
        S: Service<Request<ReqB>>,
    {
        pub(crate) fn deciding(
            decision: crate::rate_limit::store::redis::Decision,
            inner: S,
            req: Request<ReqB>,
            on_rejection: R,
            want_headers: bool,
        ) -> Self {
            Self {
                state: State::Deciding {
                    decision,
                    inner: Some(inner),
                    req: Some(req),
                    on_rejection,
                    want_headers,
                },
            }
        }

        pub(crate) fn called(future: S::Future) -> Self {
            Self {
                state: State::Called {
                    future,
                    headers: None,
                },
            }
        }

        pub(crate) fn answered(response: Response<ResponseBody<ResB>>) -> Self {
            Self {
                state: State::Answered {
                    response: Some(response),
                },
            }
        }
    }

    impl<S, ReqB, ResB, R> fmt::Debug for RedisResponseFuture<S, ReqB, ResB, R>
    where
        S: Service<Request<ReqB>>,
    {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self.state {
                State::Deciding { .. } => "RedisResponseFuture::Deciding",
                State::Called { .. } => "RedisResponseFuture::Called",
                State::Answered { .. } => "RedisResponseFuture::Answered",
            })
        }
    }

    impl<S, ReqB, ResB, R> Future for RedisResponseFuture<S, ReqB, ResB, R>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        R: ResponseForRejection,
    {
        type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut state = self.project().state;
            loop {
                match state.as_mut().project() {
                    StateProj::Deciding {
                        decision,
                        inner,
                        req,
                        on_rejection,
                        want_headers,
                    } => {
                        let verdict = ready!(decision.as_mut().poll(cx));
                        let next = match verdict {
                            Verdict::Allowed(info) => {
                                let (Some(mut svc), Some(req)) = (inner.take(), req.take()) else {
                                    panic!("polled after completion");
                                };
                                State::Called {
                                    future: svc.call(req),
                                    headers: info.filter(|_| *want_headers),
                                }
                            }
                            Verdict::Rejected(rejection) => State::Answered {
                                response: Some(rejection.into_response_with(on_rejection)),
                            },
                        };
                        state.set(next);
                    }
                    StateProj::Called { future, headers } => {
                        let mut res = ready!(future.poll(cx))?;
                        if let Some(info) = headers.take() {
                            add_headers(res.headers_mut(), &info);
                        }
                        return Poll::Ready(Ok(res.map(ResponseBody::new)));
                    }
                    StateProj::Answered { response } => {
                        return Poll::Ready(Ok(response.take().expect("polled after completion")));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allowed path's future is the inner future and the headers (it is moved through
    /// every outer layer's future); a 429 is boxed rather than making every future its size.
    #[test]
    fn the_future_is_not_the_size_of_a_response() {
        type Inner = std::future::Pending<Result<Response<String>, std::convert::Infallible>>;
        let allowed = size_of::<Inner>() + size_of::<Option<RateLimitInfo>>();
        assert!(
            size_of::<ResponseFuture<Inner, String>>() <= allowed + 8,
            "{} > {allowed} + 8",
            size_of::<ResponseFuture<Inner, String>>()
        );
    }
}
