use std::{fmt, sync::Arc};

use super::{Quota, limiter::Limiter, store::KeyTableStats};
use crate::ConfigError;

/// The quotas and key tables of one limiter, readable and changeable while it serves. Cheap to
/// clone. Made by [`RateLimitLayer::handle`](super::RateLimitLayer::handle).
///
/// ```
/// use std::num::NonZeroU32;
/// use bulwark::rate_limit::{Quota, RateLimitLayer};
///
/// let n = |n| NonZeroU32::new(n).unwrap();
/// let layer = RateLimitLayer::new(Quota::per_second(n(100)));
/// let handle = layer.handle();
///
/// // Under attack: tighten the limit. The next request sees it.
/// handle.set_quotas([Quota::per_second(n(10)), Quota::per_minute(n(100)).named("minute")])?;
/// assert_eq!(handle.quotas().len(), 2);
/// # Ok::<(), bulwark::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RateLimitHandle {
    pub(super) limiter: Arc<Limiter>,
}

impl RateLimitHandle {
    /// The limiter's name.
    #[must_use]
    pub fn name(&self) -> Arc<str> {
        self.limiter.name()
    }

    /// The quotas enforced now.
    #[must_use]
    pub fn quotas(&self) -> Vec<Quota> {
        self.limiter
            .current
            .load()
            .quotas
            .iter()
            .map(|q| q.quota.clone())
            .collect()
    }

    /// Enforces `quotas` from the next request on, in every clone and service of the layer.
    ///
    /// In memory, a quota equal to a current one (same name, rate, period and burst) keeps its
    /// counts; any other starts afresh, every key with a full burst. In Redis, counts live under
    /// the quota's name and carry over: a quota renamed starts afresh, one whose rate changed
    /// goes on from the keys' current state under the new rate.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] (setting `quotas`) if there are none, more than 16, or two with
    /// the same name; the current quotas then stay.
    pub fn set_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<(), ConfigError> {
        self.limiter.set_quotas(quotas.into_iter().collect())
    }

    /// The size of each quota's in-memory key table (with the Redis store, the table of the
    /// local fallback).
    #[must_use]
    pub fn key_tables(&self) -> Vec<KeyTableStats> {
        self.limiter.table_stats()
    }

    /// Prunes every key table now (it also happens on its own, see the
    /// [module docs](super#memory-bounds)).
    pub fn prune(&self) {
        self.limiter.prune();
    }
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("name", &self.name())
            .field("quotas", &self.quotas())
            .field("max_keys", &self.limiter.max_keys())
            .finish()
    }
}
