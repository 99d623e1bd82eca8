//! The shop's public routes, and [`problem`], which builds every error answer the shop's own
//! handlers give (bulwark's layers build theirs with `bulwark::Rejection`).
//!
//! To add a route: write its handler below and add one `.route(..)` line to [`router`].

use axum::{
    Json, Router,
    extract::State,
    handler::Handler,
    http::{HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;

use crate::AppState;

/// The public routes. Layers that guard one route go on that route's handler
/// (`get(handler.layer(..))`), layers for all of them on the router in [`crate::app`].
///
/// `handler.layer(..)` rather than `get(handler).layer(..)`: axum keeps every route as a boxed
/// service that it clones for each request, and `MethodRouter::layer` wraps the handler's boxed
/// route in another one, while `Handler::layer` wraps the handler itself. One boxed level less
/// is one allocation less for the clone, one for the response future and one for the response
/// body, per request (measured with `benches/http-instructions.sh`).
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::telemetry::metrics))
        // Fallback outside the breaker, so it also answers while the circuit is open.
        .route(
            "/recommendations",
            get(crate::degrade::recommendations.layer(
                tower::ServiceBuilder::new()
                    .layer(crate::degrade::recommendations_fallback(
                        state.last_good.clone(),
                    ))
                    .layer(state.breakers.recommendations.clone()),
            )),
        )
        .route("/dashboard", get(crate::degrade::dashboard))
        .route(
            "/products",
            get(crate::catalog::products.layer(state.products_cache.clone())),
        )
        .merge(crate::payments::router(state))
        // Rate limited before the handler reads anything, so every attempt counts.
        .route(
            "/login",
            post(crate::login::login.layer(state.limits.login.clone())),
        )
        .route(
            "/ai/summary",
            get(crate::flags::ai_summary.layer(state.flags.ai_summary_gate())),
        )
}

/// `--bare`: the GET routes of the HTTP load run, with the same handlers and no layer.
pub(crate) fn bare_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/products", get(crate::catalog::products))
        .route("/recommendations", get(crate::degrade::recommendations))
        .route("/ai/summary", get(crate::flags::ai_summary_ungated))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// Liveness: the process is up and serving. Checks nothing else, so a struggling dependency
/// never gets the instance restarted.
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    store: StoreReport,
    /// Reported, not counted against readiness: an open breaker means the shop is degrading
    /// gracefully, and taking the instance out of rotation would not help.
    breakers: std::collections::BTreeMap<&'static str, BreakerState>,
}

#[derive(Serialize)]
struct BreakerState {
    state: &'static str,
}

#[derive(Serialize)]
struct StoreReport {
    kind: &'static str,
    reachable: bool,
}

/// Readiness: whether this instance should get traffic. 503 when the shared store is
/// unreachable, since rate limits, idempotency and flags would all fall back to their failure
/// policies.
async fn readyz(State(state): State<AppState>) -> Response {
    let reachable = match state.store.check().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, store = state.store.kind(), "store unreachable");
            false
        }
    };
    let (status, word) = if reachable {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unready")
    };
    let body = Readiness {
        status: word,
        store: StoreReport {
            kind: state.store.kind(),
            reachable,
        },
        breakers: state
            .breakers
            .handles()
            .into_iter()
            .map(|(name, h)| {
                (
                    name,
                    BreakerState {
                        state: h.state().as_str(),
                    },
                )
            })
            .collect(),
    };
    (status, Json(body)).into_response()
}

/// The answer for paths no route matches.
pub(crate) async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "No route matches this method and path.",
    )
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// An RFC 9457 `application/problem+json` answer with `status` and a human-readable `detail`.
///
/// The type is `about:blank`, so the title is the status's reason phrase. `detail` must not
/// contain internal error text: that goes to the log.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    let body = Problem {
        kind: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
    };
    let mut res = (status, Json(body)).into_response();
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::json;

    #[tokio::test]
    async fn problem_document() {
        let res = problem(StatusCode::BAD_REQUEST, "bad \"input\"");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(
            json(res).await,
            serde_json::json!({
                "type": "about:blank",
                "title": "Bad Request",
                "status": 400,
                "detail": "bad \"input\"",
            })
        );
    }
}
