use std::{any::type_name, fmt, sync::Arc};

use tower_layer::Layer;

use super::{
    AuthorizationScope, Idempotency, IdempotencyConfig, IdempotencyHandle, IdempotencyStore,
    service::Shared, store::Store,
};
use crate::DefaultResponseForRejection;

/// Runs each keyed unsafe request once and replays its response to retries. See the
/// [module docs](super).
///
/// Type parameters: `St` the [`Store`], `X` the [scope extractor](super::ScopeExtractor), `R`
/// the [`ResponseForRejection`](crate::ResponseForRejection) hook.
///
/// Cheap to clone; every clone, and every service it makes, shares the store and the counters.
#[must_use]
pub struct IdempotencyLayer<
    St = IdempotencyStore,
    X = AuthorizationScope,
    R = DefaultResponseForRejection,
> {
    /// Built once, here: a layer's `layer` only clones this `Arc`, which matters because some
    /// routers (axum's `Handler::layer`) apply the layer anew for every request.
    shared: Arc<Shared<St, X, R>>,
}

impl<St, X, R> Clone for IdempotencyLayer<St, X, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<St: fmt::Debug, X, R> fmt::Debug for IdempotencyLayer<St, X, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &self.shared.store)
            .field("scope", &type_name::<X>())
            .field("on_rejection", &type_name::<R>())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<St: Store> IdempotencyLayer<St> {
    /// A layer keeping its claims and responses in `store`, with the default
    /// [`IdempotencyConfig`] and the [`AuthorizationScope`].
    pub fn new(store: St) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                scope: AuthorizationScope,
                on_rejection: DefaultResponseForRejection,
                config: IdempotencyConfig::default(),
                stats: Arc::default(),
                local: std::sync::OnceLock::new(),
            }),
        }
    }
}

impl<St, X, R> IdempotencyLayer<St, X, R> {
    /// The layer's counters.
    #[must_use]
    pub fn handle(&self) -> IdempotencyHandle {
        IdempotencyHandle {
            stats: Arc::clone(&self.shared.stats),
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<St: Clone, X: Clone, R: Clone> IdempotencyLayer<St, X, R> {
    /// The configuration, to be changed by a builder method: taken over if this layer is its
    /// only owner (the usual chain of calls), else copied (a clone of the layer keeps its own
    /// settings, and shares the store and the counters).
    fn into_shared(self) -> Shared<St, X, R> {
        Arc::try_unwrap(self.shared).unwrap_or_else(|s| Shared {
            store: s.store.clone(),
            scope: s.scope.clone(),
            on_rejection: s.on_rejection.clone(),
            config: s.config.clone(),
            stats: Arc::clone(&s.stats),
            local: s.local.clone(),
        })
    }

    /// This layer with `change` made to its settings.
    fn with(self, change: impl FnOnce(&mut IdempotencyConfig)) -> Self {
        let mut s = self.into_shared();
        change(&mut s.config);
        Self {
            shared: Arc::new(s),
        }
    }

    /// Replaces the settings.
    pub fn config(self, config: IdempotencyConfig) -> Self {
        self.with(|c| *c = config)
    }

    /// Whether requests without `Idempotency-Key` get 400 (default: no, they pass through).
    pub fn require_key(self, require: bool) -> Self {
        self.with(|c| c.require_key = require)
    }

    /// Sets the scope extractor: the namespace of each request's key (default: a hash of the
    /// `Authorization` header).
    pub fn scope<X2>(self, scope: X2) -> IdempotencyLayer<St, X2, R> {
        let s = self.into_shared();
        IdempotencyLayer {
            shared: Arc::new(Shared {
                store: s.store,
                scope,
                on_rejection: s.on_rejection,
                config: s.config,
                stats: s.stats,
                local: s.local,
            }),
        }
    }

    /// Builds the layer's rejections (400, 409, 413, 422, 503) with `hook` instead of the
    /// default problem+json.
    pub fn on_rejection<R2>(self, hook: R2) -> IdempotencyLayer<St, X, R2> {
        let s = self.into_shared();
        IdempotencyLayer {
            shared: Arc::new(Shared {
                store: s.store,
                scope: s.scope,
                on_rejection: hook,
                config: s.config,
                stats: s.stats,
                local: s.local,
            }),
        }
    }
}

impl<S, St, X, R> Layer<S> for IdempotencyLayer<St, X, R> {
    type Service = Idempotency<S, St, X, R>;

    /// Clones one handle: the configuration and the state (the store's entries and the
    /// counters) were put together once, with the layer.
    #[inline]
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
