//! Feature flags: `GET /ai/summary` behind flag `ai-summary`, and the kill-switch admin API
//! (`GET /admin/flags`, `PUT /admin/flags/{name}`).
//!
//! The lesson: deploying a feature and releasing it are different steps. `ai-summary` ships
//! on only for `x-user-tier: premium`; an operator turns it off for everyone
//! (`{"enabled": false}`, the kill switch) or on for everyone (`{"enabled": true}`) with one
//! request, effective at once, without a deploy. With `--redis` the flags live in Redis and
//! every instance sees a change within a second. `BULWARK_FLAG_AI_SUMMARY=off` in the
//! environment forces the flag off over everything else.

use std::collections::BTreeMap;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bulwark::flag::{
    EvaluatedFlags, FeatureFlagLayer, FlagDefinition, Flags, RedisFlags, Rule, SourceError,
};
use serde::Serialize;

use crate::{AppState, Store, routes::problem};

/// The flag `GET /ai/summary` is behind.
pub(crate) const AI_SUMMARY: &str = "ai-summary";

/// At most this many flags can be created through the admin API.
const MAX_FLAGS: usize = 100;

/// The flags the shop ships with.
pub(crate) fn defaults() -> [(&'static str, FlagDefinition); 1] {
    [(
        AI_SUMMARY,
        FlagDefinition::on()
            .with_description("AI summaries, for premium customers first")
            .with_rule(Rule::equals("tier", "premium")),
    )]
}

/// The shop's flags, and their Redis sync when the shop runs with `--redis`.
#[derive(Debug)]
pub(crate) struct ShopFlags {
    pub(crate) flags: Flags,
    pub(crate) shared: Option<RedisFlags>,
}

impl ShopFlags {
    /// The defaults, in this process or (with Redis) seeded into Redis where not yet defined
    /// and then kept in step with it on a background task.
    pub(crate) fn new(store: &Store) -> Self {
        let flags = Flags::new();
        flags.replace(defaults());
        let shared = match store {
            Store::Memory => None,
            Store::Redis(redis) => {
                let shared = RedisFlags::new(redis.clone(), flags.clone());
                let sync = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = sync.seed(defaults()).await {
                        tracing::warn!(error = %e, "cannot seed the default flags in Redis; serving the local defaults until it answers");
                    }
                    let _polling = sync.spawn();
                });
                Some(shared)
            }
        };
        Self { flags, shared }
    }

    /// The gate for `/ai/summary`.
    pub(crate) fn ai_summary_gate(&self) -> FeatureFlagLayer {
        FeatureFlagLayer::new(self.flags.clone(), AI_SUMMARY)
    }
}

#[derive(Serialize)]
pub(crate) struct Summary {
    summary: &'static str,
    /// Why the flag was on for this request (`targeting_match`, `default`, ...).
    reason: &'static str,
}

/// `GET /ai/summary`, reached only when `ai-summary` is on for the request.
pub(crate) async fn ai_summary(Extension(flags): Extension<EvaluatedFlags>) -> Json<Summary> {
    let reason = flags
        .get(AI_SUMMARY)
        .map_or("unknown", |e| e.reason().otel_value());
    Json(Summary {
        summary: "Customers who bought this also liked our resilient umbrellas.",
        reason,
    })
}

/// `GET /ai/summary` without the flag gate (`--bare`, the load run's baseline): the same answer.
pub(crate) async fn ai_summary_ungated() -> Json<Summary> {
    Json(Summary {
        summary: "Customers who bought this also liked our resilient umbrellas.",
        reason: "ungated",
    })
}

/// `GET /admin/flags`: every flag's definition, by name.
pub(crate) async fn list(State(state): State<AppState>) -> Json<BTreeMap<String, FlagDefinition>> {
    Json(state.flags.flags.snapshot())
}

#[derive(Serialize)]
struct Updated {
    name: String,
    definition: FlagDefinition,
}

/// `PUT /admin/flags/{name}`: sets the flag from a JSON definition, effective at once
/// (`{"enabled": false}` is the kill switch, `{"enabled": true}` on for everyone). Invalid JSON
/// or an invalid name is a 400 and changes nothing; with Redis unreachable, a 503 and nothing
/// changes.
pub(crate) async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if !valid_name(&name) {
        return problem(
            StatusCode::BAD_REQUEST,
            "Flag names are 1 to 64 characters: letters, digits, '-', '_' and '.'.",
        );
    }
    let definition = match std::str::from_utf8(&body)
        .map_err(|_| "The body is not UTF-8.".to_owned())
        .and_then(|text| FlagDefinition::from_json(text).map_err(|e| e.to_string()))
    {
        Ok(definition) => definition,
        Err(detail) => return problem(StatusCode::BAD_REQUEST, &detail),
    };
    let flags = &state.flags;
    if flags.flags.get(&name).is_none() && flags.flags.snapshot().len() >= MAX_FLAGS {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Too many flags: remove one before adding another.",
        );
    }
    match &flags.shared {
        None => flags.flags.set(name.as_str(), definition.clone()),
        Some(shared) => {
            if let Err(e) = shared.set(name.as_str(), definition.clone()).await {
                tracing::error!(error = %SourceError::from(e), flag = %name, "cannot store the flag in Redis");
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The flag store is unavailable; the flag was not changed.",
                );
            }
        }
    }
    tracing::info!(
        feature_flag.key = name.as_str(),
        definition = %definition.to_json(),
        "feature flag set through the admin API"
    );
    (StatusCode::OK, Json(Updated { name, definition })).into_response()
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{Method, Request},
    };

    use crate::tests::{TEST_TOKEN, json, send, test_state};

    use super::*;

    fn summary(tier: Option<&str>) -> Request<Body> {
        let mut req = Request::get("/ai/summary");
        if let Some(tier) = tier {
            req = req.header("x-user-tier", tier);
        }
        req.body(Body::empty()).unwrap()
    }

    fn put_flag(name: &str, body: &str) -> Request<Body> {
        Request::builder()
            .method(Method::PUT)
            .uri(format!("/admin/flags/{name}"))
            .header("authorization", format!("Bearer {TEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn ai_summary_is_on_for_premium_only() {
        let state = test_state();
        let res = send(state.clone(), summary(Some("premium"))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(json(res).await["reason"], "targeting_match");
        for tier in [Some("basic"), None] {
            let res = send(state.clone(), summary(tier)).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{tier:?}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }

    #[tokio::test]
    async fn kill_switch_and_on_for_everyone() {
        let state = test_state();
        let res = send(state.clone(), put_flag(AI_SUMMARY, r#"{"enabled": false}"#)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(json(res).await["definition"]["enabled"], false);
        let res = send(state.clone(), summary(Some("premium"))).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        let res = send(state.clone(), put_flag(AI_SUMMARY, r#"{"enabled": true}"#)).await;
        assert_eq!(res.status(), StatusCode::OK);
        for tier in [Some("premium"), Some("basic"), None] {
            let res = send(state.clone(), summary(tier)).await;
            assert_eq!(res.status(), StatusCode::OK, "{tier:?}");
        }
    }

    #[tokio::test]
    async fn invalid_definitions_are_400_and_change_nothing() {
        let state = test_state();
        for body in [
            "",
            "{",
            "[]",
            r#"{"enabled": "no"}"#,
            r#"{"rollot": {"percentage": 5}}"#,
            r#"{"rollout": {"percentage": 101}}"#,
        ] {
            let res = send(state.clone(), put_flag(AI_SUMMARY, body)).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
        let res = send(state.clone(), put_flag("bad%20name%21", "{}")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            state.flags.flags.snapshot(),
            BTreeMap::from(defaults().map(|(n, d)| (n.to_owned(), d)))
        );
    }

    #[tokio::test]
    async fn list_flags_needs_the_token() {
        let state = test_state();
        let res = send(
            state.clone(),
            Request::get("/admin/flags").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = send(
            state.clone(),
            Request::get("/admin/flags")
                .header("authorization", format!("Bearer {TEST_TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = json(res).await;
        assert_eq!(body[AI_SUMMARY]["rules"][0]["equals"], "premium");
        // PUT needs it too.
        let mut req = put_flag(AI_SUMMARY, r#"{"enabled": false}"#);
        req.headers_mut().remove("authorization");
        assert_eq!(
            send(state.clone(), req).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(state, summary(Some("premium"))).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_number_of_flags_is_bounded() {
        let state = test_state();
        for i in 0..MAX_FLAGS - 1 {
            let res = send(state.clone(), put_flag(&format!("f{i}"), "{}")).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
        let res = send(state.clone(), put_flag("one-too-many", "{}")).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Changing an existing flag still works.
        let res = send(state, put_flag(AI_SUMMARY, "{}")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}
