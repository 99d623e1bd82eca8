//! `/admin/*`: the admin API, all of it behind an `Authorization: Bearer <token>` check.
//!
//! To add an admin route: write its handler below and add one `.route(..)` line to [`router`];
//! the token check covers it (and any unknown `/admin/...` path) without further work.

use std::{
    collections::{BTreeMap, hash_map::RandomState},
    fmt::{self, Write as _},
    hash::BuildHasher,
    sync::{Arc, atomic::Ordering},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{AUTHORIZATION, WWW_AUTHENTICATE},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};

use crate::{AppState, routes::problem};

/// The admin routes, relative to `/admin`, with the token check applied to all of them.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/chaos", post(chaos))
        .route("/breakers", get(breakers))
        .route("/flags", get(crate::flags::list))
        .route("/flags/{name}", put(crate::flags::put))
        .fallback(crate::routes::not_found)
        .layer(middleware::from_fn_with_state(state, require_admin_token))
}

#[derive(Serialize)]
struct StatsReport {
    payments_charged: u64,
    products_queries: u64,
    uptime_seconds: u64,
}

/// `GET /admin/stats`: the shop's counters.
async fn stats(State(state): State<AppState>) -> Json<StatsReport> {
    Json(StatsReport {
        payments_charged: state.stats.payments_charged.load(Ordering::Relaxed),
        products_queries: state.stats.products_queries.load(Ordering::Relaxed),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosRequest {
    target: String,
    #[serde(default)]
    failure_rate: f32,
    #[serde(default)]
    latency_ms: u64,
}

#[derive(Serialize)]
struct ChaosReport {
    target: String,
    failure_rate: f32,
    latency_ms: u64,
}

/// `POST /admin/chaos`: `{"target": "recommendations" | "user" | "posts" | "notifications",
/// "failure_rate": 0.0..1.0, "latency_ms": int}` sets that upstream's injected faults.
async fn chaos(
    State(state): State<AppState>,
    body: Result<Json<ChaosRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(body) => body,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    if !(0.0..=1.0).contains(&req.failure_rate) {
        return problem(
            StatusCode::BAD_REQUEST,
            "failure_rate must be between 0.0 and 1.0.",
        );
    }
    let Some(upstream) = state.upstreams.get(&req.target) else {
        let detail = format!(
            "Unknown target; one of: {}.",
            crate::sim::TARGETS.join(", ")
        );
        return problem(StatusCode::BAD_REQUEST, &detail);
    };
    upstream.set(req.failure_rate, req.latency_ms);
    tracing::warn!(target = %req.target, failure_rate = req.failure_rate, latency_ms = req.latency_ms, "chaos set");
    Json(ChaosReport {
        target: req.target,
        failure_rate: upstream.failure_rate(),
        latency_ms: upstream.latency_ms(),
    })
    .into_response()
}

#[derive(Serialize)]
struct BreakerReport {
    state: &'static str,
    calls: u64,
    failures: u64,
    failure_rate: Option<f64>,
    rejected: u64,
}

/// `GET /admin/breakers`: every breaker's state and window.
async fn breakers(State(state): State<AppState>) -> Json<BTreeMap<&'static str, BreakerReport>> {
    Json(
        state
            .breakers
            .handles()
            .into_iter()
            .map(|(name, handle)| {
                let m = handle.metrics();
                let report = BreakerReport {
                    state: m.state.as_str(),
                    calls: m.calls,
                    failures: m.failures,
                    failure_rate: m.failure_rate,
                    rejected: m.rejected,
                };
                (name, report)
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// The token check
// ---------------------------------------------------------------------------------------------

/// Lets the request through only with `Authorization: Bearer <the admin token>`; otherwise 401
/// problem+json with `WWW-Authenticate` (RFC 6750).
async fn require_admin_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match bearer_token(req.headers()) {
        Some(token) if state.admin_token.matches(token) => next.run(req).await,
        Some(_) => unauthorized(
            "Bearer realm=\"shop admin\", error=\"invalid_token\"",
            "The bearer token is not the admin token.",
        ),
        None => unauthorized(
            "Bearer realm=\"shop admin\"",
            "The admin API requires `Authorization: Bearer <token>`.",
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(challenge: &'static str, detail: &str) -> Response {
    let mut res = problem(StatusCode::UNAUTHORIZED, detail);
    res.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    res
}

/// The admin bearer token. Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AdminToken(Arc<str>);

impl AdminToken {
    /// The shortest token accepted from configuration.
    const MIN_LEN: usize = 16;

    /// A configured token: at least 16 visible ASCII characters (no spaces), so that it fits
    /// in an `Authorization` header as is.
    pub(crate) fn new(token: &str) -> Result<Self, String> {
        if token.len() < Self::MIN_LEN {
            return Err(format!("must be at least {} characters", Self::MIN_LEN));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters without spaces".to_owned());
        }
        Ok(Self(Arc::from(token)))
    }

    /// A random token: 64 hex digits from SipHash keyed with 128 OS-random bits.
    ///
    /// `RandomState` draws its keys from the operating system's generator, and SipHash is a
    /// keyed pseudo-random function, so the token carries the key's 128 bits of randomness.
    /// A real service would take its secrets from a secret store instead.
    pub(crate) fn generate() -> Self {
        let keyed = RandomState::new();
        let mut token = String::with_capacity(64);
        for i in 0u64..4 {
            // Writing to a `String` cannot fail.
            let _ = write!(token, "{:016x}", keyed.hash_one(i));
        }
        Self(Arc::from(token))
    }

    /// Whether `provided` is this token, in time that does not depend on where they differ.
    pub(crate) fn matches(&self, provided: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), provided.as_bytes())
    }

    /// The secret itself, to print or send.
    pub(crate) fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Compares a secret with a candidate in time that depends only on the secret's length: every
/// byte of `secret` is looked at whatever the candidate holds, and no branch depends on the
/// bytes. The secret's length is not hidden (a generated token's length is public anyway).
fn constant_time_eq(secret: &[u8], candidate: &[u8]) -> bool {
    let mut diff = u8::from(secret.len() != candidate.len());
    for (i, &s) in secret.iter().enumerate() {
        let c = candidate.get(i).copied().unwrap_or(!s);
        // `black_box` keeps the optimiser from turning the fold into an early exit.
        diff |= std::hint::black_box(s ^ c);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};

    use super::*;
    use crate::tests::{TEST_TOKEN, get, json, send, test_state};

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret-token", b"Secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-toke"));
        assert!(!constant_time_eq(b"secret-token", b"secret-token-"));
        assert!(!constant_time_eq(b"secret-token", b""));
        assert!(!constant_time_eq(b"", b"x"));
        // Bytes past the secret's end count as a difference.
        assert!(!constant_time_eq(b"a", &[b'a', !b'a']));
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = AdminToken::generate();
        let b = AdminToken::generate();
        assert_eq!(a.reveal().len(), 64);
        assert!(a.reveal().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(AdminToken::new(a.reveal()).is_ok());
        assert_eq!(format!("{a:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn configured_tokens_are_checked() {
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("sixteen chars ok").is_err());
        assert!(AdminToken::new("sixteen-chars-ok").is_ok());
        assert!(AdminToken::new("sixteen-chars-é!").is_err());
    }

    #[test]
    fn bearer_token_parsing() {
        let token = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            bearer_token(&headers).map(str::to_owned)
        };
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    async fn assert_unauthorized(res: Response<Body>, detail: &str) {
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let challenge = res.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(res.headers().contains_key("x-request-id"));
        let body = json(res).await;
        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["title"], "Unauthorized");
        assert_eq!(body["status"], 401);
        assert!(body["detail"].as_str().unwrap().contains(detail), "{body}");
    }

    #[tokio::test]
    async fn stats_without_token() {
        let res = get("/admin/stats", &[]).await;
        assert_unauthorized(res, "requires").await;
        let res = get(
            "/admin/stats",
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
        )
        .await;
        assert_unauthorized(res, "requires").await;
    }

    #[tokio::test]
    async fn stats_with_wrong_token() {
        let res = get("/admin/stats", &[("authorization", "Bearer not-the-token")]).await;
        let challenge = res.headers()["www-authenticate"].clone();
        assert_eq!(
            challenge,
            "Bearer realm=\"shop admin\", error=\"invalid_token\""
        );
        assert_unauthorized(res, "not the admin token").await;
    }

    #[tokio::test]
    async fn stats_with_token() {
        let state = test_state();
        state.stats.payments_charged.store(3, Ordering::Relaxed);
        let req = Request::get("/admin/stats")
            .header("authorization", format!("Bearer {TEST_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let res = send(state, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = json(res).await;
        assert_eq!(body["payments_charged"], 3);
        assert!(body["uptime_seconds"].is_u64(), "{body}");
    }

    #[tokio::test]
    async fn unknown_admin_paths_need_the_token_too() {
        // Without the token nobody learns which admin routes exist.
        let res = get("/admin/nope", &[]).await;
        assert_unauthorized(res, "requires").await;
        let bearer = format!("Bearer {TEST_TOKEN}");
        let res = get("/admin/nope", &[("authorization", bearer.as_str())]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}
