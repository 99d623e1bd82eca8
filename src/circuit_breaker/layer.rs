use std::{num::NonZeroU64, sync::Arc};

use tower_layer::Layer;

use super::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerHandle, KeyedCircuitBreakerLayer,
    StateChange, state::Breaker,
};
use crate::{DefaultResponseForRejection, classify::ServerErrorsAsFailures};

/// Stops calls to a failing service. See the [module docs](super).
///
/// The breaker is created with the layer: every clone of the layer and every service it makes
/// (one per axum route, one per hyper connection) share it. Build two layers for two breakers.
#[must_use]
pub struct CircuitBreakerLayer<C = ServerErrorsAsFailures, R = DefaultResponseForRejection> {
    pub(super) breaker: Arc<Breaker>,
    pub(super) classifier: C,
    pub(super) on_rejection: R,
}

impl CircuitBreakerLayer {
    /// A breaker with `config`, the default classifier and the default 503 answer.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(config)),
            classifier: ServerErrorsAsFailures::new(),
            on_rejection: DefaultResponseForRejection,
        }
    }

    /// One breaker per key found by `extractor` (an upstream host, a route, a tenant), each with
    /// `config`, keeping at most `max_keys` of them. See [`KeyedCircuitBreakerLayer`].
    ///
    /// ```
    /// use std::num::NonZeroU64;
    /// use bulwark::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// use http::Request;
    ///
    /// // One breaker per upstream host, for a proxy.
    /// let by_host = |req: &Request<axum::body::Body>| req.uri().host().map(str::to_owned);
    /// let layer = CircuitBreakerLayer::per_key(
    ///     CircuitBreakerConfig::default(),
    ///     by_host,
    ///     NonZeroU64::new(1_000).unwrap(),
    /// );
    /// # let _ = layer;
    /// ```
    pub fn per_key<K>(
        config: CircuitBreakerConfig,
        extractor: K,
        max_keys: NonZeroU64,
    ) -> KeyedCircuitBreakerLayer<K> {
        KeyedCircuitBreakerLayer::new(config, extractor, max_keys)
    }
}

impl<C, R> CircuitBreakerLayer<C, R> {
    /// Decides outcomes with `classifier` (a [`Classify`](crate::classify::Classify)
    /// implementation or closure) instead of [`ServerErrorsAsFailures`].
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2, R> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
            on_rejection: self.on_rejection,
        }
    }

    /// Answers rejected calls with `hook` instead of the default problem+json 503.
    pub fn on_rejection<R2>(self, hook: R2) -> CircuitBreakerLayer<C, R2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier: self.classifier,
            on_rejection: hook,
        }
    }

    /// Calls `hook` on every state change of this breaker (from any clone or service). Replaces
    /// an earlier hook. It runs on the thread that made the transition: keep it short.
    pub fn on_state_change<F>(self, hook: F) -> Self
    where
        F: Fn(&StateChange) + Send + Sync + 'static,
    {
        self.breaker.set_on_state_change(Arc::new(hook));
        self
    }

    /// A handle to this layer's breaker: state, metrics and manual control.
    #[must_use]
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            breaker: self.breaker.clone(),
        }
    }
}

impl<C: Clone, R: Clone> Clone for CircuitBreakerLayer<C, R> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            on_rejection: self.on_rejection.clone(),
        }
    }
}

impl<C, R> std::fmt::Debug for CircuitBreakerLayer<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .field("classifier", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for CircuitBreakerLayer<C, R> {
    type Service = CircuitBreaker<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            on_rejection: self.on_rejection.clone(),
        }
    }
}
