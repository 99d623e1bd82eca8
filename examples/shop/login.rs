//! Rate limiting: `POST /login` (5 attempts per minute per client IP) and the global limit of
//! 50 requests per second per client IP, with bursts of 200, around every route.
//!
//! The lesson: protect your APIs before someone abuses them. Every login attempt counts,
//! successful or not and whatever its body, since the limiter decides before the handler reads
//! anything. Clients are keyed by IP through [`TrustedProxyIp`], which by default trusts no
//! proxy: the key is the connection's peer address, and an `X-Forwarded-For` header sent by the
//! client changes nothing. Behind a load balancer, list its networks in `SHOP_TRUSTED_PROXIES`
//! and the chain it writes is read from the right, only as far as those proxies wrote it.
//!
//! With `--redis` both limiters count in Redis, so every instance sharing that Redis shares
//! each client's quota; if Redis fails, each instance falls back to its own memory limiter.

use std::num::NonZeroU32;

use axum::{
    Json,
    body::Bytes,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bulwark::{
    DefaultResponseForRejection,
    key::{IpNet, TrustedProxyIp},
    rate_limit::{Quota, RateLimitLayer},
};
use serde::{Deserialize, Serialize};
use tower::util::Either;

use crate::{Store, routes::problem};

/// Login attempts per minute per client IP.
pub(crate) const LOGIN_PER_MINUTE: u32 = 5;
/// Requests per second per client IP on every route, and the burst on top.
pub(crate) const GLOBAL_PER_SECOND: u32 = 50;
/// See [`GLOBAL_PER_SECOND`].
pub(crate) const GLOBAL_BURST: u32 = 200;

/// A rate limiter keyed by client IP, counting in memory or in Redis.
pub(crate) type Limit = Either<
    RateLimitLayer<TrustedProxyIp>,
    RateLimitLayer<
        TrustedProxyIp,
        (),
        DefaultResponseForRejection,
        bulwark::rate_limit::store::RedisStore,
    >,
>;

/// The shop's two rate limiters. Each is one layer value, built once with the state, so it is
/// one limiter however often axum applies it.
#[derive(Debug)]
pub(crate) struct Limits {
    /// `POST /login`: 5 attempts per minute per client IP.
    pub(crate) login: Limit,
    /// Every route: 50 requests per second per client IP, bursts of 200.
    pub(crate) global: Limit,
}

impl Limits {
    /// Both limiters, keyed by client IP through `trusted_proxies` (none: the peer address),
    /// counting where `store` keeps shared state.
    /// `global_rps` replaces the global limit's 50 requests per second (bursts of at least
    /// 200), for load runs.
    pub(crate) fn new(
        store: &Store,
        trusted_proxies: &[IpNet],
        global_rps: Option<NonZeroU32>,
    ) -> Self {
        let n = |n| NonZeroU32::new(n).expect("the shop's quotas are non-zero constants");
        let (per_second, burst) = match global_rps {
            Some(rps) => (rps, rps.max(n(GLOBAL_BURST))),
            None => (n(GLOBAL_PER_SECOND), n(GLOBAL_BURST)),
        };
        let key = TrustedProxyIp::new(trusted_proxies.iter().copied());
        let login = RateLimitLayer::new(Quota::per_minute(n(LOGIN_PER_MINUTE)).named("login"))
            .name("login")
            .key(key.clone())
            .headers_on_allowed(true);
        let global =
            RateLimitLayer::new(Quota::per_second(per_second).burst(burst).named("global"))
                .name("global")
                .key(key);
        Self {
            login: with_store(login, store),
            global: with_store(global, store),
        }
    }
}

fn with_store(layer: RateLimitLayer<TrustedProxyIp>, store: &Store) -> Limit {
    match store {
        Store::Memory => Either::Left(layer),
        Store::Redis(redis) => Either::Right(layer.redis(redis.clone())),
    }
}

/// What `POST /login` accepts.
#[derive(Deserialize)]
struct Credentials {
    user: String,
    password: String,
}

#[derive(Serialize)]
struct Welcome<'a> {
    user: &'a str,
}

/// `POST /login` with JSON `{"user", "password"}`: 200 for `demo`/`demo`, 401 otherwise, 400
/// for a body that is not that JSON. The rate limit in front of it has already counted the
/// attempt.
pub(crate) async fn login(body: Bytes) -> Response {
    // An object only: serde would also take the array `["user", "password"]` for the struct.
    let credentials = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
        .and_then(|object| serde_json::from_value::<Credentials>(object.into()));
    let Ok(credentials) = credentials else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Expected a JSON object {\"user\": string, \"password\": string}.",
        );
    };
    // Both compared in full whatever the first says (`&`, not `&&`), so the answer's timing
    // does not tell which one was wrong.
    let valid = eq(&credentials.user, "demo") & eq(&credentials.password, "demo");
    if valid {
        (StatusCode::OK, Json(Welcome { user: "demo" })).into_response()
    } else {
        tracing::info!(target: "shop::login", "login refused");
        problem(StatusCode::UNAUTHORIZED, "Wrong user name or password.")
    }
}

/// `a == b`, taking the same time for every `a` of `b`'s length.
fn eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::{
        body::Body,
        extract::ConnectInfo,
        http::{Request, StatusCode},
    };
    use tower::ServiceExt;

    use crate::{
        app,
        tests::{json, test_state},
    };

    fn post(body: &str, peer: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut req = Request::post("/login").header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut req = req.body(Body::from(body.to_owned())).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    }

    const GOOD: &str = r#"{"user":"demo","password":"demo"}"#;
    const BAD: &str = r#"{"user":"demo","password":"guess"}"#;

    #[tokio::test(start_paused = true)]
    async fn demo_demo_logs_in_others_are_refused_bad_json_is_400() {
        let state = test_state();
        let res = app(state.clone())
            .oneshot(post(GOOD, "192.0.2.1:1000", &[]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["ratelimit"], "\"login\";r=4;t=12");
        assert_eq!(res.headers()["ratelimit-policy"], "\"login\";q=5;w=60");
        assert_eq!(json(res).await, serde_json::json!({"user": "demo"}));

        let res = app(state.clone())
            .oneshot(post(BAD, "192.0.2.1:1000", &[]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["content-type"], "application/problem+json");

        for bad in ["", "{", r#"{"user":"demo"}"#, r#"["demo","demo"]"#] {
            let res = app(state.clone())
                .oneshot(post(bad, "192.0.2.2:1000", &[]))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_sixth_attempt_is_429_and_forged_forwarding_does_not_help() {
        let state = test_state();
        // Attempts of every kind count: good, bad, malformed.
        for (i, body) in [GOOD, BAD, "nope", BAD, GOOD].into_iter().enumerate() {
            let res = app(state.clone())
                .oneshot(post(body, "198.51.100.7:1000", &[]))
                .await
                .unwrap();
            assert_ne!(res.status(), StatusCode::TOO_MANY_REQUESTS, "attempt {i}");
        }
        let res = app(state.clone())
            .oneshot(post(GOOD, "198.51.100.7:1000", &[]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=12).contains(&retry), "{retry}");
        assert_eq!(res.headers()["ratelimit-policy"], "\"login\";q=5;w=60");
        assert!(
            res.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"login\";r=0;t="),
        );
        assert_eq!(res.headers()["content-type"], "application/problem+json");

        // A forged X-Forwarded-For (no proxy is trusted) is not a new client.
        let res = app(state.clone())
            .oneshot(post(
                GOOD,
                "198.51.100.7:1001",
                &[("x-forwarded-for", "203.0.113.9")],
            ))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

        // Another client still has its five attempts.
        let res = app(state.clone())
            .oneshot(post(GOOD, "198.51.100.8:1000", &[]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);

        // One attempt comes back every 12 seconds.
        tokio::time::advance(std::time::Duration::from_secs(12)).await;
        let res = app(state.clone())
            .oneshot(post(GOOD, "198.51.100.7:1000", &[]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app(state)
            .oneshot(post(GOOD, "198.51.100.7:1000", &[]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test(start_paused = true)]
    async fn behind_a_trusted_proxy_the_forwarded_client_is_the_key() {
        let proxy: bulwark::key::IpNet = "10.0.0.0/8".parse().unwrap();
        let state = crate::AppState::with_trusted_proxies(
            crate::Store::Memory,
            crate::admin::AdminToken::new(crate::tests::TEST_TOKEN).unwrap(),
            &[proxy],
        );
        let through = |client: &str| {
            post(
                BAD,
                "10.1.2.3:4000",
                &[("x-forwarded-for", &format!("{client}, 10.9.9.9"))],
            )
        };
        for _ in 0..5 {
            let res = app(state.clone())
                .oneshot(through("192.0.2.50"))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        let res = app(state.clone())
            .oneshot(through("192.0.2.50"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        // A different client behind the same proxy is counted apart.
        let res = app(state).oneshot(through("192.0.2.51")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test(start_paused = true)]
    async fn every_route_shares_a_global_limit_per_client() {
        let state = test_state();
        let get = |peer: &str| {
            let mut req = Request::get("/healthz").body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
            req
        };
        // Time stands still: exactly the burst passes, then one more every 20 ms.
        let mut allowed = 0u32;
        let mut refused = None;
        for _ in 0..300 {
            let res = app(state.clone())
                .oneshot(get("192.0.2.9:1"))
                .await
                .unwrap();
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                refused = Some(res);
                break;
            }
            allowed += 1;
        }
        let refused = refused.expect("the global limit refuses past the burst");
        assert_eq!(allowed, super::GLOBAL_BURST);
        assert_eq!(refused.headers()["ratelimit-policy"], "\"global\";q=50;w=1");
        assert!(refused.headers().contains_key("x-request-id"));
        // Another client is not affected.
        let res = app(state.clone())
            .oneshot(get("192.0.2.10:1"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // 20 ms later the first client has one more request.
        tokio::time::advance(std::time::Duration::from_millis(20)).await;
        let res = app(state.clone())
            .oneshot(get("192.0.2.9:1"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app(state).oneshot(get("192.0.2.9:1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn without_redis_each_instance_falls_back_to_its_own_limit() {
        // Nothing listens on port 1: every Redis call fails, and the limiters decide locally.
        let store = crate::Store::open(Some("redis://127.0.0.1:1/")).unwrap();
        let state = crate::AppState::new(
            store,
            crate::admin::AdminToken::new(crate::tests::TEST_TOKEN).unwrap(),
        );
        for _ in 0..5 {
            let res = app(state.clone())
                .oneshot(post(BAD, "192.0.2.77:1", &[]))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        let res = app(state)
            .oneshot(post(GOOD, "192.0.2.77:1", &[]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn eq_compares_whole_strings() {
        assert!(super::eq("demo", "demo"));
        assert!(!super::eq("demo", "dem"));
        assert!(!super::eq("demO", "demo"));
        assert!(!super::eq("", "demo"));
    }
}
