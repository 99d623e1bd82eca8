//! Per-request settings: what a request costs ([`RequestCost`]) and what happens to requests
//! without a key ([`MissingKey`]).

use http::Request;

/// How much of the quota a request uses (its weight).
///
/// Implemented for `()` (every request costs 1, the default) and for closures
/// `Fn(&Request<B>) -> u32`. A cost of 0 lets the request through without counting it. A cost
/// larger than a quota's burst can never be allowed: such a request is refused at once with
/// 429 (its `RateLimit-Policy` shows a quota below the cost) and a warning is logged, rather
/// than left waiting for capacity that never comes.
///
/// ```
/// use bulwark::rate_limit::{Quota, RateLimitLayer};
/// use http::{Method, Request};
/// use std::num::NonZeroU32;
///
/// // Writes cost 5, reads 1.
/// let layer = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(50).unwrap()))
///     .cost(|req: &Request<axum::body::Body>| if req.method() == Method::GET { 1 } else { 5 });
/// # let _ = layer;
/// ```
pub trait RequestCost<B>: Clone + Send + Sync + 'static {
    /// The cost of `req`.
    fn cost(&self, req: &Request<B>) -> u32;
}

impl<B> RequestCost<B> for () {
    #[inline]
    fn cost(&self, _: &Request<B>) -> u32 {
        1
    }
}

impl<B, F> RequestCost<B> for F
where
    F: Fn(&Request<B>) -> u32 + Clone + Send + Sync + 'static,
{
    #[inline]
    fn cost(&self, req: &Request<B>) -> u32 {
        self(req)
    }
}

/// What the limiter does with a request its [`KeyExtractor`](crate::key::KeyExtractor) finds
/// no key for (e.g. [`PeerIp`](crate::key::PeerIp) on a server that does not put the peer
/// address in the request extensions, or [`HeaderKey`](crate::key::HeaderKey) without the
/// header).
///
/// Whatever the choice, the first such request logs a warning (target `bulwark::rate_limit`),
/// and each one a `DEBUG` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// All requests without a key share one bucket with the layer's quotas (the default): they
    /// stay limited, together.
    #[default]
    SharedBucket,
    /// Let them through, unlimited and uncounted.
    Allow,
    /// Refuse them with [`Rejection::RateLimited`](crate::Rejection::RateLimited) (429, no
    /// `RateLimit` headers, `Retry-After` of the first quota's period).
    Reject,
}
