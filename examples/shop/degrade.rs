//! Graceful degradation: `GET /recommendations` (a flaky upstream behind a breaker and a
//! fallback) and `GET /dashboard` (three upstreams in parallel, each behind a timeout, a breaker
//! and a fallback).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{Request, Response, StatusCode, header::CONTENT_TYPE},
    response::IntoResponse,
};
use bulwark::{
    BoxError,
    circuit_breaker::CircuitBreakerLayer,
    fallback::{FallbackLayer, LastGood, StaticResponse},
};
use serde::Serialize;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, util::BoxCloneSyncService};

use crate::{AppState, routes::problem, sim::Upstreams};

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

/// The static answer when there is no last good list yet.
pub(crate) const BESTSELLERS: [Recommendation; 2] = [
    Recommendation {
        sku: "bs-01",
        name: "USB-C cable",
    },
    Recommendation {
        sku: "bs-02",
        name: "Laptop stand",
    },
];

/// The handler behind the breaker: asks the (simulated) recommendation service.
pub(crate) async fn recommendations(State(state): State<AppState>) -> axum::response::Response {
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

fn json_response(value: &Value) -> Response<String> {
    let mut res = Response::new(value.to_string());
    res.headers_mut().insert(
        CONTENT_TYPE,
        "application/json".parse().expect("valid header"),
    );
    res
}

/// The fallback in front of `/recommendations`' breaker: the last good list for this URL, or
/// the static bestseller list if there is none yet.
pub(crate) fn recommendations_fallback(
    last_good: LastGood,
) -> FallbackLayer<bulwark::fallback::Or<LastGood, StaticResponse>> {
    let bestsellers = json_response(&json!(BESTSELLERS));
    FallbackLayer::last_good(last_good).or(StaticResponse::new(bestsellers))
}

/// One dashboard section: a type-erased stack of fallback, breaker and 500 ms timeout around the
/// simulated upstream.
pub(crate) type Section = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// The dashboard's sections.
#[derive(Clone)]
pub(crate) struct Sections {
    pub(crate) user: Section,
    pub(crate) posts: Section,
    pub(crate) notifications: Section,
}

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sections")
    }
}

impl Sections {
    pub(crate) fn new(upstreams: &Arc<Upstreams>, breakers: &crate::Breakers) -> Self {
        Self {
            user: section(
                upstreams,
                "user",
                breakers.user.clone(),
                &json!({"id": "u-42", "name": "Ada"}),
                &json!({"id": null, "name": "guest"}),
            ),
            posts: section(
                upstreams,
                "posts",
                breakers.posts.clone(),
                &json!([{"id": 1, "title": "Circuit breakers in practice"}]),
                &json!([]),
            ),
            notifications: section(
                upstreams,
                "notifications",
                breakers.notifications.clone(),
                &json!([{"id": 7, "text": "Your order shipped"}]),
                &json!([]),
            ),
        }
    }
}

fn section(
    upstreams: &Arc<Upstreams>,
    name: &'static str,
    breaker: CircuitBreakerLayer,
    healthy: &Value,
    fallback: &Value,
) -> Section {
    let upstreams = upstreams.clone();
    let healthy = Arc::new(healthy.to_string());
    let svc = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(Body::new))
        .layer(FallbackLayer::response(json_response(fallback)))
        .layer(breaker)
        .timeout(Duration::from_millis(500))
        .service_fn(move |_req: Request<Body>| {
            let (upstreams, healthy) = (upstreams.clone(), healthy.clone());
            async move {
                let chaos = upstreams.get(name).ok_or("unknown section")?;
                chaos.call().await?;
                Ok::<_, BoxError>(Response::new(Body::from(healthy.as_str().to_owned())))
            }
        });
    BoxCloneSyncService::new(svc)
}

/// Calls one section; `(value, served_by_fallback)`.
async fn call_section(section: &Section) -> Result<(Value, bool), BoxError> {
    let res = section.clone().oneshot(Request::new(Body::empty())).await?;
    let fell_back = res.headers().contains_key("bulwark-fallback");
    let bytes = axum::body::to_bytes(res.into_body(), 64 * 1024).await?;
    Ok((serde_json::from_slice(&bytes)?, fell_back))
}

/// `GET /dashboard`: the three sections fetched concurrently; `degraded` names the sections
/// served by their fallback.
pub(crate) async fn dashboard(State(state): State<AppState>) -> Json<Value> {
    let s = &state.sections;
    let (user, posts, notifications) = tokio::join!(
        call_section(&s.user),
        call_section(&s.posts),
        call_section(&s.notifications)
    );
    let mut degraded = Vec::new();
    let mut take = |name: &'static str, r: Result<(Value, bool), BoxError>| match r {
        Ok((value, fell_back)) => {
            if fell_back {
                degraded.push(name);
            }
            value
        }
        Err(e) => {
            // Fallbacks answer for every failure; this is a bug or a broken fallback.
            tracing::error!(section = name, error = %e, "dashboard section failed");
            degraded.push(name);
            Value::Null
        }
    };
    let user = take("user", user);
    let posts = take("posts", posts);
    let notifications = take("notifications", notifications);
    Json(json!({
        "user": user,
        "posts": posts,
        "notifications": notifications,
        "degraded": degraded,
    }))
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
        // The breaker answers 503 CircuitOpen; the fallback outside it turns that into the last
        // good list.
        let res = send(state, get("/recommendations")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["bulwark-fallback"], "circuit-open");
        assert_eq!(json(res).await, serde_json::json!(super::PERSONAL));
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

    #[tokio::test]
    async fn recommendations_fall_back_to_bestsellers_without_a_last_good_list() {
        let state = test_state();
        state.upstreams.recommendations.set(1.0, 0);
        let res = send(state, get("/recommendations")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["bulwark-fallback"], "status");
        assert_eq!(json(res).await, serde_json::json!(super::BESTSELLERS));
    }

    #[tokio::test]
    async fn dashboard_healthy_and_degraded() {
        let state = test_state();
        let body = json(send(state.clone(), get("/dashboard")).await).await;
        assert_eq!(body["degraded"], serde_json::json!([]));
        assert_eq!(body["user"]["name"], "Ada");

        state.upstreams.user.set(1.0, 0);
        let body = json(send(state.clone(), get("/dashboard")).await).await;
        assert_eq!(body["degraded"], serde_json::json!(["user"]));
        assert_eq!(body["user"]["name"], "guest");
        assert_eq!(body["posts"][0]["id"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_section_times_out_into_its_fallback() {
        let state = test_state();
        state.upstreams.notifications.set(0.0, 10_000);
        let started = tokio::time::Instant::now();
        let body = json(send(state, get("/dashboard")).await).await;
        assert_eq!(body["degraded"], serde_json::json!(["notifications"]));
        assert_eq!(body["notifications"], serde_json::json!([]));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "the 500 ms timeout"
        );
    }

    #[tokio::test]
    async fn readiness_reports_breakers() {
        let body = json(send(test_state(), get("/readyz")).await).await;
        assert_eq!(body["breakers"]["recommendations"]["state"], "closed");
        assert_eq!(body["breakers"]["notifications"]["state"], "closed");
    }
}
