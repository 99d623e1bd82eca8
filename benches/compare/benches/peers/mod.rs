//! The configurations the `compare` bench and its instruction-count `probe` share, so that both
//! measure exactly the same peers and the same bulwark settings.
#![allow(dead_code, unused_macros)]

use std::num::NonZeroU32;

use bulwark_compare::Body;
use http::Response;

/// A quota no run can exhaust: 4 billion requests per second, and as large a burst.
pub fn plenty() -> bulwark::rate_limit::Quota {
    bulwark::rate_limit::Quota::per_second(NonZeroU32::MAX).burst(NonZeroU32::MAX)
}

/// The cache floor: a `moka::sync` cache holding the bench request's answer under its URI.
pub fn moka_floor() -> moka::sync::Cache<String, Response<Body>> {
    let floor = moka::sync::Cache::new(1_000);
    floor.insert(
        "http://example.test/products?page=2".to_owned(),
        Response::new(Body::from("ok")),
    );
    floor
}

/// governor's own check without a key, at a rate no run exhausts.
pub fn governor_direct() -> governor::DefaultDirectRateLimiter {
    governor::RateLimiter::direct(governor::Quota::per_second(NonZeroU32::MAX))
}

/// governor's own check keyed by IP address, at a rate no run exhausts.
pub fn governor_keyed() -> governor::DefaultKeyedRateLimiter<std::net::IpAddr> {
    governor::RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::MAX))
}

/// tower_governor's layer allowing every request of a run: `tower_governor!(global)` for one
/// global key, `tower_governor!(peer_ip)` for its default peer-IP key.
macro_rules! tower_governor {
    (global) => {
        tower_governor!(@layer tower_governor::governor::GovernorConfigBuilder::default()
            .per_millisecond(1)
            .burst_size(u32::MAX)
            .key_extractor(tower_governor::key_extractor::GlobalKeyExtractor))
    };
    (peer_ip) => {
        tower_governor!(@layer tower_governor::governor::GovernorConfigBuilder::default()
            .per_millisecond(1)
            .burst_size(u32::MAX))
    };
    (@layer $builder:expr) => {
        tower_governor::GovernorLayer::new(std::sync::Arc::new(
            $builder.finish().expect("valid config"),
        ))
    };
}

/// tower-resilience's cache layer, keyed by the URI as the moka floor is.
macro_rules! tower_resilience_cache {
    () => {
        tower_resilience::cache::CacheLayer::builder()
            .max_size(1_000)
            .ttl(std::time::Duration::from_secs(3_600))
            .key_extractor(|req: &http::Request<bulwark_compare::Body>| req.uri().to_string())
            .build()
            .expect("valid config")
    };
}
