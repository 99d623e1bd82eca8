//! `--demo`: starts the shop on a free loopback port, runs every [`SCENARIOS`] entry against it
//! as an HTTP client, prints a table and reports whether every scenario behaved as specified.
//!
//! To add a scenario: write an `async fn my_scenario(ctx: &Ctx) -> Result<Verdict, String>`
//! below (`ctx.get`/`ctx.send` make requests; `?` on a failed request fails the scenario with
//! that error) and append one entry to [`SCENARIOS`]:
//!
//! ```text
//! Scenario {
//!     name: "GET /products twice",
//!     expected: "second answer is a cache hit",
//!     run: |ctx| Box::pin(products_cached(ctx)),
//! },
//! ```
//!
//! Scenarios run in list order against one server, so a scenario may rely on the state earlier
//! ones left behind (an open breaker, a used-up rate limit).

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    process::ExitCode,
    time::Duration,
};

use axum::http::{HeaderMap, Method, Request, StatusCode, request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot};

use crate::{AppState, Store, admin::AdminToken};

/// How long one scenario may take before it fails.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the shop may take to drain after the last scenario.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A scenario's future; borrowing the [`Ctx`] it runs with.
pub(crate) type ScenarioFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Verdict, String>> + Send + 'a>>;

/// One demo scenario: what it shows, what should happen, and the client code that checks it.
pub(crate) struct Scenario {
    name: &'static str,
    expected: &'static str,
    run: for<'a> fn(&'a Ctx) -> ScenarioFuture<'a>,
}

/// Every scenario, in the order they run. Append new ones at the end.
pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "GET /healthz",
        expected: "200 {\"status\":\"ok\"}",
        run: |ctx| Box::pin(healthz(ctx)),
    },
    Scenario {
        name: "GET /readyz",
        expected: "200 ready, store reachable",
        run: |ctx| Box::pin(readyz(ctx)),
    },
    Scenario {
        name: "valid x-request-id",
        expected: "echoed unchanged",
        run: |ctx| Box::pin(request_id_kept(ctx)),
    },
    Scenario {
        name: "a request's log line",
        expected: "JSON with request_id, http.route, status, duration",
        run: |ctx| Box::pin(log_line(ctx)),
    },
    Scenario {
        name: "no x-request-id",
        expected: "a generated 36-char UUIDv7",
        run: |ctx| Box::pin(request_id_generated(ctx)),
    },
    Scenario {
        name: "x-request-id with a space",
        expected: "replaced by a UUIDv7",
        run: |ctx| Box::pin(request_id_with_space(ctx)),
    },
    Scenario {
        name: "x-request-id of 200 chars",
        expected: "replaced by a UUIDv7",
        run: |ctx| Box::pin(request_id_too_long(ctx)),
    },
    Scenario {
        name: "GET /no-such-route",
        expected: "404 problem+json, x-request-id",
        run: |ctx| Box::pin(unknown_route(ctx)),
    },
    Scenario {
        name: "GET /admin/stats, no token",
        expected: "401 problem+json, WWW-Authenticate",
        run: |ctx| Box::pin(admin_without_token(ctx)),
    },
    Scenario {
        name: "GET /admin/stats, wrong token",
        expected: "401 invalid_token",
        run: |ctx| Box::pin(admin_with_wrong_token(ctx)),
    },
    Scenario {
        name: "GET /admin/stats, admin token",
        expected: "200 JSON with payments_charged",
        run: |ctx| Box::pin(admin_with_token(ctx)),
    },
    // Breaker + fallback: /recommendations and /dashboard.
    Scenario {
        name: "GET /recommendations, healthy",
        expected: "200 personal list, no fallback",
        run: |ctx| Box::pin(recommendations_healthy(ctx)),
    },
    Scenario {
        name: "chaos: recommendations fail",
        expected: "200, failure_rate 1.0",
        run: |ctx| Box::pin(chaos(ctx, "recommendations", 1.0, 0)),
    },
    Scenario {
        name: "recommendations fail",
        expected: "200 last good list, fallback: status",
        run: |ctx| Box::pin(recommendations_fallback(ctx)),
    },
    Scenario {
        name: "breaker opens",
        expected: "open; fallback: circuit-open",
        run: |ctx| Box::pin(breaker_opens(ctx)),
    },
    Scenario {
        name: "chaos off",
        expected: "200, failure_rate 0.0",
        run: |ctx| Box::pin(chaos(ctx, "recommendations", 0.0, 0)),
    },
    Scenario {
        name: "breaker closes after 5 s",
        expected: "2 probes pass; closed",
        run: |ctx| Box::pin(breaker_closes(ctx)),
    },
    Scenario {
        name: "dashboard, 1 failing + 1 slow",
        expected: "200 < 1.5 s, degraded user+posts",
        run: |ctx| Box::pin(dashboard_degraded(ctx)),
    },
    // Idempotency: /payments.
    Scenario {
        name: "POST /payments",
        expected: "201 payment, Location, charged once",
        run: |ctx| Box::pin(payment_first(ctx)),
    },
    Scenario {
        name: "POST /payments, same key again",
        expected: "201 same body, Idempotent-Replayed: true",
        run: |ctx| Box::pin(payment_replayed(ctx)),
    },
    Scenario {
        name: "POST /payments, same key, other body",
        expected: "422 problem+json, not charged",
        run: |ctx| Box::pin(payment_mismatch(ctx)),
    },
    Scenario {
        name: "POST /payments, no key",
        expected: "400 problem+json",
        run: |ctx| Box::pin(payment_without_key(ctx)),
    },
    Scenario {
        name: "16 concurrent double-clicks",
        expected: "one charge; others 201 replays or 409",
        run: |ctx| Box::pin(payment_burst(ctx)),
    },
    // Rate limiting: 5 login attempts per minute per client IP; every attempt counts.
    Scenario {
        name: "POST /login demo/demo",
        expected: "200, RateLimit r=4 (attempt 1 of 5)",
        run: |ctx| Box::pin(login_ok(ctx)),
    },
    Scenario {
        name: "POST /login wrong password",
        expected: "401 problem+json (attempt 2)",
        run: |ctx| Box::pin(login_wrong(ctx)),
    },
    Scenario {
        name: "POST /login bad JSON",
        expected: "400 problem+json (attempt 3)",
        run: |ctx| Box::pin(login_bad_json(ctx)),
    },
    Scenario {
        name: "6th login attempt in a minute",
        expected: "attempts 4-5 pass; 429, Retry-After, RateLimit",
        run: |ctx| Box::pin(login_sixth(ctx)),
    },
    Scenario {
        name: "login with spoofed X-Forwarded-For",
        expected: "still 429: no proxy is trusted",
        run: |ctx| Box::pin(login_spoofed(ctx)),
    },
    Scenario {
        name: "a rejected request's log line",
        expected: "bulwark.rejection=rate_limited, its request_id, 429",
        run: |ctx| Box::pin(rejection_logged(ctx)),
    },
    // Caching: /products.
    Scenario {
        name: "GET /products twice",
        expected: "miss then hit, Cache-Status and Age",
        run: |ctx| Box::pin(products_cached(ctx)),
    },
    Scenario {
        name: "20 concurrent GET /products",
        expected: "1 slow database query for all 20",
        run: |ctx| Box::pin(products_coalesced(ctx)),
    },
    // Feature flags: /ai/summary behind `ai-summary`, and the kill switch.
    Scenario {
        name: "ai summary, premium",
        expected: "200 (flag on for premium)",
        run: |ctx| Box::pin(ai_summary(ctx, "premium", StatusCode::OK)),
    },
    Scenario {
        name: "ai summary, basic",
        expected: "404 problem+json (flag off)",
        run: |ctx| Box::pin(ai_summary(ctx, "basic", StatusCode::NOT_FOUND)),
    },
    Scenario {
        name: "flag kill switch",
        expected: "PUT {enabled:false}; premium 404",
        run: |ctx| Box::pin(flag_kill_switch(ctx)),
    },
    Scenario {
        name: "flag on for everyone",
        expected: "PUT {enabled:true}; basic 200",
        run: |ctx| Box::pin(flag_on_for_everyone(ctx)),
    },
];

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

const PAYMENT: &str = r#"{"amount":1200,"currency":"EUR"}"#;

/// `name` made unique to this demo run, so a rerun against the same Redis (where keys are kept
/// for 24 h) starts afresh.
fn run_key(name: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| RandomState::new().hash_one(0u8));
    format!("{name}-{run:016x}")
}

/// `POST /payments` with `key` (if any) and `body`.
fn payment(
    ctx: &Ctx,
    key: Option<&str>,
    body: &'static str,
) -> Result<Request<Full<Bytes>>, String> {
    let mut req = ctx
        .request(Method::POST, "/payments")
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| format!("bad request: {e}"))
}

/// `payments_charged` from `GET /admin/stats`.
async fn charged(ctx: &Ctx) -> Result<u64, String> {
    let bearer = ctx.bearer();
    let res = ctx
        .get("/admin/stats", &[("authorization", bearer.as_str())])
        .await?;
    res.json()?["payments_charged"]
        .as_u64()
        .ok_or_else(|| format!("no payments_charged in {}", res.summary()))
}

async fn payment_first(ctx: &Ctx) -> Result<Verdict, String> {
    let before = charged(ctx).await?;
    let res = ctx
        .send(payment(ctx, Some(&run_key("demo-payment-1")), PAYMENT)?)
        .await?;
    let body = res.json()?;
    let passed = res.status == StatusCode::CREATED
        && body["amount"] == 1200
        && body["currency"] == "EUR"
        && body["id"]
            .as_str()
            .is_some_and(|id| res.header("location") == format!("/payments/{id}"))
        && res.headers.get("idempotent-replayed").is_none()
        && charged(ctx).await? == before + 1;
    Ok(Verdict::new(
        passed,
        format!("{} location: {}", res.summary(), res.header("location")),
    ))
}

async fn payment_replayed(ctx: &Ctx) -> Result<Verdict, String> {
    let before = charged(ctx).await?;
    let res = ctx
        .send(payment(ctx, Some(&run_key("demo-payment-1")), PAYMENT)?)
        .await?;
    // The stored payment is what the first answer said.
    let stored = ctx.get(res.header("location"), &[]).await?;
    let passed = res.status == StatusCode::CREATED
        && res.header("idempotent-replayed") == "true"
        && stored.status == StatusCode::OK
        && res.json()? == stored.json()?
        && charged(ctx).await? == before;
    Ok(Verdict::new(
        passed,
        format!(
            "{} replayed: {}",
            res.summary(),
            res.header("idempotent-replayed")
        ),
    ))
}

async fn payment_mismatch(ctx: &Ctx) -> Result<Verdict, String> {
    let before = charged(ctx).await?;
    let other = r#"{"amount":9900,"currency":"EUR"}"#;
    let res = ctx
        .send(payment(ctx, Some(&run_key("demo-payment-1")), other)?)
        .await?;
    let passed = res.status == StatusCode::UNPROCESSABLE_ENTITY
        && res.header("content-type") == "application/problem+json"
        && charged(ctx).await? == before;
    Ok(Verdict::new(passed, res.summary()))
}

async fn payment_without_key(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.send(payment(ctx, None, PAYMENT)?).await?;
    let passed = res.status == StatusCode::BAD_REQUEST
        && res.header("content-type") == "application/problem+json";
    Ok(Verdict::new(passed, res.summary()))
}

async fn payment_burst(ctx: &Ctx) -> Result<Verdict, String> {
    const N: usize = 16;
    let before = charged(ctx).await?;
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let client = ctx.client.clone();
        let req = payment(ctx, Some(&run_key("demo-double-click")), PAYMENT)?;
        tasks.push(tokio::spawn(async move { client.request(req).await }));
    }
    let (mut created, mut replayed, mut conflicts) = (0, 0, 0);
    for task in tasks {
        let res = task
            .await
            .map_err(|e| format!("task failed: {e}"))?
            .map_err(|e| format!("request failed: {e}"))?;
        match res.status() {
            StatusCode::CREATED if res.headers().contains_key("idempotent-replayed") => {
                replayed += 1
            }
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => return Ok(Verdict::new(false, format!("unexpected {other}"))),
        }
    }
    let charges = charged(ctx).await? - before;
    Ok(Verdict::new(
        charges == 1 && created == 1 && replayed + conflicts == N - 1,
        format!("charged {charges}; 201 {created}, replays {replayed}, 409 {conflicts}"),
    ))
}

async fn healthz(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.get("/healthz", &[]).await?;
    let passed = res.status == StatusCode::OK && res.json()? == serde_json::json!({"status": "ok"});
    Ok(Verdict::new(passed, res.summary()))
}

async fn readyz(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.get("/readyz", &[]).await?;
    let body = res.json()?;
    let passed = res.status == StatusCode::OK
        && body["status"] == "ready"
        && body["store"]["reachable"] == true;
    Ok(Verdict::new(passed, res.summary()))
}

async fn request_id_kept(ctx: &Ctx) -> Result<Verdict, String> {
    let sent = "demo-request.42:a_b";
    let res = ctx.get("/healthz", &[("x-request-id", sent)]).await?;
    let got = res.header("x-request-id");
    Ok(Verdict::new(got == sent, format!("x-request-id: {got}")))
}

async fn log_line(ctx: &Ctx) -> Result<Verdict, String> {
    let id = "demo-log-line-1";
    ctx.get("/healthz?token=s3cret", &[("x-request-id", id)])
        .await?;
    let v = logged(id).await?;
    let passed = v["request_id"] == id
        && v["http.route"] == "/healthz"
        && v["http.response.status_code"] == 200
        && v["url.query"] == "token=REDACTED"
        && v["duration_ms"].is_number();
    Ok(Verdict::new(
        passed,
        format!(
            "route={} status={} query={} duration_ms={}",
            v["http.route"], v["http.response.status_code"], v["url.query"], v["duration_ms"]
        ),
    ))
}

/// The request log's completion line for request id `id`, from the demo's log tap. The line is
/// written when the response body ends, which may be just after the client has it.
async fn logged(id: &str) -> Result<Value, String> {
    let needle = format!("\"request_id\":\"{id}\"");
    for _ in 0..100 {
        let lines = crate::telemetry::LogTap::global().lines_containing(&needle);
        if let Some(line) = lines
            .iter()
            .find(|l| l.contains("\"http.response.status_code\""))
        {
            return serde_json::from_str(line).map_err(|e| format!("log line is not JSON: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("no completion log line with request_id {id}"))
}

async fn request_id_generated(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.get("/healthz", &[]).await?;
    let got = res.header("x-request-id");
    Ok(Verdict::new(
        is_uuid_v7(got),
        format!("x-request-id: {got}"),
    ))
}

async fn request_id_with_space(ctx: &Ctx) -> Result<Verdict, String> {
    request_id_replaced(ctx, "not valid").await
}

async fn request_id_too_long(ctx: &Ctx) -> Result<Verdict, String> {
    request_id_replaced(ctx, &"a".repeat(200)).await
}

async fn request_id_replaced(ctx: &Ctx, sent: &str) -> Result<Verdict, String> {
    let res = ctx.get("/healthz", &[("x-request-id", sent)]).await?;
    let got = res.header("x-request-id");
    Ok(Verdict::new(
        got != sent && is_uuid_v7(got),
        format!("x-request-id: {got}"),
    ))
}

async fn unknown_route(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.get("/no-such-route", &[]).await?;
    let passed = res.status == StatusCode::NOT_FOUND
        && res.header("content-type") == "application/problem+json"
        && res.json()?["status"] == 404
        && !res.header("x-request-id").is_empty();
    Ok(Verdict::new(
        passed,
        format!("{} {}", res.status.as_u16(), res.header("content-type")),
    ))
}

async fn admin_without_token(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.get("/admin/stats", &[]).await?;
    let challenge = res.header("www-authenticate");
    let passed = res.status == StatusCode::UNAUTHORIZED
        && res.header("content-type") == "application/problem+json"
        && res.json()?["status"] == 401
        && challenge.starts_with("Bearer");
    Ok(Verdict::new(
        passed,
        format!("{} {}", res.status.as_u16(), res.header("content-type")),
    ))
}

async fn admin_with_wrong_token(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx
        .get("/admin/stats", &[("authorization", "Bearer wrong-token")])
        .await?;
    let challenge = res.header("www-authenticate");
    let passed = res.status == StatusCode::UNAUTHORIZED
        && res.header("content-type") == "application/problem+json"
        && challenge.contains("error=\"invalid_token\"");
    Ok(Verdict::new(
        passed,
        format!("{} {challenge}", res.status.as_u16()),
    ))
}

async fn admin_with_token(ctx: &Ctx) -> Result<Verdict, String> {
    let bearer = ctx.bearer();
    let res = ctx
        .get("/admin/stats", &[("authorization", bearer.as_str())])
        .await?;
    let passed = res.status == StatusCode::OK && res.json()?["payments_charged"].is_u64();
    Ok(Verdict::new(passed, res.summary()))
}

async fn recommendations_healthy(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.get("/recommendations", &[]).await?;
    let expected = serde_json::json!(crate::degrade::PERSONAL);
    let passed = res.status == StatusCode::OK
        && res.headers.get("bulwark-fallback").is_none()
        && res.json()? == expected;
    Ok(Verdict::new(passed, res.summary()))
}

/// `POST /admin/chaos` for `target`.
async fn chaos(
    ctx: &Ctx,
    target: &str,
    failure_rate: f32,
    latency_ms: u64,
) -> Result<Verdict, String> {
    let body = serde_json::json!({"target": target, "failure_rate": failure_rate, "latency_ms": latency_ms});
    let req = ctx
        .request(Method::POST, "/admin/chaos")
        .header("authorization", ctx.bearer())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad request: {e}"))?;
    let res = ctx.send(req).await?;
    let passed = res.status == StatusCode::OK
        && (res.json()?["failure_rate"].as_f64() == Some(f64::from(failure_rate)));
    Ok(Verdict::new(passed, res.summary()))
}

async fn recommendations_fallback(ctx: &Ctx) -> Result<Verdict, String> {
    let res = ctx.get("/recommendations", &[]).await?;
    let expected = serde_json::json!(crate::degrade::PERSONAL);
    let reason = res.header("bulwark-fallback").to_owned();
    let passed = res.status == StatusCode::OK && reason == "status" && res.json()? == expected;
    Ok(Verdict::new(
        passed,
        format!("{} fallback: {reason}", res.status.as_u16()),
    ))
}

async fn breaker_state(ctx: &Ctx, name: &str) -> Result<String, String> {
    let bearer = ctx.bearer();
    let res = ctx
        .get("/admin/breakers", &[("authorization", bearer.as_str())])
        .await?;
    Ok(res.json()?[name]["state"]
        .as_str()
        .unwrap_or("?")
        .to_owned())
}

async fn breaker_opens(ctx: &Ctx) -> Result<Verdict, String> {
    // The window holds 1 success and 1 failure; 4 more failures reach the minimum of 5 calls
    // at 80 % failures, and the next call meets an open circuit.
    for _ in 0..4 {
        ctx.get("/recommendations", &[]).await?;
    }
    let state = breaker_state(ctx, "recommendations").await?;
    let res = ctx.get("/recommendations", &[]).await?;
    let reason = res.header("bulwark-fallback").to_owned();
    let passed = state == "open" && res.status == StatusCode::OK && reason == "circuit-open";
    Ok(Verdict::new(passed, format!("{state}; fallback: {reason}")))
}

async fn breaker_closes(ctx: &Ctx) -> Result<Verdict, String> {
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let res = ctx.get("/recommendations", &[]).await?;
        let clean = res.status == StatusCode::OK && res.headers.get("bulwark-fallback").is_none();
        statuses.push(clean);
    }
    let state = breaker_state(ctx, "recommendations").await?;
    let passed = statuses.iter().all(|ok| *ok) && state == "closed";
    Ok(Verdict::new(
        passed,
        format!("probes clean: {statuses:?}; {state}"),
    ))
}

async fn dashboard_degraded(ctx: &Ctx) -> Result<Verdict, String> {
    chaos(ctx, "user", 1.0, 0).await?;
    chaos(ctx, "posts", 0.0, 2_000).await?;
    let start = std::time::Instant::now();
    let res = ctx.get("/dashboard", &[]).await?;
    let elapsed = start.elapsed();
    chaos(ctx, "user", 0.0, 0).await?;
    chaos(ctx, "posts", 0.0, 0).await?;
    let body = res.json()?;
    let degraded = &body["degraded"];
    let passed = res.status == StatusCode::OK
        && elapsed < std::time::Duration::from_millis(1_500)
        && *degraded == serde_json::json!(["user", "posts"])
        && body["notifications"]
            .as_array()
            .is_some_and(|n| !n.is_empty());
    Ok(Verdict::new(
        passed,
        format!(
            "{} in {} ms, degraded {degraded}",
            res.status.as_u16(),
            elapsed.as_millis()
        ),
    ))
}

/// `POST /login` with `body` and extra `headers`.
async fn login_attempt(ctx: &Ctx, body: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    let mut req = ctx
        .request(Method::POST, "/login")
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| format!("bad request: {e}"))?;
    ctx.send(req).await
}

/// A refused login's log line (found in the demo's log tap by the request id the client
/// sent) names the rejection and the id. Runs after the login quota is used up.
async fn rejection_logged(ctx: &Ctx) -> Result<Verdict, String> {
    let id = "demo-rejected-login-1";
    let res = login_attempt(ctx, LOGIN_WRONG, &[("x-request-id", id)]).await?;
    if res.status != StatusCode::TOO_MANY_REQUESTS {
        return Ok(Verdict::new(
            false,
            format!("expected 429, got {}", res.summary()),
        ));
    }
    let v = logged(id).await?;
    let passed = v["bulwark.rejection"] == "rate_limited"
        && v["request_id"] == id
        && v["http.response.status_code"] == 429
        && v["level"] == "WARN";
    Ok(Verdict::new(
        passed,
        format!(
            "bulwark.rejection={} request_id={} status={} level={}",
            v["bulwark.rejection"], v["request_id"], v["http.response.status_code"], v["level"]
        ),
    ))
}

const LOGIN_GOOD: &str = r#"{"user":"demo","password":"demo"}"#;
const LOGIN_WRONG: &str = r#"{"user":"demo","password":"hunter2"}"#;

async fn login_ok(ctx: &Ctx) -> Result<Verdict, String> {
    let res = login_attempt(ctx, LOGIN_GOOD, &[]).await?;
    let limit = res.header("ratelimit").to_owned();
    let passed = res.status == StatusCode::OK
        && res.json()? == serde_json::json!({"user": "demo"})
        && limit.starts_with("\"login\";r=4;")
        && res.header("ratelimit-policy") == "\"login\";q=5;w=60";
    Ok(Verdict::new(
        passed,
        format!("{} RateLimit: {limit}", res.status.as_u16()),
    ))
}

async fn login_wrong(ctx: &Ctx) -> Result<Verdict, String> {
    let res = login_attempt(ctx, LOGIN_WRONG, &[]).await?;
    let passed = res.status == StatusCode::UNAUTHORIZED
        && res.header("content-type") == "application/problem+json"
        && res.json()?["status"] == 401;
    Ok(Verdict::new(
        passed,
        format!("{} {}", res.status.as_u16(), res.header("content-type")),
    ))
}

async fn login_bad_json(ctx: &Ctx) -> Result<Verdict, String> {
    let res = login_attempt(ctx, "{\"user\": ", &[]).await?;
    let passed = res.status == StatusCode::BAD_REQUEST
        && res.header("content-type") == "application/problem+json"
        && res.json()?["status"] == 400;
    Ok(Verdict::new(
        passed,
        format!("{} {}", res.status.as_u16(), res.header("content-type")),
    ))
}

/// The answer to a refused login as a table cell, and whether it is a proper 429.
fn login_refused(res: &Reply) -> (bool, String) {
    let retry_after = res.header("retry-after");
    let limit = res.header("ratelimit");
    let passed = res.status == StatusCode::TOO_MANY_REQUESTS
        && retry_after
            .parse::<u64>()
            .is_ok_and(|s| (1..=60).contains(&s))
        && limit.starts_with("\"login\";r=0;")
        && res.header("ratelimit-policy") == "\"login\";q=5;w=60"
        && res.header("content-type") == "application/problem+json";
    (
        passed,
        format!(
            "{} Retry-After: {retry_after}, RateLimit: {limit}",
            res.status.as_u16()
        ),
    )
}

async fn login_sixth(ctx: &Ctx) -> Result<Verdict, String> {
    for attempt in 4..=5 {
        let res = login_attempt(ctx, LOGIN_WRONG, &[]).await?;
        if res.status != StatusCode::UNAUTHORIZED {
            return Ok(Verdict::new(
                false,
                format!("attempt {attempt}: {}", res.status.as_u16()),
            ));
        }
    }
    // The right password does not help either: the limit comes first.
    let res = login_attempt(ctx, LOGIN_GOOD, &[]).await?;
    let (passed, got) = login_refused(&res);
    Ok(Verdict::new(passed, got))
}

async fn login_spoofed(ctx: &Ctx) -> Result<Verdict, String> {
    let res = login_attempt(ctx, LOGIN_GOOD, &[("x-forwarded-for", "203.0.113.77")]).await?;
    let (passed, got) = login_refused(&res);
    Ok(Verdict::new(passed, got))
}

async fn products_cached(ctx: &Ctx) -> Result<Verdict, String> {
    let first = ctx.get("/products", &[]).await?;
    let second = ctx.get("/products", &[]).await?;
    let (a, b) = (first.header("cache-status"), second.header("cache-status"));
    // With `--redis`, a run within 10 s of another may find the answer already shared.
    let first_ok = (a.contains("fwd=miss") && a.contains("stored")) || a.starts_with("shop; hit");
    let passed = first.status == StatusCode::OK
        && second.status == StatusCode::OK
        && first_ok
        && b.starts_with("shop; hit")
        && !second.header("age").is_empty()
        && first.body == second.body;
    Ok(Verdict::new(
        passed,
        format!("{a} | {b}; age {}", second.header("age")),
    ))
}

async fn products_queries(ctx: &Ctx) -> Result<u64, String> {
    let bearer = ctx.bearer();
    let res = ctx
        .get("/admin/stats", &[("authorization", bearer.as_str())])
        .await?;
    res.json()?["products_queries"]
        .as_u64()
        .ok_or_else(|| "no products_queries in /admin/stats".to_owned())
}

async fn products_coalesced(ctx: &Ctx) -> Result<Verdict, String> {
    let before = products_queries(ctx).await?;
    // A key nothing asked for yet (the query string is part of the cache key; unique per run,
    // as the cache may be shared through Redis).
    let path = format!(
        "/products?demo={}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let path = path.as_str();
    let mut pending: Vec<_> = (0..20).map(|_| Box::pin(ctx.get(path, &[]))).collect();
    let mut replies = Vec::with_capacity(pending.len());
    // Drive all 20 requests at once (a small join, without a futures dependency).
    std::future::poll_fn(|cx| {
        let mut i = 0;
        while i < pending.len() {
            if let std::task::Poll::Ready(r) = pending[i].as_mut().poll(cx) {
                replies.push(r);
                drop(pending.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    let mut ok = 0;
    let mut collapsed = 0;
    for r in replies {
        let r = r?;
        ok += usize::from(r.status == StatusCode::OK);
        collapsed += usize::from(r.header("cache-status").contains("collapsed"));
    }
    let queries = products_queries(ctx).await? - before;
    Ok(Verdict::new(
        ok == 20 && queries == 1,
        format!("{ok}/20 OK, {collapsed} collapsed, {queries} database query"),
    ))
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

/// `GET /ai/summary` as a customer of `tier`, expecting `expected`.
async fn ai_summary(ctx: &Ctx, tier: &str, expected: StatusCode) -> Result<Verdict, String> {
    let res = ctx.get("/ai/summary", &[("x-user-tier", tier)]).await?;
    let passed = res.status == expected
        && (expected == StatusCode::OK || res.header("content-type") == "application/problem+json");
    Ok(Verdict::new(
        passed,
        format!("{} {}", res.status.as_u16(), res.header("content-type")),
    ))
}

/// `PUT /admin/flags/ai-summary` with `definition`.
async fn put_flag(ctx: &Ctx, definition: &str) -> Result<Reply, String> {
    let req = ctx
        .request(Method::PUT, "/admin/flags/ai-summary")
        .header("authorization", ctx.bearer())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(definition.to_owned())))
        .map_err(|e| format!("bad request: {e}"))?;
    ctx.send(req).await
}

async fn flag_kill_switch(ctx: &Ctx) -> Result<Verdict, String> {
    let put = put_flag(ctx, r#"{"enabled": false}"#).await?;
    let premium = ctx
        .get("/ai/summary", &[("x-user-tier", "premium")])
        .await?;
    let passed = put.status == StatusCode::OK && premium.status == StatusCode::NOT_FOUND;
    Ok(Verdict::new(
        passed,
        format!(
            "PUT {}; premium {}",
            put.status.as_u16(),
            premium.status.as_u16()
        ),
    ))
}

async fn flag_on_for_everyone(ctx: &Ctx) -> Result<Verdict, String> {
    let put = put_flag(ctx, r#"{"enabled": true}"#).await?;
    let basic = ctx.get("/ai/summary", &[("x-user-tier", "basic")]).await?;
    let anonymous = ctx.get("/ai/summary", &[]).await?;
    // Back to the shipped definition, so a demo run against a Redis that keeps its data starts
    // from the default again next time.
    let [(_, default)] = crate::flags::defaults();
    let restored = put_flag(ctx, &default.to_json()).await?;
    let passed = put.status == StatusCode::OK
        && basic.status == StatusCode::OK
        && anonymous.status == StatusCode::OK
        && restored.status == StatusCode::OK;
    Ok(Verdict::new(
        passed,
        format!(
            "PUT {}; basic {}; no tier {}",
            put.status.as_u16(),
            basic.status.as_u16(),
            anonymous.status.as_u16()
        ),
    ))
}

/// What a scenario saw, and whether that is what it expected.
#[derive(Debug)]
pub(crate) struct Verdict {
    got: String,
    passed: bool,
}

impl Verdict {
    pub(crate) fn new(passed: bool, got: impl Into<String>) -> Self {
        Self {
            got: got.into(),
            passed,
        }
    }
}

/// One line of the result table.
#[derive(Debug)]
pub(crate) struct Row {
    name: &'static str,
    expected: &'static str,
    got: String,
    passed: bool,
}

/// `--demo`: runs every scenario against a fresh shop using `store`, prints the table and
/// succeeds only if every scenario passed.
pub(crate) async fn main(store: Store) -> ExitCode {
    match run(store).await {
        Ok(rows) => {
            print!("{}", table(&rows));
            let passed = rows.iter().filter(|r| r.passed).count();
            println!("\n{passed}/{} scenarios passed", rows.len());
            if passed == rows.len() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("shop: demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the shop on a free loopback port with a known admin token, runs every scenario in
/// order, then shuts the shop down. Errors only if the shop cannot start or stop; a failing
/// scenario is a row with `passed: false`.
pub(crate) async fn run(store: Store) -> std::io::Result<Vec<Row>> {
    let token = AdminToken::generate();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    // Each run keeps its Redis state under its own prefix, so a run never meets what an earlier
    // one left behind (say, the login attempts of a run a minute ago).
    let store = match store {
        Store::Redis(redis) => {
            let run = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            Store::Redis(redis.prefix(format!("shop-demo-{run}")))
        }
        Store::Memory => Store::Memory,
    };
    let state = AppState::new(store, token.clone());
    let server = tokio::spawn(crate::serve(listener, state, async move {
        // A dropped sender also stops the shop.
        stopped.await.ok();
    }));

    let ctx = Ctx::new(addr, token);
    let mut rows = Vec::with_capacity(SCENARIOS.len());
    for scenario in SCENARIOS {
        let verdict = match tokio::time::timeout(SCENARIO_TIMEOUT, (scenario.run)(&ctx)).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => Verdict::new(false, format!("error: {e}")),
            Err(_) => Verdict::new(
                false,
                format!("no answer within {}s", SCENARIO_TIMEOUT.as_secs()),
            ),
        };
        rows.push(Row {
            name: scenario.name,
            expected: scenario.expected,
            got: verdict.got,
            passed: verdict.passed,
        });
    }
    // Close the client's pooled connections before asking the shop to drain.
    drop(ctx);
    stop.send(()).ok();
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, server).await {
        Ok(Ok(served)) => served?,
        Ok(Err(join)) => return Err(std::io::Error::other(join)),
        Err(_) => {
            return Err(std::io::Error::other(format!(
                "the shop did not shut down within {}s",
                SHUTDOWN_TIMEOUT.as_secs()
            )));
        }
    }
    Ok(rows)
}

/// The result table: `scenario | expected | got | result`.
fn table(rows: &[Row]) -> String {
    const GOT_MAX: usize = 56;
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.name.to_owned(),
                r.expected.to_owned(),
                truncate(&r.got, GOT_MAX),
                (if r.passed { "PASS" } else { "FAIL" }).to_owned(),
            ]
        })
        .collect();
    let header = ["scenario", "expected", "got", "result"].map(str::to_owned);
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let line = |cells: &[String; 4]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join(" | ").trim_end())
    };
    let mut out = line(&header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("-+-"));
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// `text` cut to at most `max` characters, marking the cut with `…`.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Whether `id` looks like a UUIDv7 in its 36-character text form.
pub(crate) fn is_uuid_v7(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
        && b[14] == b'7'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B')
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// What every scenario gets: an HTTP client aimed at the shop, and the admin token.
pub(crate) struct Ctx {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    admin_token: AdminToken,
}

impl Ctx {
    fn new(addr: SocketAddr, admin_token: AdminToken) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build_http();
        Self {
            client,
            base: format!("http://{addr}"),
            admin_token,
        }
    }

    /// A request builder for `path` on the shop.
    pub(crate) fn request(&self, method: Method, path: &str) -> request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
    }

    /// Sends `req` and reads the whole answer.
    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `GET path` with `headers`.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        let mut req = self.request(Method::GET, path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::default())
            .map_err(|e| format!("bad request: {e}"))?;
        self.send(req).await
    }

    /// `Bearer <admin token>`, for the `Authorization` header.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.admin_token.reveal())
    }
}

/// A whole answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The header's value, or `""` if it is missing or not text.
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON: {e}"))
    }

    /// `<status> <body>` for the table.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} {}",
            self.status.as_u16(),
            String::from_utf8_lossy(&self.body)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn every_scenario_passes() {
        // The demo's subscriber, so scenarios that read the log tap see the request log.
        crate::init_logging(true).ok();
        let rows = run(Store::Memory).await.unwrap();
        assert_eq!(rows.len(), SCENARIOS.len());
        assert!(rows.iter().all(|r| r.passed), "\n{}", table(&rows));
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
    }

    #[test]
    fn table_layout() {
        let rows = [
            Row {
                name: "a",
                expected: "200",
                got: "200".to_owned(),
                passed: true,
            },
            Row {
                name: "longer name",
                expected: "401",
                got: "x".repeat(100),
                passed: false,
            },
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            format!("scenario    | expected | got{} | result", " ".repeat(53))
        );
        assert!(lines[1].starts_with("------------+-"), "{}", lines[1]);
        assert!(lines[2].ends_with("| PASS"));
        assert!(lines[3].ends_with("| FAIL"));
        assert!(lines[3].contains(&format!("{}…", "x".repeat(55))));
    }

    #[test]
    fn uuid_v7_shape() {
        assert!(is_uuid_v7("0190b6c1-7d2e-7a3b-8c4d-0123456789ab"));
        assert!(!is_uuid_v7("0190b6c1-7d2e-4a3b-8c4d-0123456789ab"));
        assert!(!is_uuid_v7("0190b6c1-7d2e-7a3b-cc4d-0123456789ab"));
        assert!(!is_uuid_v7("0190b6c17d2e7a3b8c4d0123456789ab"));
        assert!(!is_uuid_v7("0190b6c1-7d2e-7a3b-8c4d-0123456789ag"));
    }
}
