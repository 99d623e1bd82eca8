//! Where a rate limiter keeps its counts: in this process ([`MemoryStore`], the default) or in
//! Redis, shared by every instance of the application ([`RedisStore`], feature `redis`).

pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

pub use self::memory::KeyTableStats;
#[cfg(feature = "redis")]
pub use self::redis::{FailurePolicy, RedisStore};

/// Counts kept in this process, with the GCRA over a bounded key table: the default
/// store of [`RateLimitLayer`](super::RateLimitLayer). See the
/// [module docs](super#memory-bounds) for its memory bound.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MemoryStore;
