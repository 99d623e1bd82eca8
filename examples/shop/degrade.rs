//! Graceful degradation: `GET /recommendations` (a flaky upstream behind a breaker and a
//! fallback) and `GET /dashboard` (three upstreams in parallel, each behind a timeout, a breaker
//! and a fallback).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{AppState, routes::problem};

/// A product recommendation.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub(crate) struct Recommendation {
    pub(crate) sku: &'static str,
    pub(crate) name: &'static str,
}

/// What the healthy recommendation service answers.
pub(crate) const PERSONAL: [Recommendation; 3] = [
    Recommendation {
        sku: "kb-02",
        name: "Split keyboard",
    },
    Recommendation {
        sku: "ms-11",
        name: "Vertical mouse",
    },
    Recommendation {
        sku: "ds-07",
        name: "Standing desk",
    },
];

/// The handler behind the breaker: asks the (simulated) recommendation service.
pub(crate) async fn recommendations(State(state): State<AppState>) -> Response {
    match state.upstreams.recommendations.call().await {
        Ok(()) => Json(PERSONAL.to_vec()).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "recommendation service failed");
            problem(
                StatusCode::BAD_GATEWAY,
                "The recommendation service failed.",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };

    use crate::tests::{TEST_TOKEN, json, send, test_state};

    fn admin_post(path: &str, body: &str) -> Request<Body> {
        Request::post(path)
            .header("authorization", format!("Bearer {TEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    fn admin_get(path: &str) -> Request<Body> {
        Request::get(path)
            .header("authorization", format!("Bearer {TEST_TOKEN}"))
            .body(Body::empty())
            .unwrap()
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn chaos_opens_the_recommendations_breaker() {
        let state = test_state();
        let res = send(state.clone(), get("/recommendations")).await;
        assert_eq!(res.status(), StatusCode::OK);

        let res = send(
            state.clone(),
            admin_post(
                "/admin/chaos",
                r#"{"target":"recommendations","failure_rate":1.0}"#,
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        for _ in 0..5 {
            send(state.clone(), get("/recommendations")).await;
        }
        let breakers = json(send(state.clone(), admin_get("/admin/breakers")).await).await;
        assert_eq!(breakers["recommendations"]["state"], "open");
        assert_eq!(breakers["user"]["state"], "closed");
        let res = send(state, get("/recommendations")).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key("retry-after"));
    }

    #[tokio::test]
    async fn chaos_rejects_bad_input_with_problem_json() {
        let state = test_state();
        for body in [
            "not json",
            r#"{"target":"nope","failure_rate":0.5}"#,
            r#"{"target":"user","failure_rate":1.5}"#,
            r#"{"target":"user","extra":1}"#,
        ] {
            let res = send(state.clone(), admin_post("/admin/chaos", body)).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }
}
