use std::{fmt, num::NonZeroUsize, sync::Arc};

use tower_layer::Layer;

use super::{
    MissingKey, Quota, RateLimit, RateLimitHandle, limiter::Limiter, quota::check_quotas,
    store::MemoryStore,
};
use crate::{ConfigError, DefaultResponseForRejection, key::GlobalKey};

/// Per-request options, copied into every service.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Options {
    pub(super) missing_key: MissingKey,
    pub(super) headers_on_allowed: bool,
}

/// Limits the rate of requests per key. See the [module docs](super).
///
/// The limiter is created with the layer: every clone of the layer and every service it makes
/// (one per axum route, one per hyper connection) share it. Build two layers for two limiters.
///
/// Type parameters: `K` finds a request's key ([`KeyExtractor`](crate::key::KeyExtractor),
/// default [`GlobalKey`]), `C` its cost ([`RequestCost`](super::RequestCost), default `()`: 1),
/// `R` builds the 429 ([`ResponseForRejection`](crate::ResponseForRejection)), `St` is the
/// store ([`MemoryStore`] or, with the `redis` feature,
/// [`RedisStore`](super::store::RedisStore)).
#[must_use]
pub struct RateLimitLayer<K = GlobalKey, C = (), R = DefaultResponseForRejection, St = MemoryStore>
{
    pub(super) limiter: Arc<Limiter>,
    pub(super) store: St,
    pub(super) extractor: K,
    pub(super) cost: C,
    pub(super) on_rejection: R,
    pub(super) options: Options,
}

impl RateLimitLayer {
    /// One limiter enforcing `quota`, for every request together ([`GlobalKey`]) until
    /// [`key`](Self::key) says otherwise, counted in memory.
    pub fn new(quota: Quota) -> Self {
        Self::from_limiter(Limiter::new(vec![quota]))
    }

    /// One limiter enforcing every quota in `quotas` (a request must fit all of them; the
    /// strictest decides).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (setting `quotas`) if there are none, more than 16, or two with
    /// the same name.
    pub fn with_quotas(quotas: impl IntoIterator<Item = Quota>) -> Result<Self, ConfigError> {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        check_quotas(&quotas)?;
        Ok(Self::from_limiter(Limiter::new(quotas)))
    }

    fn from_limiter(limiter: Limiter) -> Self {
        Self {
            limiter: Arc::new(limiter),
            store: MemoryStore,
            extractor: GlobalKey,
            cost: (),
            on_rejection: DefaultResponseForRejection,
            options: Options::default(),
        }
    }
}

impl<K, C, R, St> RateLimitLayer<K, C, R, St> {
    /// Keys requests with `extractor`: [`PeerIp`](crate::key::PeerIp),
    /// [`TrustedProxyIp`](crate::key::TrustedProxyIp), [`HeaderKey`](crate::key::HeaderKey),
    /// or a closure `Fn(&Request<B>) -> Option<Key>`.
    pub fn key<K2>(self, extractor: K2) -> RateLimitLayer<K2, C, R, St> {
        RateLimitLayer {
            limiter: self.limiter,
            store: self.store,
            extractor,
            cost: self.cost,
            on_rejection: self.on_rejection,
            options: self.options,
        }
    }

    /// Charges each request `cost(&request)` instead of 1. See
    /// [`RequestCost`](super::RequestCost).
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<K, C2, R, St> {
        RateLimitLayer {
            limiter: self.limiter,
            store: self.store,
            extractor: self.extractor,
            cost,
            on_rejection: self.on_rejection,
            options: self.options,
        }
    }

    /// Answers refused requests with `hook` instead of the default problem+json 429. The
    /// `Retry-After` and `RateLimit` headers and the [`Rejection`](crate::Rejection) extension
    /// are added to whatever it returns.
    pub fn on_rejection<R2>(self, hook: R2) -> RateLimitLayer<K, C, R2, St> {
        RateLimitLayer {
            limiter: self.limiter,
            store: self.store,
            extractor: self.extractor,
            cost: self.cost,
            on_rejection: hook,
            options: self.options,
        }
    }

    /// Names the limiter (default `"default"`): the `limiter` label of its metrics, a field of
    /// its log events, and part of its Redis keys. Give each limiter of an application its own
    /// name. Applies to every clone of this layer.
    pub fn name(self, name: impl Into<Arc<str>>) -> Self {
        self.limiter.rename(name.into());
        self
    }

    /// Keeps at most `max_keys` keys per quota in memory (default 100,000); past that, new keys
    /// share one overflow bucket until pruning makes room. See the
    /// [module docs](super#memory-bounds). Applies to every clone of this layer.
    pub fn max_keys(self, max_keys: NonZeroUsize) -> Self {
        self.limiter.set_max_keys(max_keys.get());
        self
    }

    /// What to do with requests without a key (default [`MissingKey::SharedBucket`]).
    pub fn missing_key(mut self, policy: MissingKey) -> Self {
        self.options.missing_key = policy;
        self
    }

    /// Also puts `RateLimit-Policy` and `RateLimit` on allowed responses (default: only on
    /// 429s), describing the quota with the fewest requests left. An inner layer's fields, if
    /// already there, are kept.
    pub fn headers_on_allowed(mut self, enabled: bool) -> Self {
        self.options.headers_on_allowed = enabled;
        self
    }

    /// A handle to this layer's limiter: its quotas (readable and replaceable at run time) and
    /// key tables.
    #[must_use]
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            limiter: self.limiter.clone(),
        }
    }
}

#[cfg(feature = "redis")]
impl<K, C, R> RateLimitLayer<K, C, R, MemoryStore> {
    /// Counts in Redis, shared by every instance with the same Redis, key prefix and limiter
    /// [`name`](Self::name), with one script call per request. When Redis fails, the
    /// [`FailurePolicy`](super::store::FailurePolicy) decides (default: this instance's memory
    /// limiter). See the [module docs](super#redis).
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(
        self,
        redis: crate::redis::Redis,
    ) -> RateLimitLayer<K, C, R, super::store::RedisStore> {
        RateLimitLayer {
            limiter: self.limiter,
            store: super::store::RedisStore::new(redis),
            extractor: self.extractor,
            cost: self.cost,
            on_rejection: self.on_rejection,
            options: self.options,
        }
    }
}

#[cfg(feature = "redis")]
impl<K, C, R> RateLimitLayer<K, C, R, super::store::RedisStore> {
    /// What to do when Redis fails or times out (default
    /// [`FailurePolicy::Local`](super::store::FailurePolicy::Local)).
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn failure_policy(mut self, policy: super::store::FailurePolicy) -> Self {
        self.store.set_policy(policy);
        self
    }
}

impl<K: Clone, C: Clone, R: Clone, St: Clone> Clone for RateLimitLayer<K, C, R, St> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            store: self.store.clone(),
            extractor: self.extractor.clone(),
            cost: self.cost.clone(),
            on_rejection: self.on_rejection.clone(),
            options: self.options,
        }
    }
}

impl<K, C, R, St: fmt::Debug> fmt::Debug for RateLimitLayer<K, C, R, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.handle())
            .field("store", &self.store)
            .field("key", &std::any::type_name::<K>())
            .field("missing_key", &self.options.missing_key)
            .field("headers_on_allowed", &self.options.headers_on_allowed)
            .finish_non_exhaustive()
    }
}

impl<S, K: Clone, C: Clone, R: Clone, St: Clone> Layer<S> for RateLimitLayer<K, C, R, St> {
    type Service = RateLimit<S, K, C, R, St>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            current: arc_swap::Cache::new(super::service::Current(self.limiter.clone())),
            store: self.store.clone(),
            extractor: self.extractor.clone(),
            cost: self.cost.clone(),
            on_rejection: self.on_rejection.clone(),
            options: self.options,
        }
    }
}
