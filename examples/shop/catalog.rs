//! `GET /products`: the caching lesson. "Databases are expensive. Memory is cheap."
//!
//! The handler asks a slow simulated database (80 ms a query) and sets no caching headers; the
//! route's [`CacheLayer`] in forced-TTL mode keeps its answer for 10 s, so one query serves every
//! reader in that time, and concurrent misses make one query between them. Answers carry
//! `Cache-Status` (`shop; fwd=miss; stored`, then `shop; hit; ttl=9`) and `Age` on hits. With
//! `--redis` the cache is shared by every instance.

use std::{sync::atomic::Ordering, time::Duration};

use axum::{Json, extract::State};
use bulwark::cache::{CacheLayer, CacheStore};
use serde::Serialize;

use crate::{AppState, Store};

/// How long the simulated database takes to answer.
pub(crate) const QUERY_TIME: Duration = Duration::from_millis(80);
/// How long `/products` answers are kept.
pub(crate) const PRODUCTS_TTL: Duration = Duration::from_secs(10);

/// The `/products` cache: forced TTL of 10 s, in memory (32 MiB) or in the shared Redis, also for
/// requests with cookies or credentials.
pub(crate) fn products_cache(store: &Store) -> CacheLayer {
    let store = match store {
        Store::Memory => CacheStore::memory(32 * 1024 * 1024),
        Store::Redis(redis) => CacheStore::redis(redis.clone()),
    };
    CacheLayer::new(store)
        .ttl(PRODUCTS_TTL)
        // The catalog is the same for everyone: browsers' cookies must not turn every request
        // into a database query.
        .allow_authorized(true)
        .name("shop")
        .expect("a valid cache name")
}

#[derive(Serialize)]
pub(crate) struct Product {
    id: u32,
    name: &'static str,
    price_cents: u32,
}

const CATALOG: [(u32, &str, u32); 4] = [
    (1, "kettle", 2_999),
    (2, "teapot", 1_899),
    (3, "mug", 799),
    (4, "tea sampler", 1_499),
];

/// `GET /products`: the catalog, from the slow database.
pub(crate) async fn products(State(state): State<AppState>) -> Json<Vec<Product>> {
    state.stats.products_queries.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(QUERY_TIME).await;
    Json(
        CATALOG
            .iter()
            .map(|&(id, name, price_cents)| Product {
                id,
                name,
                price_cents,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::{body::Body, http::Request};

    use crate::tests::{send, test_state};

    #[tokio::test]
    async fn miss_then_hit_with_age() {
        let state = test_state();
        let get = || Request::get("/products").body(Body::empty()).unwrap();
        let first = send(state.clone(), get()).await;
        assert_eq!(first.status(), 200);
        assert_eq!(
            first.headers()["cache-status"],
            "shop; fwd=miss; fwd-status=200; stored"
        );
        let second = send(state.clone(), get()).await;
        let status = second.headers()["cache-status"].to_str().unwrap();
        assert!(status.starts_with("shop; hit; ttl="), "{status}");
        assert!(second.headers().contains_key("age"));
        assert_eq!(state.stats.products_queries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn concurrent_readers_share_one_query() {
        let state = test_state();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                send(
                    state,
                    Request::get("/products").body(Body::empty()).unwrap(),
                )
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().status(), 200);
        }
        assert_eq!(state.stats.products_queries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn redis_down_still_serves_products() {
        use crate::{AppState, Store, admin::AdminToken};
        // Nothing listens on port 1: the cache bypasses, the database answers.
        let store = Store::open(Some("redis://127.0.0.1:1/")).unwrap();
        let state = AppState::new(store, AdminToken::new(crate::tests::TEST_TOKEN).unwrap());
        let res = send(
            state,
            Request::get("/products").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(res.status(), 200);
        let status = res.headers()["cache-status"].to_str().unwrap();
        assert!(status.contains("fwd=bypass"), "{status}");
    }
}
