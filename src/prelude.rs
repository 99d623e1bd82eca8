//! The names most stacks need: `use bulwark::prelude::*;`.

pub use crate::{
    ConfigError, Rejection, ResponseForRejection,
    circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer},
    classify::{Classify, Outcome, ServerErrorsAsFailures},
    fallback::FallbackLayer,
    flag::{FeatureFlagLayer, FlagDefinition, Flags},
    key::{GlobalKey, HeaderKey, KeyExtractor, PeerIp, TrustedProxyIp},
    log::RequestLogLayer,
};
