//! `POST /payments` and `GET /payments/{id}`: the idempotency lesson. A double-clicked "pay"
//! button, a retry after a timeout, a client that resends: each charges once per
//! `Idempotency-Key`, and every retry gets the first answer again, marked
//! `Idempotent-Replayed: true`.
//!
//! The idempotency layer sits on the `POST /payments` route only; with `--redis` its keys live
//! in Redis, so two instances started with the same URL charge once between them. The payments
//! themselves are kept in this process (a bounded in-memory ledger): a demo, not a bank.

use std::sync::atomic::Ordering;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{StatusCode, header::LOCATION},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bulwark::idempotency::{IdempotencyConfig, IdempotencyKey, IdempotencyLayer, IdempotencyStore};
use serde::{Deserialize, Serialize};

use crate::{AppState, Store, routes::problem};

/// Request bodies above this get 413.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How many payments the in-memory ledger keeps (the oldest are forgotten first).
const LEDGER_CAPACITY: u64 = 10_000;

/// `POST /payments` (behind the idempotency layer) and `GET /payments/{id}`.
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/payments",
            post(create)
                .layer::<_, std::convert::Infallible>(state.idempotency.clone())
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route("/payments/{id}", get(show))
}

/// The idempotency layer of `POST /payments`: key required, 1 MiB request bodies, keys in
/// Redis when the shop has it (fail closed: 503 while Redis is down, never a double charge).
pub(crate) fn idempotency(store: &Store) -> IdempotencyLayer {
    let store = match store {
        Store::Memory => IdempotencyStore::memory(),
        Store::Redis(redis) => IdempotencyStore::redis(redis.clone()),
    };
    let config = IdempotencyConfig::builder()
        .require_key(true)
        .max_request_bytes(MAX_BODY_BYTES)
        .build()
        .expect("the shop's idempotency settings are valid constants");
    IdempotencyLayer::new(store).config(config)
}

/// A payment, as stored and answered.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Payment {
    id: String,
    amount: i64,
    currency: String,
}

/// What `POST /payments` accepts.
#[derive(Deserialize)]
struct NewPayment {
    amount: i64,
    currency: String,
}

/// The payments made by this instance, bounded.
#[derive(Clone, Debug)]
pub(crate) struct Ledger(moka::sync::Cache<String, Payment>);

impl Default for Ledger {
    fn default() -> Self {
        Self(moka::sync::Cache::new(LEDGER_CAPACITY))
    }
}

/// `pay_` and 24 hex digits: unique across instances (random per process, counted per call).
fn payment_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0u8));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("pay_{:016x}{:08x}", seed, n as u32)
}

/// `POST /payments`: charges `amount` in `currency` once. 201 with the payment and its
/// `Location`; 400 problem+json for a body that is not `{"amount": int, "currency": str}`.
async fn create(
    State(state): State<AppState>,
    key: Option<Extension<IdempotencyKey>>,
    body: Bytes,
) -> Response {
    let Ok(new) = serde_json::from_slice::<NewPayment>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "The body must be JSON {\"amount\": integer, \"currency\": string}.",
        );
    };
    if new.amount <= 0 || new.currency.is_empty() || new.currency.len() > 16 {
        return problem(
            StatusCode::BAD_REQUEST,
            "The amount must be a positive integer and the currency a short code such as \"EUR\".",
        );
    }
    // The charge: what must happen once per key.
    state.stats.payments_charged.fetch_add(1, Ordering::Relaxed);
    let payment = Payment {
        id: payment_id(),
        amount: new.amount,
        currency: new.currency,
    };
    state.payments.0.insert(payment.id.clone(), payment.clone());
    // The key the idempotency layer admitted this charge under: with this line, each
    // instance's log is a ledger of charges by key (the soak counts them across instances).
    let key = key.as_ref().map_or("", |Extension(key)| key.as_str());
    tracing::info!(
        payment.id = %payment.id,
        payment.amount = payment.amount,
        payment.idempotency_key = key,
        "payment charged"
    );
    let location = format!("/payments/{}", payment.id);
    (StatusCode::CREATED, [(LOCATION, location)], Json(payment)).into_response()
}

/// `GET /payments/{id}`: the payment, or 404 problem+json.
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.payments.0.get(&id) {
        Some(payment) => Json(payment).into_response(),
        None => problem(StatusCode::NOT_FOUND, "No payment has this id."),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use tower::ServiceExt;

    use crate::{
        app,
        tests::{TEST_TOKEN, json, test_state},
    };

    fn pay(key: Option<&str>, body: &str) -> Request<Body> {
        let mut req = Request::post("/payments").header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.body(Body::from(body.to_owned())).unwrap()
    }

    fn charged(state: &crate::AppState) -> u64 {
        state
            .stats
            .payments_charged
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test]
    async fn charges_once_per_key_and_replays() {
        let state = test_state();
        let body = r#"{"amount":1200,"currency":"EUR"}"#;
        let first = app(state.clone())
            .oneshot(pay(Some("k1"), body))
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let location = first.headers()["location"].clone();
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first_body = json(first).await;
        assert_eq!(first_body["amount"], 1200);
        assert_eq!(first_body["currency"], "EUR");
        assert_eq!(
            location,
            format!("/payments/{}", first_body["id"].as_str().unwrap()).as_str()
        );

        let again = app(state.clone())
            .oneshot(pay(Some("k1"), body))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["location"], location);
        assert_eq!(json(again).await, first_body);
        assert_eq!(charged(&state), 1);

        let shown = app(state.clone())
            .oneshot(
                Request::get(location.to_str().unwrap())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(shown.status(), StatusCode::OK);
        assert_eq!(json(shown).await, first_body);

        // Admin stats count charges, not requests.
        let stats = app(state)
            .oneshot(
                Request::get("/admin/stats")
                    .header("authorization", format!("Bearer {TEST_TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(json(stats).await["payments_charged"], 1);
    }

    #[tokio::test]
    async fn refusals() {
        let state = test_state();
        let send = |req| app(state.clone()).oneshot(req);
        let body = r#"{"amount":5,"currency":"USD"}"#;

        let res = send(pay(None, body)).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()["content-type"], "application/problem+json");

        send(pay(Some("k"), body)).await.unwrap();
        let res = send(pay(Some("k"), r#"{"amount":6,"currency":"USD"}"#))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(res.headers()["content-type"], "application/problem+json");

        for bad in [
            "not json",
            r#"{"amount":"5","currency":"USD"}"#,
            r#"{"amount":1.5,"currency":"USD"}"#,
            r#"{"amount":5}"#,
            r#"{"amount":-1,"currency":"USD"}"#,
        ] {
            let res = send(pay(Some(bad), bad)).await.unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }

        let big = format!(
            r#"{{"amount":5,"currency":"USD","memo":"{}"}}"#,
            "x".repeat(super::MAX_BODY_BYTES)
        );
        let res = send(pay(Some("big"), &big)).await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.headers()["content-type"], "application/problem+json");

        let res = send(
            Request::get("/payments/pay_none")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(charged(&state), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_double_clicks_charge_once() {
        let state = test_state();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (state, barrier) = (state.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let req = pay(Some("burst"), r#"{"amount":99,"currency":"EUR"}"#);
                app(state).oneshot(req).await.unwrap().status()
            }));
        }
        for t in tasks {
            let status = t.await.unwrap();
            assert!(
                status == StatusCode::CREATED || status == StatusCode::CONFLICT,
                "{status}"
            );
        }
        assert_eq!(charged(&state), 1);
    }
}
