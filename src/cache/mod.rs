//! [`CacheLayer`]: a response cache with HTTP semantics, so that a slow handler is called once
//! for many readers. "Databases are expensive. Memory is cheap."
//!
//! Two modes:
//!
//! - **policy** (the default, [`CacheLayer::new`]): RFC 9111 shared-cache rules from the
//!   response's own headers (`Cache-Control` with `s-maxage`, `max-age`, `no-store`, `no-cache`,
//!   `private`, `must-revalidate`; `Expires`, `Age`, `Date`; `Vary`; validators), computed by
//!   [`http-cache-semantics`](https://docs.rs/http-cache-semantics). Heuristic freshness is off
//!   unless [`heuristic_freshness`](CacheLayer::heuristic_freshness) turns it on. Stale entries
//!   with a validator are revalidated with `If-None-Match` / `If-Modified-Since`; a `304` turns
//!   the stored answer fresh again. A `304` whose `ETag` is not the stored one's refreshes
//!   nothing (RFC 9111 section 4.3.4): the entry is dropped, and a client whose own conditionals
//!   it does not satisfy gets the stored answer whole (`detail=validator-mismatch`). A client's own `If-None-Match` / `If-Modified-Since` is
//!   answered by the cache (`304` when it matches the stored or fetched answer) and never
//!   forwarded with a miss or a revalidation, so a revalidating client still fills the cache.
//!   `stale-while-revalidate` and `stale-if-error` (RFC 5861) are
//!   built on top, from the directives or as layer defaults. The RFC 9213 targeted field
//!   `CDN-Cache-Control` (or your own) takes precedence when configured.
//! - **forced TTL** ([`CacheLayer::ttl`]): every `2xx` answer to a `GET` is fresh for a fixed
//!   time, for handlers that set no caching headers.
//!
//! Compared with tower-http: it has no cache. Compared with a CDN: the same `Cache-Status`
//! vocabulary (RFC 9211), coalescing and stale serving, inside your process.
//!
//! # Example
//!
//! ```
//! use std::{sync::{Arc, atomic::{AtomicUsize, Ordering}}, time::Duration};
//! use axum::{Router, body::Body, routing::get};
//! use bulwark::cache::{CacheLayer, CacheStore};
//! use http::Request;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counted = calls.clone();
//! let app = Router::new()
//!     .route("/products", get(move || {
//!         counted.fetch_add(1, Ordering::SeqCst);
//!         async { "[\"kettle\", \"teapot\"]" }
//!     }))
//!     .layer(CacheLayer::new(CacheStore::memory(64 * 1024 * 1024)).ttl(Duration::from_secs(10)));
//!
//! let get = || Request::get("/products").body(Body::empty()).unwrap();
//! let first = app.clone().oneshot(get()).await.unwrap();
//! assert_eq!(first.headers()["cache-status"], "bulwark; fwd=miss; fwd-status=200; stored");
//! let second = app.oneshot(get()).await.unwrap();
//! assert!(second.headers()["cache-status"].to_str().unwrap().starts_with("bulwark; hit; ttl="));
//! assert!(second.headers().contains_key("age"));
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # }
//! ```
//!
//! # What is stored
//!
//! Only answers to `GET` (a `HEAD` is answered from the stored `GET`, and never fills the cache).
//! Never stored: answers with `Set-Cookie`; `Cache-Control: private` or `no-store`; `Vary: *`;
//! answers to requests with `Authorization` or `Cookie` unless the response says `public`,
//! `s-maxage` or `must-revalidate`, or [`allow_authorized`](CacheLayer::allow_authorized) is on;
//! bulwark's own answers (a [`Rejection`](crate::Rejection), a fallback answer with
//! `bulwark-fallback`, an idempotent replay with `Idempotent-Replayed`); `206` and `304`; bodies
//! over [`max_body_bytes`](CacheLayer::max_body_bytes), which are streamed through untouched.
//! Range requests bypass the cache. In policy mode, an answer with neither explicit freshness nor
//! a validator is not stored.
//!
//! A successful (`2xx`, `3xx`) unsafe request (`POST`, `PUT`, `PATCH`, `DELETE`, ...) removes the
//! stored answers for its URI and for same-host `Location` and `Content-Location` URIs
//! (RFC 9111 section 4.4) before its answer is returned.
//!
//! # Keys
//!
//! The base key is `GET <authority><path>?<query>` (the authority from the URI, else the `Host`
//! header), or what your [`key`](CacheLayer::key) hook returns. A URL whose answers carry `Vary`
//! gets an index under the base key (the varying header names) and one entry per variant, under
//! `<base key>\0<index id>\0<the request's values of those headers>`; replacing the index
//! (an invalidation, another `Vary`) makes all old variants unreachable at once; they stay in
//! the store, unreachable, until their own expiry (the memory store's byte bound counts them;
//! [`CacheHandle::purge`] removes them too). The
//! values of credential headers (`Authorization`, `Cookie`, names containing `auth`, `token`,
//! `key`, `session`, ...) are never part of a key or a stored entry: their SHA-256 digest is.
//! Cache events (target `bulwark::cache`) name the key with the query's secret values redacted,
//! as the request log does.
//! [`CacheHandle::purge`] removes one base key, [`CacheHandle::purge_prefix`] every key with a
//! prefix.
//!
//! ```
//! use std::time::Duration;
//! use bulwark::cache::{CacheLayer, CacheStore};
//! use http::Request;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bulwark::StoreError> {
//! let layer = CacheLayer::new(CacheStore::memory(1 << 20)).ttl(Duration::from_secs(60));
//! let handle = layer.handle(); // after configuring: builder methods make a new cache
//!
//! // The key of a request, as the layer makes it; then drop it, or a whole catalog.
//! let (parts, ()) = Request::get("http://shop.test/products?page=2").body(()).unwrap().into_parts();
//! let key = handle.key_for(&parts).unwrap();
//! assert_eq!(key, "GET shop.test/products?page=2");
//! handle.purge(&key).await?;
//! handle.purge_prefix("GET shop.test/products").await?;
//! # Ok(()) }
//! ```
//!
//! Shared between instances through Redis (feature `redis`):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use bulwark::{cache::{CacheLayer, CacheStore}, redis::Redis};
//!
//! let redis = Redis::open("redis://127.0.0.1:6379/")?.prefix("shop");
//! let layer = CacheLayer::new(CacheStore::redis(redis)).ttl(Duration::from_secs(10));
//! # let _ = layer; Ok(()) }
//! ```
//!
//! # Coalescing
//!
//! Concurrent misses for one key make one inner call: the first request leads, the others wait
//! (at most [`coalesce_wait`](CacheLayer::coalesce_wait)) and are answered from the stored entry
//! with `Cache-Status: bulwark; fwd=miss; collapsed`. When the leader's answer is not stored
//! (not cacheable, too large, an error, or the leader's client went away), each waiter calls the
//! inner service itself: a waiter never gets an answer meant for someone else. Requests with
//! credentials never wait.
//!
//! # Cache-Status and Age
//!
//! Every answer that passed through the layer gets this cache's RFC 9211 `Cache-Status` member
//! appended (and a [`CacheStatus`] extension); answers from the store get `Age`.
//!
//! | situation | `Cache-Status` |
//! | --- | --- |
//! | fresh hit | `bulwark; hit; ttl=7` |
//! | stale, served while one background request refreshes | `bulwark; hit; ttl=-3; detail=stale-while-revalidate` |
//! | waited for a concurrent miss | `bulwark; fwd=miss; collapsed` |
//! | miss, stored | `bulwark; fwd=miss; fwd-status=200; stored` |
//! | miss, not stored | `bulwark; fwd=miss; fwd-status=200; detail=set-cookie` |
//! | other variant | `bulwark; fwd=vary-miss; ...` |
//! | stale, revalidated with `304` | `bulwark; fwd=stale; fwd-status=304; stored` |
//! | stale, the origin's `304` names another `ETag` | `bulwark; fwd=stale; fwd-status=304; detail=validator-mismatch` |
//! | stale, inner failed, served stale | `bulwark; fwd=stale; fwd-status=503; ttl=-2; detail=stale-if-error` |
//! | client asked for a fresh answer | `bulwark; fwd=request; ...` |
//! | unsafe method | `bulwark; fwd=method; fwd-status=201` |
//! | bypassed (range, key hook, store down) | `bulwark; fwd=bypass; fwd-status=200; detail=store-unavailable` |
//!
//! # Stores
//!
//! [`CacheStore::memory`] is a moka cache bounded by bytes (bodies and headers weighed), each
//! entry expiring after its own retention. [`CacheStore::redis`] (feature `redis`) shares entries
//! between instances; when Redis fails, the layer **bypasses** the cache: answers are still
//! served, the failure is logged (`bulwark::cache` target) and counted
//! (`bulwark_store_errors_total`). Your own [`Store`] plugs in with [`CacheStore::custom`].
//!
//! # Defaults
//!
//! | setting | default |
//! | --- | --- |
//! | mode | policy, heuristic freshness off |
//! | targeted field | none (`cdn_cache_control()` to honour `CDN-Cache-Control`) |
//! | stale-while-revalidate / stale-if-error | from the response's directives only |
//! | body limit | 1 MiB |
//! | coalescing wait | 10 s |
//! | retention of stale entries with validators | 5 min |
//! | requests with `Authorization` / `Cookie` | not stored unless the response allows it |
//!
//! # Time
//!
//! Freshness follows the wall clock as seen through tokio's clock, so tests can pause time and
//! advance it (`tokio::time::advance`). Outside a paused runtime the system's clock is read
//! again once a second, so a clock set or stepped after start-up (NTP synchronised late) is
//! followed within a second: entries written to a shared store carry absolute times.

mod clock;
mod coalesce;
mod conditional;
mod directives;
mod entry;
mod freshness;
mod future;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod invalidate;
mod layer;
mod metrics;
mod pipeline;
mod policy;
mod respond;
mod service;
mod settle;
mod shared;
mod status;
mod storable;
pub mod store;
mod vary;

pub use self::{
    future::ResponseFuture,
    layer::{CacheHandle, CacheLayer},
    service::Cache,
    status::{CACHE_STATUS, CacheOutcome, CacheStatus},
    store::{CacheStore, Entry, MemoryStore, Store},
};
