use std::{any::type_name, fmt, sync::Arc};

use tower_layer::Layer;

use super::{
    AuthorizationScope, Idempotency, IdempotencyConfig, IdempotencyHandle, IdempotencyStore,
    handle::Stats, service::Shared, store::Store,
};
use crate::DefaultResponseForRejection;

/// Runs each keyed unsafe request once and replays its response to retries. See the
/// [module docs](super).
///
/// Type parameters: `St` the [`Store`], `X` the [scope extractor](super::ScopeExtractor), `R`
/// the [`ResponseForRejection`](crate::ResponseForRejection) hook.
///
/// Cheap to clone; every clone, and every service it makes, shares the store and the counters.
#[derive(Clone)]
#[must_use]
pub struct IdempotencyLayer<
    St = IdempotencyStore,
    X = AuthorizationScope,
    R = DefaultResponseForRejection,
> {
    store: St,
    scope: X,
    on_rejection: R,
    config: IdempotencyConfig,
    stats: Arc<Stats>,
}

impl<St: fmt::Debug, X, R> fmt::Debug for IdempotencyLayer<St, X, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &self.store)
            .field("scope", &type_name::<X>())
            .field("on_rejection", &type_name::<R>())
            .field("config", &self.config)
            .finish()
    }
}

impl<St: Store> IdempotencyLayer<St> {
    /// A layer keeping its claims and responses in `store`, with the default
    /// [`IdempotencyConfig`] and the [`AuthorizationScope`].
    pub fn new(store: St) -> Self {
        Self {
            store,
            scope: AuthorizationScope,
            on_rejection: DefaultResponseForRejection,
            config: IdempotencyConfig::default(),
            stats: Arc::default(),
        }
    }
}

impl<St, X, R> IdempotencyLayer<St, X, R> {
    /// Replaces the settings.
    pub fn config(mut self, config: IdempotencyConfig) -> Self {
        self.config = config;
        self
    }

    /// Whether requests without `Idempotency-Key` get 400 (default: no, they pass through).
    pub fn require_key(mut self, require: bool) -> Self {
        self.config.require_key = require;
        self
    }

    /// Sets the scope extractor: the namespace of each request's key (default: a hash of the
    /// `Authorization` header).
    pub fn scope<X2>(self, scope: X2) -> IdempotencyLayer<St, X2, R> {
        IdempotencyLayer {
            store: self.store,
            scope,
            on_rejection: self.on_rejection,
            config: self.config,
            stats: self.stats,
        }
    }

    /// Builds the layer's rejections (400, 409, 413, 422, 503) with `hook` instead of the
    /// default problem+json.
    pub fn on_rejection<R2>(self, hook: R2) -> IdempotencyLayer<St, X, R2> {
        IdempotencyLayer {
            store: self.store,
            scope: self.scope,
            on_rejection: hook,
            config: self.config,
            stats: self.stats,
        }
    }

    /// The layer's counters.
    #[must_use]
    pub fn handle(&self) -> IdempotencyHandle {
        IdempotencyHandle {
            stats: Arc::clone(&self.stats),
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &St {
        &self.store
    }
}

impl<S, St: Clone, X: Clone, R: Clone> Layer<S> for IdempotencyLayer<St, X, R> {
    type Service = Idempotency<S, St, X, R>;

    fn layer(&self, inner: S) -> Self::Service {
        // The state (the store's entries and the counters) was made with the layer; the clones
        // below share it.
        Idempotency {
            inner,
            shared: Arc::new(Shared {
                store: self.store.clone(),
                scope: self.scope.clone(),
                on_rejection: self.on_rejection.clone(),
                config: self.config.clone(),
                stats: Arc::clone(&self.stats),
            }),
        }
    }
}
