//! [`CircuitBreakerLayer`]: stop calling a dependency that is failing, and find out when it is
//! back.
//!
//! ```text
//!            failure or slow-call rate ≥ threshold
//!            (after the minimum number of calls)
//!   ┌────────┐ ─────────────────────────────────▶ ┌──────┐
//!   │ closed │                                    │ open │ ◀─┐ a probe fails so that the rate
//!   └────────┘ ◀──────────┐                       └──────┘   │ can no longer stay under the
//!                         │ all probes done,         │       │ threshold, or a probe is still
//!                         │ rates under threshold    │ open  │ out max_wait_in_half_open after
//!                         │                          │ time  │ the latest one was let through
//!                       ┌───────────┐ ◀──────────────┘ over  │ (open time grows each time)
//!                       │ half-open │ ───────────────────────┘
//!                       └───────────┘
//! ```
//!
//! Closed, every call goes through and its outcome is recorded in a sliding window (the last
//! N calls, or the last N seconds in buckets). Outcomes come from a
//! [`Classify`](crate::classify::Classify): by default `Err`, 500, 502, 503, 504 and timeouts
//! fail, and bulwark's own rejections (an outer rate limiter's 429) and calls the client
//! cancelled (the future was dropped) are ignored. Open, calls are answered at once with
//! [`Rejection::CircuitOpen`](crate::Rejection::CircuitOpen): 503 with `Retry-After` set to the
//! open time left, rounded up, never 0, and the inner service is not called. Half-open, a
//! bounded number of probe calls go through (slots are taken atomically across all clones; a
//! probe whose caller drops it frees its slot) and the others are rejected.
//!
//! Put your timeout *inside* the breaker (`ServiceBuilder::new().layer(breaker).timeout(..)`):
//! the breaker then sees a hung call as a timeout, a failure. A timeout outside it drops the
//! breaker's future, which counts as a cancelled call and is ignored, so a hanging dependency
//! would never open the breaker. A timeout that answers with a status instead of an error
//! (tower-http's answers 408) needs a classifier that counts that status.
//!
//! The closed path takes no lock: it reads one atomic word, and recording an outcome is one or
//! two atomic read-modify-writes on the window (see the `window` source for the layout).
//!
//! Compared with tower: tower has no breaker. Compared with resilience4j: the same states, windows
//! and thresholds; transitions out of open happen on the next call rather than on a timer (no
//! background task), and the defaults are tuned for HTTP services.
//!
//! # Defaults
//!
//! | setting | default | resilience4j | why ours differs |
//! | --- | --- | --- | --- |
//! | sliding window | time, 30 s of 1 s buckets | count, 100 calls | a count window over 100 calls reacts in milliseconds under load and never in a quiet hour; a time window means the same thing at every traffic level |
//! | minimum calls | 20 | 100 | 100 calls in 30 s is more traffic than many upstreams get; 20 is still enough not to open on a fluke |
//! | failure rate threshold | 50 % | 50 % | |
//! | slow calls | off | on at 60 s, 100 % | a timeout layer is the usual guard against slowness; turn this on with a duration that means "slow" for your upstream |
//! | wait in open | 30 s, ×2 per consecutive re-open, up to 5 min | 60 s, constant | probe soon after a blip, back off from an upstream that stays down |
//! | half-open probes | 3 | 10 | enough to judge, few enough not to hurt a recovering upstream |
//! | max wait in half-open | 60 s | unbounded | a hung probe must not keep the breaker half-open forever |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get, http::StatusCode};
//! use bulwark::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
//!
//! let config = CircuitBreakerConfig::builder()
//!     .name("recommendations")
//!     .count_window(10)
//!     .minimum_calls(5)
//!     .failure_rate_threshold(50.0)
//!     .wait_in_open(Duration::from_secs(5))
//!     .half_open_probes(2)
//!     .build()?;
//! let breaker = CircuitBreakerLayer::new(config)
//!     .on_state_change(|change| eprintln!("{} is now {}", change.name, change.to));
//! let handle = breaker.handle();
//!
//! let app: Router = Router::new()
//!     .route("/recommendations", get(|| async { StatusCode::BAD_GATEWAY }))
//!     .layer(breaker);
//! assert_eq!(handle.state(), CircuitState::Closed);
//! # Ok::<(), bulwark::ConfigError>(())
//! ```
//!
//! # When hooks fire
//!
//! `on_state_change` runs once per transition, on the thread whose call caused it (or that called
//! the handle's `force_*`/`reset`), after the new state is visible. Every transition also emits a
//! `tracing` event (target `bulwark::circuit_breaker`, `WARN` when opening) and updates the
//! `bulwark_circuit_breaker_state` gauge and `bulwark_circuit_breaker_transitions_total` counter.
//!
//! Every refused call counts in `bulwark_circuit_breaker_rejections_total{breaker}`, and its
//! [`Rejection::CircuitOpen`](crate::Rejection::CircuitOpen) (in the 503's extensions and in
//! the `bulwark::rejection` event) names the breaker, so with several breakers the logs and
//! metrics say which one is refusing. The client's problem body does not name it.
//!
//! # Per-key breakers
//!
//! [`CircuitBreakerLayer::per_key`] keeps one breaker per key (an upstream host, a route, a
//! tenant), so one failing upstream does not cut off the healthy ones behind the same layer.
//! The number of keys is bounded; the least recently used are dropped past it. Keys never
//! become metric labels: a key's transitions and refusals count under the layer's name, and
//! only the breaker shared by requests without a key sets the state gauge. The layer's
//! [`on_state_change`](KeyedCircuitBreakerLayer::on_state_change) hook hears every key's
//! breaker, each named `name[key]`.
//!
//! # Non-HTTP services
//!
//! [`generic`] has the same breaker for any `Service`, failing rejected calls with a
//! [`generic::CircuitOpen`] error.

mod config;
mod future;
pub mod generic;
mod handle;
mod keyed;
mod layer;
mod metrics;
mod service;
mod state;
mod window;

pub use self::{
    config::{CircuitBreakerConfig, CircuitBreakerConfigBuilder, SlidingWindow},
    future::ResponseFuture,
    handle::{CircuitBreakerHandle, CircuitBreakerMetrics},
    keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerLayer},
    layer::CircuitBreakerLayer,
    service::CircuitBreaker,
    state::{CircuitState, StateChange},
};
