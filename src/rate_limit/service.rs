use std::{
    fmt,
    num::NonZeroU32,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tower_service::Service;

use super::{
    MissingKey, RequestCost,
    future::ResponseFuture,
    layer::Options,
    limiter::{Limiter, QuotaSet, Verdict},
    store::MemoryStore,
    table::UNKEYED,
};
use crate::{
    DefaultResponseForRejection, Rejection, ResponseForRejection, body::ResponseBody,
    key::GlobalKey, key::KeyExtractor,
};

/// The service made by [`RateLimitLayer`](super::RateLimitLayer).
#[must_use]
pub struct RateLimit<S, K = GlobalKey, C = (), R = DefaultResponseForRejection, St = MemoryStore> {
    pub(super) inner: S,
    pub(super) limiter: Arc<Limiter>,
    /// The limiter's quota set, cached by this service: a request checks one pointer instead of
    /// taking an `ArcSwap` guard. A swapped-out set lives on until this service's next request.
    pub(super) current: arc_swap::Cache<Current, Arc<QuotaSet>>,
    pub(super) store: St,
    pub(super) extractor: K,
    pub(super) cost: C,
    pub(super) on_rejection: R,
    pub(super) options: Options,
}

crate::macros::define_inner_service_accessors!(RateLimit<S, K, C, R, St>);

impl<S: Clone, K: Clone, C: Clone, R: Clone, St: Clone> Clone for RateLimit<S, K, C, R, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            current: self.current.clone(),
            store: self.store.clone(),
            extractor: self.extractor.clone(),
            cost: self.cost.clone(),
            on_rejection: self.on_rejection.clone(),
            options: self.options,
        }
    }
}

impl<S, K, C, R, St: fmt::Debug> fmt::Debug for RateLimit<S, K, C, R, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("limiter", &self.limiter.name())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A limiter seen as its current quota set, for [`arc_swap::Cache`].
#[derive(Clone)]
pub(super) struct Current(pub(super) Arc<Limiter>);

impl std::ops::Deref for Current {
    type Target = arc_swap::ArcSwap<QuotaSet>;

    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

/// Where a request's count goes, before the store is asked.
enum Target<Q> {
    /// Not limited: a cost of 0, or no key under [`MissingKey::Allow`].
    Pass,
    /// Answer this at once.
    Refuse(Rejection),
    /// The request's own key.
    Key(Q, NonZeroU32),
    /// The shared bucket of requests without a key.
    Unkeyed(NonZeroU32),
}

impl<S, K, C, R, St> RateLimit<S, K, C, R, St> {
    fn target<B>(&self, req: &Request<B>) -> Target<K::Key>
    where
        K: KeyExtractor<B>,
        C: RequestCost<B>,
    {
        let Some(cost) = NonZeroU32::new(self.cost.cost(req)) else {
            return Target::Pass;
        };
        if let Some(key) = self.extractor.extract(req) {
            return Target::Key(key, cost);
        }
        let set = self.limiter.current.load();
        warn_missing_key(&self.limiter, &set, self.options.missing_key);
        match self.options.missing_key {
            MissingKey::Allow => Target::Pass,
            MissingKey::Reject => {
                set.metrics.rejected();
                let period = set
                    .quotas
                    .first()
                    .map_or(Duration::from_secs(1), |q| q.quota.period());
                Target::Refuse(Rejection::rate_limited(period, None))
            }
            // `SharedBucket`, and any policy added later.
            _ => Target::Unkeyed(cost),
        }
    }
}

fn warn_missing_key(limiter: &Limiter, set: &QuotaSet, policy: MissingKey) {
    if limiter.warned_missing_key.swap(true, Ordering::Relaxed) {
        tracing::debug!(
            target: "bulwark::rate_limit",
            limiter = %set.name,
            policy = ?policy,
            "request without a rate-limit key"
        );
    } else {
        tracing::warn!(
            target: "bulwark::rate_limit",
            limiter = %set.name,
            policy = ?policy,
            "request without a rate-limit key (is the peer address in the request extensions?); \
             further ones are logged at DEBUG"
        );
    }
}

impl<S, K, C, R, ReqB, ResB> Service<Request<ReqB>> for RateLimit<S, K, C, R, MemoryStore>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    K: KeyExtractor<ReqB>,
    C: RequestCost<ReqB>,
    R: ResponseForRejection,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let want_info = self.options.headers_on_allowed;
        let verdict = match self.target(&req) {
            Target::Pass => Verdict::Allowed(None),
            Target::Refuse(rejection) => Verdict::Rejected(rejection),
            Target::Key(key, cost) => {
                let hash = self.limiter.hash_key(&key);
                self.current.load().check(hash, cost, want_info)
            }
            Target::Unkeyed(cost) => self.current.load().check(UNKEYED, cost, want_info),
        };
        match verdict {
            Verdict::Allowed(info) => ResponseFuture::allowed(self.inner.call(req), info),
            Verdict::Rejected(rejection) => {
                ResponseFuture::rejected(rejection.into_response_with(&self.on_rejection))
            }
        }
    }
}

#[cfg(feature = "redis")]
impl<S, K, C, R, ReqB, ResB> Service<Request<ReqB>>
    for RateLimit<S, K, C, R, super::store::RedisStore>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    K: KeyExtractor<ReqB>,
    C: RequestCost<ReqB>,
    R: ResponseForRejection,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = super::future::RedisResponseFuture<S, ReqB, ResB, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        use super::{future::RedisResponseFuture, store::redis::client_part};

        let want_info = self.options.headers_on_allowed;
        let (client, local, cost) = match self.target(&req) {
            Target::Pass => return RedisResponseFuture::called(self.inner.call(req)),
            Target::Refuse(rejection) => {
                return RedisResponseFuture::answered(
                    rejection.into_response_with(&self.on_rejection),
                );
            }
            Target::Key(key, cost) => (client_part(&key), self.limiter.hash_key(&key), cost),
            Target::Unkeyed(cost) => ("unkeyed".to_owned(), UNKEYED, cost),
        };
        let decision = self
            .store
            .decide(self.limiter.clone(), client, local, cost, want_info);
        // The instance that was polled ready goes with the request; this service keeps a clone,
        // which will be polled ready before its own next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        RedisResponseFuture::deciding(decision, inner, req, self.on_rejection.clone(), want_info)
    }
}
