//! [`RateLimitLayer`]: limit how often each client (or anything you key requests by) may call
//! a service, and tell it when to come back.
//!
//! Each request is counted against one or more [`Quota`]s for its key, with the GCRA (generic
//! cell rate algorithm: a token bucket without a refill task, as in [governor]). A request that
//! fits is passed to the inner service; one that does not is answered at once with
//! [`Rejection::RateLimited`](crate::Rejection::RateLimited): 429, `Retry-After` (whole seconds,
//! rounded up, at least 1), the `RateLimit-Policy` and `RateLimit` fields, and an RFC 9457
//! problem+json body, built by the one rejection builder of the crate.
//!
//! Compared with tower's `RateLimit`: tower's counts all requests together, and enforces its
//! limit in `poll_ready`, by waiting, which stalls every clone of the service behind it. This
//! layer decides in `call`, answers at once, keeps one bucket per key, and shares its state
//! between every clone. Compared with tower-governor: the same algorithm (on tokio's clock, so
//! tests with paused time drive it), plus bounded key
//! tables, several quotas per layer, request costs, run-time quota changes, the IETF headers,
//! and a Redis store shared by instances.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use axum::{Router, routing::post};
//! use bulwark::{key::PeerIp, rate_limit::{Quota, RateLimitLayer}};
//!
//! let n = |n| NonZeroU32::new(n).unwrap();
//! // 5 login attempts per minute per client IP, and 50 per second globally with bursts of 200.
//! let login = RateLimitLayer::new(Quota::per_minute(n(5)).named("login"))
//!     .name("login")
//!     .key(PeerIp::new());
//! let global = RateLimitLayer::new(Quota::per_second(n(50)).burst(n(200)))
//!     .name("global")
//!     .key(PeerIp::new())
//!     .headers_on_allowed(true);
//!
//! let app: Router = Router::new()
//!     .route("/login", post(|| async { "welcome" }).layer(login))
//!     .layer(global);
//! // Serve with `into_make_service_with_connect_info::<SocketAddr>()` so `PeerIp` finds the
//! // peer address.
//! ```
//!
//! # Defaults
//!
//! | setting | default | builder |
//! | --- | --- | --- |
//! | key | [`GlobalKey`](crate::key::GlobalKey): one bucket for every request | [`RateLimitLayer::key`] |
//! | burst | the quota's rate | [`Quota::burst`] |
//! | quota name (`RateLimit-Policy` item) | `"default"` | [`Quota::named`] |
//! | limiter name (metrics, logs, Redis keys) | `"default"` | [`RateLimitLayer::name`] |
//! | cost of a request | 1 | [`RateLimitLayer::cost`] |
//! | request without a key | one shared bucket ([`MissingKey::SharedBucket`]) | [`RateLimitLayer::missing_key`] |
//! | `RateLimit` headers on allowed responses | off (on 429s always) | [`RateLimitLayer::headers_on_allowed`] |
//! | keys in memory per quota | 100,000, then one overflow bucket | [`RateLimitLayer::max_keys`] |
//! | store | memory | [`RateLimitLayer::redis`] |
//! | on Redis failure | decide with the local memory limiter ([`FailurePolicy::Local`](store::FailurePolicy::Local)) | [`RateLimitLayer::failure_policy`] |
//! | Redis call timeout and key prefix | 250 ms, `bulwark` | [`Redis`](crate::redis::Redis) |
//!
//! # Quotas
//!
//! A [`Quota`] is a rate per period with a burst: `Quota::per_minute(5)` lets a key make 5
//! requests at once, then one every 12 seconds. A layer may hold several, each with its own
//! name (say 10 per second and 1,000 per hour): a request passes only if every quota allows
//! it, and a request refused by one quota takes nothing from the others. The memory store
//! checks each quota in turn and gives back what the allowing ones took when another refuses
//! (in the instant between, a concurrent request of the same key may see the lower count: the
//! error is on the strict side); the Redis script checks all before it writes any. The answer
//! describes the deciding quota: on a 429 the one with the longest wait, on an allowed response
//! the one with the fewest requests left.
//!
//! [`RateLimitHandle::set_quotas`] replaces the quotas while the layer serves; the next request
//! sees the new ones.
//!
//! # Costs
//!
//! By default a request costs 1. With [`RateLimitLayer::cost`] a closure gives each request its
//! weight (a batch endpoint may cost its batch size). A cost of 0 passes uncounted. A cost above
//! a quota's burst can never fit: such a request is refused at once (429, `Retry-After` of the
//! quota's period, `RateLimit-Policy` showing a quota `q` below the cost) and logged at `WARN`,
//! never left waiting.
//!
//! # Keys
//!
//! Keys come from the shared [`key`](crate::key) extractors: [`PeerIp`](crate::key::PeerIp) for
//! clients that connect directly, [`TrustedProxyIp`](crate::key::TrustedProxyIp) behind load
//! balancers (a client cannot change its key by sending `X-Forwarded-For` itself), a header, or
//! your closure. IPv6 clients are grouped by `/64`. A request without a key follows
//! [`MissingKey`]: by default all such requests share one bucket, and the first one logs a
//! warning, since it usually means the server does not put the peer address in the request.
//!
//! # Headers
//!
//! The fields follow [draft-ietf-httpapi-ratelimit-headers-09]: `RateLimit-Policy:
//! "login";q=5;w=60` (the quota's name, its rate `q` per window `w` seconds) and `RateLimit:
//! "login";r=0;t=12` (requests left now, seconds until the bucket is full again). With a burst
//! above the rate, `r` can exceed `q`. Set on every 429, and on allowed responses with
//! [`RateLimitLayer::headers_on_allowed`]; one item, the deciding quota's.
//!
//! # Memory bounds
//!
//! The memory store keeps, per quota, one table entry per key: a 64-bit keyed hash of the key
//! (raw keys are never stored) and the key's GCRA state, 16 bytes. Entries whose bucket has
//! been full for a while are pruned, amortised over insertions
//! (never on every request). A table holds at most `max_keys` keys plus two shared buckets;
//! a new key that finds it full shares an *overflow bucket* with every other such key until
//! pruning makes room, so a flood of new keys is limited together and existing keys keep
//! their own state. A table's capacity (entries it holds without growing) stays below
//! `2 × (max_keys + 2) + 8 × shards`, where the table has four shards per CPU rounded up to a
//! power of two (each shard's hash table at most doubles past its entries when it grows), and
//! each unit of capacity costs about 20 bytes (a 16-byte entry and a control byte, at most 7/8
//! full). So the default costs at most about 4 MB per quota on a machine of a few dozen CPUs,
//! whatever number of distinct keys arrives: after a million
//! distinct keys with `max_keys` 10,000 the test suite measures 10,001 entries in a capacity
//! of 14,336 (about 280 KB). [`RateLimitHandle::key_tables`] shows the numbers.
//!
//! # Redis
//!
//! With the `redis` feature, [`RateLimitLayer::redis`] moves the counts to Redis, so that every
//! instance of an application shares one quota per key: the same GCRA, in one atomic Lua script
//! per request (one round trip), on the server's clock (`TIME`), so instances with skewed
//! clocks agree. Keys are `<prefix>:ratelimit:{<limiter>:<client>}:<quota>`, expire when their
//! bucket is full again, and never contain secrets: IPs appear as text, other keys (API keys,
//! tokens) as a SHA-1 hash: of the bytes for header values and strings, of the `Debug` text
//! for your own key types, so such a type's `Debug` must tell keys apart and stay the same
//! across instances (a redacting `Debug` that prints `***` puts every client in one bucket;
//! return the key as a `String` instead). Two layers with the same Redis prefix and limiter name share their
//! counts; that is how instances share a quota, and why each limiter of an application needs
//! its own [`name`](RateLimitLayer::name).
//!
//! When Redis fails or answers later than the [`Redis`](crate::redis::Redis) call timeout, the
//! [`FailurePolicy`](store::FailurePolicy) decides: the local memory limiter with the same
//! quotas (default), let everything through, or refuse with 503
//! [`Rejection::BackendUnavailable`](crate::Rejection::BackendUnavailable). Either way the
//! change is logged (`WARN` when Redis goes, `INFO` when it is back) and counted.
//!
//! # What it reports
//!
//! - Metrics (feature `metrics`): `bulwark_rate_limit_requests_total{limiter, decision}` with
//!   `decision` `allowed` or `rejected`, `bulwark_rate_limit_store_fallbacks_total{limiter,
//!   policy}`, `bulwark_rate_limit_overflow_total{limiter}`, and the crate-wide
//!   `bulwark_rejections_total`. Labels are names you chose, never a request's key.
//! - `tracing` events, target `bulwark::rate_limit`: `DEBUG` per refused request (limiter,
//!   quota, cost, wait; never the key), `WARN` for a full key table, a cost above the burst, the
//!   first request without a key and Redis going away.
//! - The [`Rejection`](crate::Rejection) extension on every 429 and 503.
//!
//! [governor]: https://docs.rs/governor
//! [draft-ietf-httpapi-ratelimit-headers-09]: https://datatracker.ietf.org/doc/html/draft-ietf-httpapi-ratelimit-headers-09

mod cost;
mod future;
#[cfg(all(fuzzing, feature = "redis"))]
#[doc(hidden)]
pub mod fuzzing;
mod gcra;
mod handle;
mod layer;
mod limiter;
mod metrics;
mod quota;
mod service;
pub mod store;
mod table;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::future::RedisResponseFuture;
pub use self::{
    cost::{MissingKey, RequestCost},
    future::ResponseFuture,
    handle::RateLimitHandle,
    layer::RateLimitLayer,
    quota::Quota,
    service::RateLimit,
};
