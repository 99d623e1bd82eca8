//! Per-key breakers: one breaker per upstream host, route or tenant, chosen by a
//! [`KeyExtractor`](crate::key::KeyExtractor).

use std::{
    any::Any,
    fmt,
    hash::Hash,
    num::NonZeroU64,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{CircuitBreakerConfig, CircuitBreakerHandle, future::ResponseFuture, state::Breaker};
use crate::{
    DefaultResponseForRejection, Rejection, ResponseForRejection,
    body::ResponseBody,
    classify::{Classify, ServerErrorsAsFailures},
    key::KeyExtractor,
};

struct Shared {
    config: CircuitBreakerConfig,
    max_keys: u64,
    /// For requests without a key.
    default: Arc<Breaker>,
    /// A `moka::sync::Cache<Key, Arc<Breaker>>`, created on the first keyed request (the key
    /// type is only known where the request body type is).
    map: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Shared {
    fn map<Q>(&self) -> Option<&moka::sync::Cache<Q, Arc<Breaker>>>
    where
        Q: Hash + Eq + Send + Sync + 'static,
    {
        self.map
            .get_or_init(|| {
                Box::new(
                    moka::sync::Cache::<Q, Arc<Breaker>>::builder()
                        .max_capacity(self.max_keys)
                        // Least recently used out. moka's default (TinyLFU) would refuse a new
                        // key while busier ones fill the map: a newly failing upstream would get
                        // a fresh, empty breaker on every request and never open.
                        .eviction_policy(moka::policy::EvictionPolicy::lru())
                        .build(),
                )
            })
            .downcast_ref()
    }

    fn breaker<Q>(&self, key: &Q) -> Arc<Breaker>
    where
        Q: Hash + Eq + fmt::Debug + Clone + Send + Sync + 'static,
    {
        let Some(map) = self.map::<Q>() else {
            tracing::warn!(
                target: "bulwark::circuit_breaker",
                breaker = %self.config.name,
                "one per-key breaker layer used with two key types; using its shared breaker"
            );
            return self.default.clone();
        };
        map.get_with_by_ref(key, || {
            let mut config = self.config.clone();
            config.name = Arc::from(format!("{}[{key:?}]", self.config.name));
            Arc::new(Breaker::keyed(
                config,
                self.config.name.clone(),
                &self.default,
            ))
        })
    }
}

/// A breaker per key. Built with [`CircuitBreakerLayer::per_key`](super::CircuitBreakerLayer::per_key).
///
/// Each key gets its own breaker with the same configuration, named `name[key]`. At most
/// `max_keys` breakers are kept; past that the least recently used are dropped (a dropped
/// key starts again closed). Requests without a key share one more breaker, named `name`.
///
/// Keys never reach metric labels, which would grow with every key ever seen: a key's
/// transitions and refusals are counted (`bulwark_circuit_breaker_transitions_total`,
/// `bulwark_circuit_breaker_rejections_total`) under the layer's `name`, and only the shared
/// breaker sets the `bulwark_circuit_breaker_state` gauge. Log events, the
/// [`on_state_change`](Self::on_state_change) hook and [`handle_for`](Self::handle_for) name a
/// key's breaker `name[key]`.
#[must_use]
pub struct KeyedCircuitBreakerLayer<K, C = ServerErrorsAsFailures, R = DefaultResponseForRejection>
{
    shared: Arc<Shared>,
    extractor: K,
    classifier: C,
    on_rejection: R,
}

impl<K> KeyedCircuitBreakerLayer<K> {
    pub(super) fn new(config: CircuitBreakerConfig, extractor: K, max_keys: NonZeroU64) -> Self {
        Self {
            shared: Arc::new(Shared {
                default: Arc::new(Breaker::new(config.clone())),
                config,
                max_keys: max_keys.get(),
                map: OnceLock::new(),
            }),
            extractor,
            classifier: ServerErrorsAsFailures::new(),
            on_rejection: DefaultResponseForRejection,
        }
    }
}

impl<K, C, R> KeyedCircuitBreakerLayer<K, C, R> {
    /// Decides outcomes with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<K, C2, R> {
        KeyedCircuitBreakerLayer {
            shared: self.shared,
            extractor: self.extractor,
            classifier,
            on_rejection: self.on_rejection,
        }
    }

    /// Answers rejected calls with `hook`.
    pub fn on_rejection<R2>(self, hook: R2) -> KeyedCircuitBreakerLayer<K, C, R2> {
        KeyedCircuitBreakerLayer {
            shared: self.shared,
            extractor: self.extractor,
            classifier: self.classifier,
            on_rejection: hook,
        }
    }

    /// Calls `hook` on every state change of any of this layer's breakers: every key's, and
    /// the one shared by requests without a key. [`StateChange::name`](super::StateChange::name)
    /// tells them apart (`name[key]`, or `name`). Replaces an earlier hook, for keys seen before
    /// too. It runs on the thread that made the transition: keep it short.
    pub fn on_state_change<F>(self, hook: F) -> Self
    where
        F: Fn(&super::StateChange) + Send + Sync + 'static,
    {
        self.shared.default.set_on_state_change(Arc::new(hook));
        self
    }

    /// The handle of `key`'s breaker, if it exists (a key gets its breaker on its first request).
    #[must_use]
    pub fn handle_for<Q>(&self, key: &Q) -> Option<CircuitBreakerHandle>
    where
        Q: Hash + Eq + Send + Sync + 'static,
    {
        self.shared
            .map
            .get()?
            .downcast_ref::<moka::sync::Cache<Q, Arc<Breaker>>>()?
            .get(key)
            .map(|breaker| CircuitBreakerHandle { breaker })
    }

    /// The handle of the breaker shared by requests without a key.
    #[must_use]
    pub fn handle_for_unkeyed(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            breaker: self.shared.default.clone(),
        }
    }
}

impl<K: Clone, C: Clone, R: Clone> Clone for KeyedCircuitBreakerLayer<K, C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            on_rejection: self.on_rejection.clone(),
        }
    }
}

impl<K, C, R> fmt::Debug for KeyedCircuitBreakerLayer<K, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("name", &self.shared.config.name)
            .field("max_keys", &self.shared.max_keys)
            .finish_non_exhaustive()
    }
}

impl<S, K: Clone, C: Clone, R: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, C, R> {
    type Service = KeyedCircuitBreaker<S, K, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            shared: self.shared.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            on_rejection: self.on_rejection.clone(),
        }
    }
}

/// The service made by [`KeyedCircuitBreakerLayer`].
#[must_use]
pub struct KeyedCircuitBreaker<S, K, C = ServerErrorsAsFailures, R = DefaultResponseForRejection> {
    inner: S,
    shared: Arc<Shared>,
    extractor: K,
    classifier: C,
    on_rejection: R,
}

crate::macros::define_inner_service_accessors!(KeyedCircuitBreaker<S, K, C, R>);

impl<S: Clone, K: Clone, C: Clone, R: Clone> Clone for KeyedCircuitBreaker<S, K, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            on_rejection: self.on_rejection.clone(),
        }
    }
}

impl<S, K, C, R> fmt::Debug for KeyedCircuitBreaker<S, K, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("name", &self.shared.config.name)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, R, ReqB, ResB> Service<Request<ReqB>> for KeyedCircuitBreaker<S, K, C, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    K: KeyExtractor<ReqB>,
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
        let breaker = match self.extractor.extract(&req) {
            Some(key) => self.shared.breaker(&key),
            None => self.shared.default.clone(),
        };
        match breaker.acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone())
            }
            Err(retry_after) => ResponseFuture::rejected(
                Rejection::circuit_open_by(breaker.name().clone(), retry_after)
                    .into_response_with(&self.on_rejection),
            ),
        }
    }
}
