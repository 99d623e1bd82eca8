//! The atomics of the lock-free cores (the circuit breaker's state and windows, the rate
//! limiter's key table): the standard library's, or loom's in a `--cfg bulwark_loom` build, in
//! which the `loom_` unit tests run those cores under every interleaving of their threads (see
//! RELIABILITY.md). A custom cfg name rather than `loom`, so that tokio and the other
//! dependencies build as usual.

#[cfg(bulwark_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(bulwark_loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
