//! Tests: two shops on one Redis Cluster share limits, idempotency keys, cache and flags
//! exactly as on one node.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode},
};
use tower::ServiceExt;

use crate::{AppState, Store, admin::AdminToken, app, servers, tests::TEST_TOKEN};

fn from_peer(mut req: Request<Body>) -> Request<Body> {
    let peer: SocketAddr = "192.0.2.9:4000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

async fn send(state: &AppState, req: Request<Body>) -> axum::response::Response {
    app(state.clone()).oneshot(from_peer(req)).await.unwrap()
}

fn pay(key: &str) -> Request<Body> {
    Request::post("/payments")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(r#"{"amount":700,"currency":"EUR"}"#))
        .unwrap()
}

fn login() -> Request<Body> {
    Request::post("/login")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"user":"demo","password":"guess"}"#))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shops_on_one_cluster_share_every_state() {
    let Some(cluster) = servers::Deployment::start(servers::Backend::Cluster) else {
        return;
    };
    let seeds: Vec<String> = cluster.servers.iter().map(|s| s.url()).collect();
    let shop = || {
        AppState::new(
            Store::open_cluster(&seeds).unwrap(),
            AdminToken::new(TEST_TOKEN).unwrap(),
        )
    };
    let (a, b) = (shop(), shop());

    // One payment per key across both shops: the second is a replay.
    let first = send(&a, pay("fleet-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = send(&b, pay("fleet-1")).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(first.headers()["location"], again.headers()["location"]);

    // One login limit (5 per minute per client IP) across both shops.
    let mut limited = None;
    for i in 0..6 {
        let shop = if i % 2 == 0 { &a } else { &b };
        let res = send(shop, login()).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(i);
            break;
        }
    }
    assert_eq!(
        limited,
        Some(5),
        "the sixth attempt, on either shop, is refused"
    );

    // One cache: what one shop stored, the other serves.
    let get = || Request::get("/products").body(Body::empty()).unwrap();
    assert_eq!(send(&a, get()).await.status(), StatusCode::OK);
    let hit = send(&b, get()).await;
    let status = hit.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(status.contains("hit"), "{status}");

    // One set of flags: a kill switch set through one shop's admin API reaches the other.
    let summary = || {
        Request::get("/ai/summary")
            .header("x-user-tier", "premium")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&b, summary()).await.status(),
        StatusCode::OK,
        "on before"
    );
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/admin/flags/ai-summary")
        .header("authorization", format!("Bearer {TEST_TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"enabled":false}"#))
        .unwrap();
    assert!(send(&a, put).await.status().is_success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = send(&b, summary()).await;
        if res.status() != StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kill switch never reached the other shop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
