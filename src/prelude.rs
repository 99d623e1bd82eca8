//! The names most stacks need: `use bulwark::prelude::*;`.

pub use crate::{
    ConfigError, Rejection, ResponseForRejection,
    cache::{CacheLayer, CacheStore},
    circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer},
    classify::{Classify, Outcome, ServerErrorsAsFailures},
    fallback::FallbackLayer,
    flag::{FeatureFlagLayer, FlagDefinition, Flags},
    idempotency::{IdempotencyLayer, IdempotencyStore},
    key::{GlobalKey, HeaderKey, KeyExtractor, PeerIp, TrustedProxyIp},
    log::RequestLogLayer,
    rate_limit::{Quota, RateLimitLayer},
};
