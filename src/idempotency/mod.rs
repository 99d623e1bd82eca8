//! [`IdempotencyLayer`]: a retried unsafe request runs once; its retries get the first response
//! again. A double-clicked payment button charges once.
//!
//! Follows the IETF draft "The Idempotency-Key HTTP Header Field" and the behaviour payment APIs
//! are known for. tower and tower-http have no such layer.
//!
//! ```
//! use bulwark::idempotency::{IdempotencyLayer, IdempotencyStore};
//! use http::{Request, Response, StatusCode};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let charges = Arc::new(AtomicUsize::new(0));
//! let counter = charges.clone();
//! let svc = ServiceBuilder::new()
//!     .layer(IdempotencyLayer::new(IdempotencyStore::memory()).require_key(true))
//!     .service(service_fn(move |_req: Request<_>| {
//!         let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!         async move {
//!             let res = Response::builder()
//!                 .status(201)
//!                 .header("location", format!("/payments/{n}"))
//!                 .body(format!(r#"{{"id":{n}}}"#))
//!                 .unwrap();
//!             Ok::<_, std::convert::Infallible>(res)
//!         }
//!     }));
//!
//! let pay = || {
//!     Request::post("/payments")
//!         .header("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
//!         .body(String::from(r#"{"amount":100}"#))
//!         .unwrap()
//! };
//! let first = svc.clone().oneshot(pay()).await.unwrap();
//! let retry = svc.clone().oneshot(pay()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//! assert_eq!(retry.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["location"], "/payments/1");
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! assert_eq!(charges.load(Ordering::SeqCst), 1);
//!
//! let no_key = Request::post("/payments").body(String::new()).unwrap();
//! assert_eq!(svc.oneshot(no_key).await.unwrap().status(), StatusCode::BAD_REQUEST);
//! # }
//! ```
//!
//! # What happens to a request
//!
//! Requests with other methods than the configured ones (default `POST` and `PATCH`), or to
//! other routes, pass through untouched, their body unread. For the others:
//!
//! 1. **Key.** `Idempotency-Key` as a structured-field string (`"abc"`) or a bare token (`abc`);
//!    both are the same key. 1 to 255 visible ASCII characters without commas, one field:
//!    otherwise 400 [`IdempotencyKeyInvalid`](crate::Rejection::IdempotencyKeyInvalid). No key:
//!    the request passes through, or, with [`require_key`](IdempotencyLayer::require_key), 400
//!    [`IdempotencyKeyMissing`](crate::Rejection::IdempotencyKeyMissing).
//! 2. **Scope.** Keys live in the namespace of a [`ScopeExtractor`] (default: a hash of the
//!    `Authorization` header), so two principals using one key never meet.
//! 3. **Fingerprint.** The body is read (up to 1 MiB; above it 413
//!    [`PayloadTooLarge`](crate::Rejection::PayloadTooLarge)) and hashed with SHA-256 together
//!    with the method, path and query, `Content-Type`, configured headers and the scope.
//! 4. **Claim.** The key is claimed atomically with a lease (60 s) and an owner token. If it is
//!    already taken with another fingerprint: 422
//!    [`IdempotencyMismatch`](crate::Rejection::IdempotencyMismatch). Taken by a request still
//!    in flight: 409 [`IdempotencyInFlight`](crate::Rejection::IdempotencyInFlight) with
//!    `Retry-After` (or, with
//!    [`wait_for_in_flight`](IdempotencyConfigBuilder::wait_for_in_flight), a bounded wait and
//!    then the replay). Completed: the stored response, exactly as first sent (status, headers,
//!    body) plus `Idempotent-Replayed: true`.
//! 5. **Run and store.** The owner runs the inner service (which finds the [`IdempotencyKey`]
//!    in the request extensions). Its response is stored for the retention period (24 h), minus
//!    hop-by-hop headers, by an owner-checked compare-and-set: a response arriving after its
//!    lease ended is never stored over a newer claim. A body over the response limit (1 MiB) is
//!    sent, and the key recorded as "completed, too large to replay": retries get 409
//!    [`IdempotencyNotReplayable`](crate::Rejection::IdempotencyNotReplayable), never a second
//!    execution. The body is read before the response goes out (up to that limit; past it the
//!    rest streams), so a keyed answer that streams slowly (server-sent events, a long
//!    completion) reaches its client only once it ends or passes the limit: keep such routes
//!    out of the layer's [`routes`](IdempotencyConfigBuilder::routes).
//! 6. **Release.** A 5xx answer, a bulwark rejection or fallback answer from an inner layer,
//!    or an inner `Err` frees the key so a retry runs (each configurable). A request dropped before its answer
//!    (the client went away) and a crashed worker keep the key claimed until the lease ends:
//!    the lease is separate from the retention, so one never holds a key for the other's
//!    time. The same holds for a request dropped while its claim was on the way to Redis (the
//!    claim may have been made without an answer): the key is blocked until the lease ends,
//!    never forever.
//!
//! Keeping a cancelled request's key until its lease ends is the safe default: a handler
//! dropped half-way may already have done what must not happen twice (charged a card), and a
//! retry within the lease gets 409 instead of a second execution. For handlers whose effects
//! are one atomic step (the shop's charge is),
//! [`release_on_cancel(true)`](IdempotencyConfigBuilder::release_on_cancel) frees the key at
//! once, if the handler had not answered yet.
//!
//! # Stores and their failure policy
//!
//! [`IdempotencyStore::memory`] keeps entries in this process (bounded by bytes, moka);
//! [`IdempotencyStore::redis`] (feature `redis`) shares them between instances, with atomic Lua
//! scripts for claim, complete and release. When the store fails (Redis down, or slower than
//! the [`Redis`](crate::redis::Redis) call timeout), the layer **fails closed** by default: 503
//! [`BackendUnavailable`](crate::Rejection::BackendUnavailable) with `Retry-After: 1`, the inner
//! service not called, since running without the store could run the request twice.
//! [`failure_policy`](IdempotencyConfigBuilder::failure_policy) chooses otherwise:
//! [`FailurePolicy::FailOpen`](crate::FailurePolicy::FailOpen) runs it unprotected,
//! [`FailurePolicy::Local`](crate::FailurePolicy::Local) claims the key in this instance's memory
//! until the store answers again (a retry that reaches the same instance is still answered from
//! its first attempt; one that reaches another instance may run again). Scripts are atomic, so
//! a store that fails mid-way never holds a half-written entry.
//!
//! On a Redis Cluster, a failover is such a failure for the keys of the dead primary's slots,
//! until its replica is promoted (a few seconds with `cluster-node-timeout 2000`): those keys
//! follow the policy, the others are served as usual, and afterwards the same handle serves
//! every key again. A replica promoted before it received a record's last write does not have
//! it: Redis replicates asynchronously, so a key completed in the last moments before a
//! failover may run again when retried. Redis' `min-replicas-to-write` and
//! `min-replicas-max-lag` narrow that window; where it must be closed, give the operation an
//! idempotent effect of its own as well (the charge's own id at the payment provider).
//!
//! # Defaults
//!
//! See [`IdempotencyConfig`].
//!
//! # Events and metrics
//!
//! Keys are never logged: events carry `key`, the first 12 hex digits of the SHA-256 of the
//! scope and key. Target `bulwark::idempotency`: `DEBUG` for claims, replays, in-flight answers
//! and releases, `INFO` for mismatches and responses too large to keep, `WARN` for store
//! failures and responses whose lease ended. Every keyed request's outcome increments
//! `bulwark_idempotency_requests_total{outcome}` (`new`, `replayed`, `in_flight`, `mismatch`,
//! `not_replayable`, `released`, `lease_lost`, `store_error`), also readable from an
//! [`IdempotencyHandle`]; rejections are counted in `bulwark_rejections_total` as well.

mod config;
mod fingerprint;
mod future;
mod handle;
mod key;
mod layer;
mod metrics;
mod scope;
mod service;
pub mod store;

use http::HeaderName;

#[allow(deprecated)]
pub use self::config::OnStoreError;
pub use self::{
    config::{IdempotencyConfig, IdempotencyConfigBuilder},
    fingerprint::{Fingerprint, StoreKey},
    future::ResponseFuture,
    handle::{IdempotencyHandle, IdempotencyStats},
    key::{IdempotencyKey, InvalidIdempotencyKey, MAX_KEY_LEN},
    layer::IdempotencyLayer,
    scope::{AuthorizationScope, HeaderScope, ScopeExtractor},
    service::Idempotency,
    store::{IdempotencyStore, MemoryStore, Store},
};

/// The `Idempotency-Key` request header field.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

pub use crate::marker::IDEMPOTENT_REPLAYED;
