use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::{future::ResponseFuture, state::Breaker};
use crate::{
    DefaultResponseForRejection, Rejection, ResponseForRejection,
    body::ResponseBody,
    classify::{Classify, ServerErrorsAsFailures},
};

/// The service made by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
#[must_use]
pub struct CircuitBreaker<S, C = ServerErrorsAsFailures, R = DefaultResponseForRejection> {
    pub(super) inner: S,
    pub(super) breaker: Arc<Breaker>,
    pub(super) classifier: C,
    pub(super) on_rejection: R,
}

crate::macros::define_inner_service_accessors!(CircuitBreaker<S, C, R>);

impl<S: Clone, C: Clone, R: Clone> Clone for CircuitBreaker<S, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            on_rejection: self.on_rejection.clone(),
        }
    }
}

impl<S, C, R> std::fmt::Debug for CircuitBreaker<S, C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C, R, ReqB, ResB> Service<Request<ReqB>> for CircuitBreaker<S, C, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    C: Classify<Response<ResB>, S::Error>,
    R: ResponseForRejection,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.breaker.acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone())
            }
            Err(retry_after) => ResponseFuture::rejected(
                Rejection::circuit_open_by(self.breaker.name().clone(), retry_after)
                    .into_response_with(&self.on_rejection),
            ),
        }
    }
}
