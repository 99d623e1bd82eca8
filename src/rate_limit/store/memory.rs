//! The memory store: the layer's default, deciding with this process's
//! [limiter](crate::rate_limit::limiter) alone.

/// Counts kept in this process, with the GCRA over a bounded key table: the default
/// store of [`RateLimitLayer`](crate::rate_limit::RateLimitLayer). See the
/// [module docs](crate::rate_limit#memory-bounds) for its memory bound.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MemoryStore;
