//! Where a rate limiter keeps its counts: in this process ([`MemoryStore`], the default) or in
//! Redis, shared by every instance of the application ([`RedisStore`], feature `redis`).

mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::{FailurePolicy, RedisStore};
pub use crate::rate_limit::table::KeyTableStats;
