//! The breaker for any [`Service`], not only HTTP: rejections are errors.
//!
//! Same state machine, configuration and handle as the HTTP layer. Because a non-HTTP service
//! has no response to answer with, an open breaker fails the call with a [`CircuitOpen`] error
//! (find it with `downcast_ref` on the [`BoxError`]), and the service's error type becomes
//! `BoxError`. The default classifier, [`ErrorsAsFailures`], fails every `Err`.
//!
//! ```
//! use bulwark::circuit_breaker::{CircuitBreakerConfig, generic::{CircuitBreakerLayer, CircuitOpen}};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = CircuitBreakerConfig::builder().count_window(2).minimum_calls(2).build().unwrap();
//! let layer = CircuitBreakerLayer::new(config);
//! let svc = ServiceBuilder::new()
//!     .layer(layer.clone())
//!     .service(service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("down")) }));
//!
//! for _ in 0..2 {
//!     assert!(svc.clone().oneshot(()).await.is_err());
//! }
//! let err = svc.oneshot(()).await.unwrap_err();
//! assert!(err.downcast_ref::<CircuitOpen>().is_some());
//! # }
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{
    CircuitBreakerConfig, CircuitBreakerHandle, StateChange,
    state::{Breaker, Permit},
};
use crate::{
    BoxError,
    classify::{Classify, ErrorsAsFailures},
};

/// The error of a call the breaker rejected.
#[derive(Debug, Clone)]
pub struct CircuitOpen {
    retry_after: Duration,
    breaker: Arc<str>,
}

impl CircuitOpen {
    /// The name of the breaker that refused the call.
    #[must_use]
    pub fn breaker(&self) -> &str {
        &self.breaker
    }

    /// When the breaker will let a probe through.
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker {:?} open; retry after {:?}",
            self.breaker, self.retry_after
        )
    }
}

impl std::error::Error for CircuitOpen {}

/// The generic breaker layer. See the [module docs](self).
#[must_use]
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A breaker with `config` that fails every `Err`.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(config)),
            classifier: ErrorsAsFailures,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Decides outcomes with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// Calls `hook` on every state change.
    pub fn on_state_change<F>(self, hook: F) -> Self
    where
        F: Fn(&StateChange) + Send + Sync + 'static,
    {
        self.breaker.set_on_state_change(Arc::new(hook));
        self
    }

    /// A handle to this layer's breaker.
    #[must_use]
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            breaker: self.breaker.clone(),
        }
    }
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The generic breaker service.
#[must_use]
pub struct CircuitBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
}

crate::macros::define_inner_service_accessors!(CircuitBreaker<S, C>);

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let kind = match self.breaker.acquire() {
            Ok(permit) => Kind::Called {
                future: self.inner.call(req),
                permit: Some(permit),
                classifier: self.classifier.clone(),
            },
            Err(retry_after) => Kind::Rejected {
                error: Some(CircuitOpen {
                    retry_after,
                    breaker: self.breaker.name().clone(),
                }),
            },
        };
        ResponseFuture { kind }
    }
}

pin_project! {
    /// Response future of the generic [`CircuitBreaker`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called { #[pin] future: F, permit: Option<Permit>, classifier: C },
        Rejected { error: Option<CircuitOpen> },
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

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
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(
                error.take().expect("polled after completion"),
            ))),
        }
    }
}
