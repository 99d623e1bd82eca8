//! The breaker for any [`Service`], not only HTTP: rejections are errors.
//!
//! Same state machine, configuration and handle as the HTTP layer. Because a non-HTTP service
//! has no response to answer with, an open breaker fails the call with a [`CircuitOpen`] error
//! (find it with `downcast_ref` on the [`BoxError`]), and the service's error type becomes
//! `BoxError`. The default classifier, [`ErrorsAsFailures`], fails every `Err`.
//!
//! ```
//! use bulwark::circuit_breaker::{
//!     CircuitBreakerConfig,
//!     generic::{CircuitOpen, GenericCircuitBreakerLayer},
//! };
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = CircuitBreakerConfig::builder().count_window(2).minimum_calls(2).build().unwrap();
//! let layer = GenericCircuitBreakerLayer::new(config);
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

/// The former name of [`GenericCircuitBreakerLayer`], kept so that code written against it
/// still builds.
#[deprecated(
    since = "0.1.0",
    note = "renamed `GenericCircuitBreakerLayer`: `CircuitBreakerLayer` is the HTTP layer's name"
)]
pub type CircuitBreakerLayer<C = ErrorsAsFailures> = GenericCircuitBreakerLayer<C>;

/// The former name of [`GenericCircuitBreaker`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `GenericCircuitBreaker`: `CircuitBreaker` is the HTTP service's name"
)]
pub type CircuitBreaker<S, C = ErrorsAsFailures> = GenericCircuitBreaker<S, C>;

/// The former name of [`GenericResponseFuture`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `GenericResponseFuture`: `ResponseFuture` is the HTTP service's future"
)]
pub type ResponseFuture<F, C> = GenericResponseFuture<F, C>;

/// The breaker layer for any service: an open breaker fails the call with [`CircuitOpen`]. See
/// the [module docs](self).
#[must_use]
pub struct GenericCircuitBreakerLayer<C = ErrorsAsFailures> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl GenericCircuitBreakerLayer {
    /// A breaker with `config` that fails every `Err`.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(config)),
            classifier: ErrorsAsFailures,
        }
    }
}

impl<C> GenericCircuitBreakerLayer<C> {
    /// Decides outcomes with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> GenericCircuitBreakerLayer<C2> {
        GenericCircuitBreakerLayer {
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

impl<C: Clone> Clone for GenericCircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for GenericCircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericCircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for GenericCircuitBreakerLayer<C> {
    type Service = GenericCircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        GenericCircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The generic breaker service.
#[must_use]
pub struct GenericCircuitBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
}

crate::macros::define_inner_service_accessors!(GenericCircuitBreaker<S, C>);

impl<S: Clone, C: Clone> Clone for GenericCircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C> fmt::Debug for GenericCircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenericCircuitBreaker")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for GenericCircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GenericResponseFuture<S::Future, C>;

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
        GenericResponseFuture { kind }
    }
}

pin_project! {
    /// Response future of [`GenericCircuitBreaker`].
    pub struct GenericResponseFuture<F, C> {
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

impl<F, C> fmt::Debug for GenericResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GenericResponseFuture")
    }
}

impl<F, C, T, E> Future for GenericResponseFuture<F, C>
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
