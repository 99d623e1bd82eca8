//! The feature-flag gate: rule matching, roll-out distribution and golden buckets, kill switch
//! precedence, the `Flags` handle, file hot reload, environment overrides, the request
//! extension, the alternative service, unknown flags, telemetry and metrics.

mod support;

use std::{convert::Infallible, path::PathBuf, time::Duration};

use axum::{Extension, Router, body::Body, routing::get};
use bulwark::{
    Rejection,
    flag::{
        EnvOverrides, ErrorCode, EvaluatedFlags, EvaluationContext, FeatureFlagLayer, FileSource,
        FlagDefinition, Flags, Reason, Rollout, Rule, bucket,
    },
};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use support::Captured;
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn ctx(pairs: &[(&'static str, &str)]) -> EvaluationContext {
    pairs.iter().map(|&(k, v)| (k, v.to_owned())).collect()
}

fn req(headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get("/feature");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

fn app(layer: FeatureFlagLayer) -> Router {
    Router::new()
        .route("/feature", get(|| async { "feature" }))
        .layer(layer)
}

async fn status(app: &Router, headers: &[(&str, &str)]) -> StatusCode {
    app.clone().oneshot(req(headers)).await.unwrap().status()
}

// ---------------------------------------------------------------------------------------------
// Evaluation

#[test]
fn rules_match_in_order_and_first_match_wins() {
    let flags = Flags::new().with(
        "f",
        FlagDefinition::on()
            .with_rule(Rule::equals("user_id", "blocked").serve(false))
            .with_rule(Rule::in_list("tier", ["premium", "staff"]))
            .with_rule(Rule::not_in("country", ["de", "fr"]))
            .with_default(false),
    );
    type Case<'a> = (&'a [(&'static str, &'a str)], bool, Reason);
    let cases: &[Case<'_>] = &[
        (&[("tier", "premium")], true, Reason::TargetingMatch),
        (&[("tier", "staff")], true, Reason::TargetingMatch),
        (&[("tier", "free")], false, Reason::Default),
        // The first rule wins over the second.
        (
            &[("user_id", "blocked"), ("tier", "premium")],
            false,
            Reason::TargetingMatch,
        ),
        (&[("country", "us")], true, Reason::TargetingMatch),
        (&[("country", "de")], false, Reason::Default),
        // `not_in` does not match a request without the attribute.
        (&[], false, Reason::Default),
        // Values compare exactly.
        (&[("tier", "Premium")], false, Reason::Default),
    ];
    for (pairs, on, reason) in cases {
        let e = flags.evaluate("f", &ctx(pairs));
        assert_eq!(e.is_enabled(), *on, "{pairs:?}");
        assert_eq!(e.reason(), *reason, "{pairs:?}");
        assert_eq!(e.variant(), if *on { "on" } else { "off" });
        assert_eq!(e.error_code(), None);
    }
}

#[test]
fn kill_switch_wins_over_rules_rollout_and_default() {
    let def = FlagDefinition::off()
        .with_rule(Rule::equals("tier", "premium"))
        .with_rollout(Rollout::percentage(100).unwrap())
        .with_default(true);
    let flags = Flags::new().with("f", def);
    for pairs in [&[("tier", "premium")][..], &[("user_id", "u-1")], &[]] {
        let e = flags.evaluate("f", &ctx(pairs));
        assert!(!e.is_enabled());
        assert_eq!(e.reason(), Reason::Disabled);
    }
}

#[test]
fn rules_come_before_the_rollout() {
    let flags = Flags::new().with(
        "f",
        FlagDefinition::on()
            .with_rule(Rule::equals("tier", "free").serve(false))
            .with_rollout(Rollout::percentage(100).unwrap()),
    );
    let e = flags.evaluate("f", &ctx(&[("tier", "free"), ("user_id", "u-1")]));
    assert!(!e.is_enabled());
    assert_eq!(e.reason(), Reason::TargetingMatch);
    let e = flags.evaluate("f", &ctx(&[("tier", "basic"), ("user_id", "u-1")]));
    assert!(e.is_enabled());
    assert_eq!(e.reason(), Reason::Split);
}

#[test]
fn golden_buckets() {
    // Unleash's own cross-SDK values (unleash-client-node `normalized values are the same
    // across node, java, and go clients`), then values computed by an independent
    // implementation of MurmurHash3 x86_32 over "{group}:{key}". These must never change: a
    // change moves users in and out of every running roll-out.
    let cases = [
        ("gr1", "123", 73),
        ("groupX", "999", 25),
        ("ai-summary", "u-1", 4),
        ("ai-summary", "u-2", 52),
        ("ai-summary", "user-42", 96),
        ("new-checkout", "1", 56),
        ("new-checkout", "alice@example.com", 19),
        ("new-checkout", "", 22),
        ("", "x", 74),
        ("flag", "ü-ünïcödé", 67),
        ("g", "12345678901234567890", 6),
    ];
    for (group, key, expected) in cases {
        assert_eq!(bucket(group, key), expected, "{group}:{key}");
    }
}

#[test]
fn rollout_uses_the_golden_bucket_and_the_flag_name_as_group() {
    // bucket("ai-summary", "u-1") = 4, bucket("ai-summary", "u-2") = 52.
    let flags = Flags::new()
        .with(
            "ai-summary",
            FlagDefinition::on().with_rollout(Rollout::percentage(10).unwrap()),
        )
        .with(
            "other",
            FlagDefinition::on().with_rollout(Rollout::percentage(4).unwrap().group("ai-summary")),
        );
    for (flag, user, on) in [
        ("ai-summary", "u-1", true),
        ("ai-summary", "u-2", false),
        ("other", "u-1", true),
        ("other", "u-2", false),
    ] {
        let e = flags.evaluate(flag, &ctx(&[("user_id", user)]));
        assert_eq!(e.is_enabled(), on, "{flag} {user}");
        assert_eq!(e.reason(), Reason::Split);
    }
}

#[test]
fn rollout_distribution_is_within_two_percent() {
    for pct in [1u8, 10, 25, 50, 90] {
        let flags = Flags::new().with(
            "rollout",
            FlagDefinition::on().with_rollout(Rollout::percentage(pct).unwrap()),
        );
        let on = (0..10_000)
            .filter(|i| flags.is_enabled("rollout", &ctx(&[("user_id", &format!("user-{i}"))])))
            .count();
        let target = usize::from(pct) * 100;
        assert!(
            on.abs_diff(target) <= 200,
            "{pct} %: {on} of 10000 ids are in"
        );
    }
}

#[test]
fn raising_the_percentage_only_adds_users() {
    let at = |pct: u8| {
        let flags = Flags::new().with(
            "f",
            FlagDefinition::on().with_rollout(Rollout::percentage(pct).unwrap()),
        );
        (0..2_000)
            .map(|i| flags.is_enabled("f", &ctx(&[("user_id", &format!("{i}"))])))
            .collect::<Vec<_>>()
    };
    let (low, high) = (at(20), at(40));
    assert!(low.iter().zip(&high).all(|(l, h)| !l || *h));
}

#[test]
fn requests_without_the_rollout_key_are_outside_it() {
    let flags = Flags::new()
        .with(
            "f",
            FlagDefinition::on().with_rollout(Rollout::percentage(100).unwrap()),
        )
        .with(
            "g",
            FlagDefinition::on()
                .with_rollout(Rollout::percentage(100).unwrap().by("org"))
                .with_default(true),
        );
    let e = flags.evaluate("f", &ctx(&[("tier", "premium")]));
    assert!(!e.is_enabled());
    assert_eq!(e.reason(), Reason::Default);
    // Another attribute, and the default decides without it.
    let e = flags.evaluate("g", &ctx(&[("user_id", "u")]));
    assert!(e.is_enabled());
    assert_eq!(e.reason(), Reason::Default);
    assert!(flags.is_enabled("g", &ctx(&[("org", "o")])));
}

#[test]
fn variants_name_the_results() {
    let flags = Flags::new().with(
        "checkout",
        FlagDefinition::on()
            .with_rule(Rule::equals("tier", "beta"))
            .with_variants("v2", "v1"),
    );
    assert_eq!(
        flags
            .evaluate("checkout", &ctx(&[("tier", "beta")]))
            .variant(),
        "v2"
    );
    assert_eq!(flags.evaluate("checkout", &ctx(&[])).variant(), "v1");
}

#[test]
fn definitions_from_json_match_the_builders() {
    let def = FlagDefinition::from_json(
        r#"{"rules":[{"attribute":"tier","equals":"premium"}],"rollout":{"percentage":5}}"#,
    )
    .unwrap();
    assert_eq!(
        def,
        FlagDefinition::on()
            .with_rule(Rule::equals("tier", "premium"))
            .with_rollout(Rollout::percentage(5).unwrap())
    );
    assert!(FlagDefinition::from_json(r#"{"enabled":false}"#).unwrap() == FlagDefinition::off());
    assert!(FlagDefinition::from_json(r#"{"enabld":false}"#).is_err());
    assert!(FlagDefinition::from_json("[]").is_err());
    assert!(FlagDefinition::from_json(r#"{"rules": [["tier", "premium"]]}"#).is_err());
    assert!(FlagDefinition::from_json(r#"{"rollout": [5]}"#).is_err());
}

// ---------------------------------------------------------------------------------------------
// The handle

#[tokio::test]
async fn handle_set_remove_snapshot_and_notifications() {
    let flags = Flags::new();
    let clone = flags.clone();
    let mut changes = flags.subscribe();
    let v0 = flags.version();
    clone.set("a", FlagDefinition::on());
    changes.changed().await.unwrap();
    assert!(*changes.borrow_and_update() > v0);
    assert!(flags.is_enabled("a", &ctx(&[])));
    assert_eq!(flags.get("a"), Some(FlagDefinition::on()));

    clone.set("b", FlagDefinition::off());
    let snapshot = flags.snapshot();
    assert_eq!(snapshot.keys().collect::<Vec<_>>(), ["a", "b"]);

    assert_eq!(clone.remove("a"), Some(FlagDefinition::on()));
    assert_eq!(clone.remove("a"), None);
    changes.changed().await.unwrap();
    let e = flags.evaluate("a", &ctx(&[]));
    assert_eq!(e.error_code(), Some(ErrorCode::FlagNotFound));
    // The snapshot taken before is a copy: it did not change.
    assert!(snapshot.contains_key("a"));

    flags.replace([("c", FlagDefinition::on())]);
    assert_eq!(flags.snapshot().len(), 1);
    assert!(flags.same_as(&clone));
    assert!(!flags.same_as(&Flags::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_whole_changes_while_a_writer_swaps() {
    // Two flags that are always changed together: a reader must never see one without the
    // other.
    let flags = Flags::new();
    flags.replace([("x", FlagDefinition::on()), ("y", FlagDefinition::on())]);
    let writer = {
        let flags = flags.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..2_000 {
                let d = if i % 2 == 0 {
                    FlagDefinition::off()
                } else {
                    FlagDefinition::on()
                };
                flags.replace([("x", d.clone()), ("y", d)]);
            }
        })
    };
    let reader = {
        let flags = flags.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..20_000 {
                let s = flags.snapshot();
                assert_eq!(s["x"], s["y"]);
            }
        })
    };
    writer.await.unwrap();
    reader.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The gate

#[tokio::test]
async fn off_answers_feature_disabled_404_problem_json() {
    let flags = Flags::new().with(
        "ai-summary",
        FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
    );
    let app = app(FeatureFlagLayer::new(flags, "ai-summary"));
    let res = app
        .clone()
        .oneshot(req(&[("x-user-tier", "premium")]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.extensions().get::<Rejection>().is_none());

    let res = app.oneshot(req(&[("x-user-tier", "basic")])).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    match res.extensions().get::<Rejection>() {
        Some(Rejection::FeatureDisabled { flag, status, .. }) => {
            assert_eq!(&**flag, "ai-summary");
            assert_eq!(*status, StatusCode::NOT_FOUND);
        }
        other => panic!("{other:?}"),
    }
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], 404);
    // The flag's name is not disclosed to the client.
    assert!(!String::from_utf8_lossy(&body).contains("ai-summary"));
}

#[tokio::test]
async fn status_is_configurable() {
    let flags = Flags::new().with("f", FlagDefinition::off());
    let app = app(FeatureFlagLayer::new(flags.clone(), "f")
        .status(StatusCode::FORBIDDEN)
        .unwrap());
    for not_an_error in [StatusCode::CONTINUE, StatusCode::OK, StatusCode::FOUND] {
        let err = FeatureFlagLayer::new(flags.clone(), "f")
            .status(not_an_error)
            .unwrap_err();
        assert!(err.to_string().contains("not a 4xx or 5xx"), "{err}");
    }
    assert_eq!(status(&app, &[]).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn changes_apply_to_the_next_request() {
    let flags = Flags::new().with(
        "f",
        FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
    );
    let app = app(FeatureFlagLayer::new(flags.clone(), "f"));
    let premium = [("x-user-tier", "premium")];
    let basic = [("x-user-tier", "basic")];
    assert_eq!(status(&app, &premium).await, StatusCode::OK);
    assert_eq!(status(&app, &basic).await, StatusCode::NOT_FOUND);
    flags.set("f", FlagDefinition::off());
    assert_eq!(status(&app, &premium).await, StatusCode::NOT_FOUND);
    flags.set("f", FlagDefinition::on());
    assert_eq!(status(&app, &premium).await, StatusCode::OK);
    assert_eq!(status(&app, &basic).await, StatusCode::OK);
    assert_eq!(status(&app, &[]).await, StatusCode::OK);
}

#[tokio::test]
async fn unknown_flags_are_off_with_one_warning() {
    let (captured, _guard) = Captured::install();
    let flags = Flags::new();
    let app = app(FeatureFlagLayer::new(flags.clone(), "nope"));
    for _ in 0..3 {
        assert_eq!(status(&app, &[]).await, StatusCode::NOT_FOUND);
    }
    let warnings: Vec<_> = captured
        .with_target("bulwark::flag")
        .into_iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].field("feature_flag.key"), Some("nope"));
    assert_eq!(warnings[0].field("error.type"), Some("flag_not_found"));
    let e = flags.evaluate("nope", &ctx(&[]));
    assert_eq!(e.reason(), Reason::Error);
    assert_eq!(
        e.error_code().map(ErrorCode::as_str),
        Some("FLAG_NOT_FOUND")
    );

    // Defined later: on at once.
    flags.set("nope", FlagDefinition::on());
    assert_eq!(status(&app, &[]).await, StatusCode::OK);
}

#[tokio::test]
async fn evaluations_are_in_a_request_extension() {
    async fn handler(Extension(flags): Extension<EvaluatedFlags>) -> String {
        let gate = flags.get("gate").unwrap();
        format!(
            "{} {} {} {} {}",
            gate.reason(),
            flags.is_enabled("one-click"),
            flags.get("dark-mode").unwrap().variant(),
            flags.is_enabled("not-evaluated"),
            flags.context().get("user_id").unwrap_or("-"),
        )
    }
    let flags = Flags::new()
        .with("gate", FlagDefinition::on())
        .with(
            "one-click",
            FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
        )
        .with(
            "dark-mode",
            FlagDefinition::off().with_variants("dark", "light"),
        );
    let app = Router::new()
        .route("/feature", get(handler))
        .layer(FeatureFlagLayer::new(flags.clone(), "gate").also_evaluate(["one-click"]))
        // An outer gate: the inner one adds to its extension.
        .layer(FeatureFlagLayer::new(flags, "gate").also_evaluate(["dark-mode"]));
    let res = app
        .oneshot(req(&[("x-user-tier", "premium"), ("x-user-id", "u-9")]))
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "DEFAULT true light false u-9");
}

#[tokio::test]
async fn off_requests_can_go_to_an_alternative_service() {
    let flags = Flags::new().with(
        "v2",
        FlagDefinition::on().with_rule(Rule::equals("tier", "beta")),
    );
    let old = service_fn(|req: Request<Body>| async move {
        // The alternative sees the evaluation too.
        let e = req.extensions().get::<EvaluatedFlags>().unwrap();
        assert!(!e.is_enabled("v2"));
        Ok::<_, Infallible>(Response::new(Body::from("v1")))
    });
    let app = Router::new()
        .route("/feature", get(|| async { "v2" }))
        .layer(FeatureFlagLayer::new(flags, "v2").or_else(old));
    for (tier, expected) in [("beta", "v2"), ("basic", "v1")] {
        let res = app
            .clone()
            .oneshot(req(&[("x-user-tier", tier)]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.extensions().get::<Rejection>().is_none());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, expected);
    }
}

#[tokio::test]
async fn a_closure_builds_the_context() {
    #[derive(Clone)]
    struct Plan(&'static str);
    let flags = Flags::new().with(
        "f",
        FlagDefinition::on().with_rule(Rule::equals("plan", "gold")),
    );
    let layer = FeatureFlagLayer::new(flags, "f").context(|req: &Request<Body>| {
        let mut ctx = EvaluationContext::new();
        if let Some(Plan(p)) = req.extensions().get::<Plan>() {
            ctx.insert("plan", *p);
        }
        ctx
    });
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
    let mut gold = req(&[]);
    gold.extensions_mut().insert(Plan("gold"));
    assert_eq!(svc.clone().oneshot(gold).await.unwrap().status(), 200);
    let mut tin = req(&[]);
    tin.extensions_mut().insert(Plan("tin"));
    assert_eq!(svc.oneshot(tin).await.unwrap().status(), 404);
}

#[tokio::test]
async fn evaluations_emit_opentelemetry_fields() {
    let (captured, _guard) = Captured::install();
    let flags = Flags::new().with(
        "f",
        FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
    );
    let app = app(FeatureFlagLayer::new(flags, "f"));
    status(&app, &[("x-user-tier", "premium")]).await;
    status(&app, &[("x-user-tier", "basic")]).await;
    let events: Vec<_> = captured
        .with_target("bulwark::flag")
        .into_iter()
        .filter(|e| e.level == tracing::Level::DEBUG)
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let fields = |e: &support::CapturedEvent| {
        (
            e.field("feature_flag.key").map(str::to_owned),
            e.field("feature_flag.result.variant").map(str::to_owned),
            e.field("feature_flag.result.reason").map(str::to_owned),
        )
    };
    assert_eq!(
        fields(&events[0]),
        (
            Some("f".into()),
            Some("on".into()),
            Some("targeting_match".into())
        )
    );
    assert_eq!(
        fields(&events[1]),
        (Some("f".into()), Some("off".into()), Some("default".into()))
    );
    assert_eq!(
        events[0].field("feature_flag.provider.name"),
        Some("bulwark")
    );
}

#[test]
fn evaluations_and_reloads_are_counted() {
    use metrics_util::debugging::DebugValue;
    let dir = TempDir::new();
    let path = dir.file("flags.json");
    let recorded = support::recorded(false, async {
        let flags = Flags::new().with(
            "f",
            FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
        );
        let app = app(FeatureFlagLayer::new(flags.clone(), "f"));
        status(&app, &[("x-user-tier", "premium")]).await;
        status(&app, &[("x-user-tier", "premium")]).await;
        status(&app, &[("x-user-tier", "basic")]).await;
        let unknown = self::app(FeatureFlagLayer::new(flags.clone(), "random-name"));
        status(&unknown, &[]).await;

        std::fs::write(&path, r#"{"f": {}}"#).unwrap();
        let mut watcher = FileSource::new(&path).watcher(flags);
        watcher.check().unwrap();
        std::fs::write(&path, "{").unwrap();
        watcher.check().unwrap_err();
    });
    let mut counts = std::collections::BTreeMap::new();
    for (key, _, _, value) in recorded {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if let DebugValue::Counter(n) = value {
            counts.insert(format!("{} {}", key.key().name(), labels.join(",")), n);
        }
    }
    let get = |k: &str| counts.get(k).copied().unwrap_or_default();
    assert_eq!(
        get("bulwark_flag_evaluations_total flag=f,result=on,reason=targeting_match"),
        2,
        "{counts:?}"
    );
    assert_eq!(
        get("bulwark_flag_evaluations_total flag=f,result=off,reason=default"),
        1
    );
    assert_eq!(
        get("bulwark_flag_evaluations_total flag=_unknown,result=off,reason=error"),
        1,
        "{counts:?}"
    );
    assert_eq!(get("bulwark_flag_reloads_total source=file"), 1);
    assert_eq!(get("bulwark_flag_reload_errors_total source=file"), 1);
    assert_eq!(
        get("bulwark_rejections_total rejection=feature_disabled"),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// File source

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bulwark-flags-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn file_changes_are_reloaded_and_bad_files_keep_the_last_flags() {
    let dir = TempDir::new();
    let path = dir.file("flags.json");
    std::fs::write(
        &path,
        r#"{"ai-summary": {"rules": [{"attribute": "tier", "equals": "premium"}]}}"#,
    )
    .unwrap();
    let flags = Flags::new();
    let mut watcher = FileSource::new(&path).watcher(flags.clone());
    assert!(watcher.check().unwrap());
    let premium = ctx(&[("tier", "premium")]);
    assert!(flags.is_enabled("ai-summary", &premium));
    // Unchanged: nothing to do.
    assert!(!watcher.check().unwrap());

    // Changed: the kill switch.
    std::fs::write(&path, r#"{"ai-summary": {"enabled": false}}"#).unwrap();
    assert!(watcher.check().unwrap());
    assert!(!flags.is_enabled("ai-summary", &premium));

    // Broken JSON, and a definition with an unknown field: the last good flags stay.
    let (captured, _guard) = Captured::install();
    for bad in [
        r#"{"ai-summary": {"enabled": tru"#,
        r#"{"ai-summary": {"enabled": true}, "b": {"rollot": {}}}"#,
    ] {
        std::fs::write(&path, bad).unwrap();
        assert!(watcher.check().is_err());
        // Checked again: nothing new, and the same problem is not logged again.
        assert!(!watcher.check().unwrap());
        assert_eq!(flags.get("ai-summary"), Some(FlagDefinition::off()));
    }
    let errors = captured
        .with_target("bulwark::flag")
        .into_iter()
        .filter(|e| e.level == tracing::Level::ERROR)
        .count();
    assert_eq!(errors, 2);

    // Deleted: still the last good flags.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        watcher.check(),
        Err(bulwark::flag::SourceError::Io { .. })
    ));
    assert_eq!(flags.get("ai-summary"), Some(FlagDefinition::off()));

    // Back, by an atomic rename as editors and ConfigMaps do it.
    let tmp = dir.file(".flags.json.tmp");
    std::fs::write(&tmp, r#"{"ai-summary": {}}"#).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(watcher.check().unwrap());
    assert!(flags.is_enabled("ai-summary", &ctx(&[])));
}

#[tokio::test]
async fn watch_loads_at_once_and_reloads_in_the_background() {
    let dir = TempDir::new();
    let path = dir.file("flags.json");
    std::fs::write(&path, r#"{"f": {"enabled": false}}"#).unwrap();
    let flags = Flags::new();
    let mut changes = flags.subscribe();
    let task = FileSource::new(&path)
        .poll_interval(Duration::from_millis(20))
        .watch(flags.clone())
        .unwrap();
    assert_eq!(flags.get("f"), Some(FlagDefinition::off()));
    changes.borrow_and_update();
    std::fs::write(&path, r#"{"f": {}}"#).unwrap();
    // Waits for the change event (bounded, so a broken watcher fails instead of hanging).
    tokio::time::timeout(Duration::from_secs(30), changes.changed())
        .await
        .expect("the file change was not picked up")
        .unwrap();
    assert_eq!(flags.get("f"), Some(FlagDefinition::on()));
    task.abort();

    // A file that cannot be read at start is an error, not an empty set of flags.
    let missing = FileSource::new(dir.file("missing.json")).watch(Flags::new());
    assert!(missing.is_err());
}

/// With file events, a change is applied without waiting for the poll: the poll interval here
/// is an hour, so only an event from the OS can bring the change in.
#[cfg(feature = "file-events")]
#[tokio::test]
async fn file_events_apply_a_change_before_the_next_poll() {
    let dir = TempDir::new();
    let path = dir.file("flags.json");
    std::fs::write(&path, r#"{"f": {"enabled": false}}"#).unwrap();
    let flags = Flags::new();
    let mut changes = flags.subscribe();
    let task = FileSource::new(&path)
        .poll_interval(Duration::from_secs(3_600))
        .watch(flags.clone())
        .unwrap();
    changes.borrow_and_update();
    // The first change is seen either by the check the watcher makes when its watch starts or
    // by an event; once it is seen, the watch is running.
    std::fs::write(&path, r#"{"f": {}}"#).unwrap();
    tokio::time::timeout(Duration::from_secs(30), changes.changed())
        .await
        .expect("the first change was not picked up")
        .unwrap();
    assert_eq!(flags.get("f"), Some(FlagDefinition::on()));
    // The second can only come in by an event. An atomic replacement: the case that defeats a
    // watch on the file itself.
    changes.borrow_and_update();
    let tmp = dir.file(".flags.json.tmp");
    std::fs::write(&tmp, r#"{"f": {"enabled": false}}"#).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    tokio::time::timeout(Duration::from_secs(30), changes.changed())
        .await
        .expect("no file event brought the change in")
        .unwrap();
    assert_eq!(flags.get("f"), Some(FlagDefinition::off()));
    task.abort();
}

#[cfg(feature = "toml")]
#[test]
fn toml_files() {
    let dir = TempDir::new();
    let path = dir.file("flags.toml");
    std::fs::write(
        &path,
        r#"
[ai-summary]
rules = [{ attribute = "tier", in = ["premium", "staff"] }]

[new-checkout]
rollout = { percentage = 25 }
"#,
    )
    .unwrap();
    let defs = FileSource::new(&path).load().unwrap();
    assert_eq!(
        defs["ai-summary"],
        FlagDefinition::on().with_rule(Rule::in_list("tier", ["premium", "staff"]))
    );
    assert_eq!(
        defs["new-checkout"],
        FlagDefinition::on().with_rollout(Rollout::percentage(25).unwrap())
    );
}

// ---------------------------------------------------------------------------------------------
// Environment overrides

#[test]
fn env_overrides_force_flags_and_survive_reloads() {
    let flags = Flags::new()
        .with("ai-summary", FlagDefinition::on())
        .with("legacy", FlagDefinition::off());
    let n = EnvOverrides::new()
        .apply_from(
            &flags,
            [
                ("BULWARK_FLAG_AI_SUMMARY", "off"),
                ("BULWARK_FLAG_LEGACY", "ON"),
                ("BULWARK_FLAG_NOT_DEFINED", "1"),
                ("OTHER_VAR", "off"),
            ],
        )
        .unwrap();
    assert_eq!(n, 3);
    let e = flags.evaluate("ai-summary", &ctx(&[]));
    assert!(!e.is_enabled());
    assert_eq!(e.reason(), Reason::Disabled);
    let e = flags.evaluate("legacy", &ctx(&[]));
    assert!(e.is_enabled());
    assert_eq!(e.reason(), Reason::Static);
    // An override applies to a flag that is not defined (yet).
    assert!(flags.is_enabled("not-defined", &ctx(&[])));
    // Reloads do not lift overrides.
    flags.replace([("ai-summary", FlagDefinition::on())]);
    assert!(!flags.is_enabled("ai-summary", &ctx(&[])));
    assert_eq!(flags.override_of("ai-summary"), Some(false));
    flags.set_override("ai-summary", None);
    assert!(flags.is_enabled("ai-summary", &ctx(&[])));
}

#[test]
fn bad_env_override_values_apply_nothing() {
    let flags = Flags::new().with("a", FlagDefinition::on());
    let err = EnvOverrides::prefix("APP_FLAG_")
        .apply_from(&flags, [("APP_FLAG_A", "off"), ("APP_FLAG_B", "maybe")])
        .unwrap_err();
    assert!(err.to_string().contains("APP_FLAG_B"), "{err}");
    assert!(flags.is_enabled("a", &ctx(&[])));
}

/// A flag defined twice in a JSON file is an error naming the flag, not "the last one
/// wins": a kill switch added at the top must not be undone by an older entry further down.
#[test]
fn a_flag_defined_twice_is_refused() {
    let err = bulwark::flag::Format::Json
        .parse(
            r#"{
  "legacy-export": { "enabled": false },
  "other": {},
  "legacy-export": { "enabled": true }
}"#,
        )
        .unwrap_err();
    assert!(err.contains("\"legacy-export\" is defined twice"), "{err}");
    assert_eq!(
        bulwark::flag::Format::Json
            .parse(r#"{"a": {}, "b": {"enabled": false}}"#)
            .unwrap()
            .len(),
        2
    );
}
