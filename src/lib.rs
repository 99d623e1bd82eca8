//! Production-grade resilience middleware for [Tower]: rate limiting, circuit breaking,
//! fallbacks, idempotency keys, response caching, feature flags and request logging, as layers
//! you stack around any HTTP service (axum, hyper, tonic-style) with `ServiceBuilder`.
//!
//! Every bulwark layer follows the same rules:
//!
//! - **Rejections are responses.** A layer that refuses a request answers with an RFC 9457
//!   `application/problem+json` response and puts a [`Rejection`] in its extensions; it never
//!   turns an infallible service into a fallible one, so axum needs no `HandleErrorLayer`.
//! - **`poll_ready` only forwards.** Policies are decided in `call`, at once; nothing waits in
//!   `poll_ready`, where it would block every clone of the service.
//! - **One layer value, one state.** Clones of a layer, and services made from it for many
//!   routes or connections, share one limiter, one breaker, one cache.
//! - **Every decision is visible**: in the response extensions, as a `tracing` event, and as a
//!   metric (feature `metrics`).
//!
//! # The shared vocabulary
//!
//! - [`Rejection`]: why a layer answered instead of the inner service, and the one place that
//!   turns it into a response ([`ResponseForRejection`] overrides the answer).
//! - [`body::ResponseBody`]: the body every layer answers with; [`body::to_bytes_limited`]
//!   buffers request bodies with a limit.
//! - [`classify`]: what counts as a failure (`Err`, 5xx, timeouts anywhere in the source chain).
//! - [`key`]: which bucket a request belongs to (global, peer IP, client IP through trusted
//!   proxies, a header, your closure).
//! - [`ConfigError`] and [`StoreError`].
//!
//! # Layers
//!
//! | module | layer | what it does |
//! | --- | --- | --- |
//! | [`log`] | [`RequestLogLayer`](log::RequestLogLayer) | one span and one event per request, request ids |
//! | [`circuit_breaker`] | [`CircuitBreakerLayer`](circuit_breaker::CircuitBreakerLayer) | stops calls to a failing dependency; closed, open, half-open |
//! | [`rate_limit`] | [`RateLimitLayer`](rate_limit::RateLimitLayer) | GCRA quotas per key, 429 with `Retry-After` and `RateLimit` headers; memory or Redis |
//! | [`fallback`] | [`FallbackLayer`](fallback::FallbackLayer) | answers for a failing service: a closure, a service, a fixed or the last good response |
//! | [`cache`] | [`CacheLayer`](cache::CacheLayer) | HTTP response cache: RFC 9111 or forced TTL, coalescing, `Cache-Status`, memory or Redis |
//! | [`idempotency`] | [`IdempotencyLayer`](idempotency::IdempotencyLayer) | runs a keyed unsafe request once and replays its response to retries |
//! | [`flag`] | [`FeatureFlagLayer`](flag::FeatureFlagLayer) | kill switches, targeting rules and roll-outs, changed at run time (code, file, environment, Redis) |
//!
//! # How the crate is laid out
//!
//! Arrows point down: the seven layer modules use the crate-level modules below them and never
//! each other (checked by `tests/layout.rs`). Below the layers sit the shared mechanisms: the
//! rejection answers and their problem+json writer, [`body`] (the one body type, and the one
//! limited reader every layer buffers with), [`classify`], [`key`], the kept response
//! ([`idempotency::store::StoredResponse`]) with its hop-by-hop rule, the length-prefixed byte
//! codec under the Redis formats, the store-failure policy ([`FailurePolicy`]), the monotonic clock, redaction and digests, the markers by
//! which a layer recognises another's answer without naming it, and the [`metrics`] machinery
//! (each layer declares and counts its own metrics in its own `metrics.rs`). Inside a layer,
//! one file holds one concern, in the shape tower-http uses (`layer.rs`, `service.rs`,
//! `future.rs`, then the layer's own parts); `CONTRIBUTING.md` maps each concern to its file.
//!
//! # Feature flags
//!
//! | feature | default | what it enables |
//! | --- | --- | --- |
//! | `metrics` | on | counters and histograms for every decision, through the `metrics` facade |
//! | `redis` | off | [`redis`]: shared state across instances, on one Redis node or a Redis Cluster |
//! | `redis-tls` | off | `rediss://` URLs for [`redis`]: TLS with rustls (ring), no OpenSSL |
//! | `axum` | off | [`key::PeerIp`] reads axum's `ConnectInfo`; the log layer reads `MatchedPath` |
//! | `toml` | off | TOML flag files ([`flag::FileSource`]) besides JSON |
//! | `file-events` | off | [`flag::FileSource`] reloads on the OS's file events as well as by polling |
//! | `full` | off | all of the above |
//!
//! [Tower]: https://docs.rs/tower

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod codec;
mod digest;
mod macros;
mod marker;
mod name_hash;
mod redact;
mod stored;
mod sync;

pub mod body;
pub mod cache;
pub mod circuit_breaker;
pub mod classify;
mod error;
mod failure_policy;
pub mod fallback;
pub mod flag;
pub mod idempotency;
pub mod key;
pub mod log;
pub mod metrics;
pub mod prelude;
pub mod rate_limit;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod rejection;
mod response;

pub use self::{
    error::{ConfigError, StoreError},
    failure_policy::FailurePolicy,
    rejection::{RATELIMIT, RATELIMIT_POLICY, RateLimitInfo, Rejection},
    response::strip_hop_by_hop,
    response::{DefaultResponseForRejection, ResponseForRejection},
};

/// A type-erased error, as tower uses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
