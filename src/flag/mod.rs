//! [`FeatureFlagLayer`]: release features separately from deploying them. Kill switches,
//! targeting rules and percentage roll-outs, changed at run time without a restart.
//!
//! A [`Flags`] handle holds [flag definitions](FlagDefinition). A gate evaluates one flag per
//! request against an [`EvaluationContext`] built from the request (by default the `x-user-id`
//! and `x-user-tier` headers, see [`HeaderContext`]; or your closure), then:
//!
//! - **on**: calls the inner service;
//! - **off**: answers [`Rejection::FeatureDisabled`](crate::Rejection::FeatureDisabled), 404
//!   problem+json by default ([`status`](FeatureFlagLayer::status) changes it), or calls an
//!   alternative service ([`or_else`](FeatureFlagLayer::or_else)).
//!
//! Either way the results go in the request's [`EvaluatedFlags`] extension, so handlers read
//! them without evaluating again. A flag that is not defined is off (reason `ERROR`, error code
//! `FLAG_NOT_FOUND`, one warning per name), never a panic.
//!
//! Tower and tower-http have no feature gate; the nearest is routing on a header yourself. The
//! vocabulary (reasons, error codes, telemetry fields) is OpenFeature's, so evaluations read the
//! same in logs as those of any OpenFeature provider; bulwark does not depend on its SDK.
//!
//! # Evaluation
//!
//! In this order, the first step that decides wins:
//!
//! | step | result | reason |
//! | --- | --- | --- |
//! | environment override ([`EnvOverrides`]) | forced on / off | `STATIC` / `DISABLED` |
//! | kill switch (`"enabled": false`) | off | `DISABLED` |
//! | targeting rules, first match | the rule's `serve` | `TARGETING_MATCH` |
//! | roll-out, if the request has its attribute | on inside the percentage | `SPLIT` |
//! | default | the flag's default | `DEFAULT` |
//! | flag not defined | off | `ERROR` (`FLAG_NOT_FOUND`) |
//!
//! Evaluation is synchronous and lock-free: it loads the current snapshot (one atomic load),
//! compares a few strings and, for roll-outs, hashes the key once, so it takes well under a
//! microsecond (see BENCHMARKS.md).
//!
//! # Roll-out buckets
//!
//! A roll-out puts a request in bucket [`bucket(group, key)`](bucket) from 1 to 100, Unleash's
//! normalisation of MurmurHash3 (x86, 32 bit, seed 0) over `"{group}:{key}"`: the same user
//! lands in the same bucket on every instance, in every release, and in every Unleash SDK. The
//! group is the flag's name unless set, and a request without the roll-out's attribute is
//! outside the roll-out (it gets the default), never placed at random. The values are pinned by
//! golden tests.
//!
//! # Sources
//!
//! Every source swaps a whole new snapshot in, and keeps the last good one when a reload fails.
//!
//! | source | how |
//! | --- | --- |
//! | code | [`Flags::set`], [`Flags::remove`], [`Flags::replace`] (e.g. from an admin API) |
//! | JSON file (TOML with feature `toml`) | [`FileSource::watch`]: reloaded when its contents change, checked every second |
//! | environment | [`EnvOverrides`]: `BULWARK_FLAG_<NAME>=on\|off`, for emergencies |
//! | Redis (feature `redis`) | [`RedisFlags`]: shared by every instance, changes seen within a second |
//!
//! Every change bumps [`Flags::version`] and notifies [`Flags::subscribe`] receivers.
//!
//! # Telemetry
//!
//! Each evaluation emits a `debug` event under target `bulwark::flag` with OpenTelemetry's
//! feature-flag fields, `feature_flag.key`, `feature_flag.provider.name` (`bulwark`),
//! `feature_flag.result.variant` and `feature_flag.result.reason` (the lower-case
//! [`Reason::otel_value`]), plus `error.type` on errors, and counts
//! `bulwark_flag_evaluations_total{flag, result, reason}`. Reloads count
//! `bulwark_flag_reloads_total{source}` and `bulwark_flag_reload_errors_total{source}`.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use axum::{Router, body::Body, routing::get};
//! use bulwark::flag::{FeatureFlagLayer, FlagDefinition, Flags, Rule};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//!
//! let flags = Flags::new().with(
//!     "ai-summary",
//!     FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
//! );
//! let app = Router::new()
//!     .route("/ai/summary", get(|| async { "summary" }))
//!     .layer(FeatureFlagLayer::new(flags.clone(), "ai-summary"));
//!
//! let req = |tier: &str| {
//!     Request::get("/ai/summary").header("x-user-tier", tier).body(Body::empty()).unwrap()
//! };
//! assert_eq!(app.clone().oneshot(req("premium")).await.unwrap().status(), StatusCode::OK);
//! assert_eq!(app.clone().oneshot(req("free")).await.unwrap().status(), StatusCode::NOT_FOUND);
//!
//! // On for everyone, at once.
//! flags.set("ai-summary", FlagDefinition::on());
//! assert_eq!(app.oneshot(req("free")).await.unwrap().status(), StatusCode::OK);
//! # }
//! ```
//!
//! # Defaults
//!
//! | setting | default |
//! | --- | --- |
//! | context | `x-user-id` → `user_id`, `x-user-tier` → `tier` |
//! | off answer | 404 `FeatureDisabled` problem+json |
//! | definition `enabled` | `true` |
//! | definition `default` | on without rules and roll-out, off with them |
//! | roll-out attribute / group | `user_id` / the flag's name |
//! | file poll interval | 1 s |
//! | Redis poll interval | random, 250 to 500 ms |

mod context;
mod definition;
mod evaluation;
mod flags;
mod layer;
mod metrics;
#[cfg(feature = "redis")]
mod redis;
mod rollout;
mod service;
mod source;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisFlags;
pub use self::{
    context::{ContextExtractor, EvaluationContext, HeaderContext},
    definition::{Condition, FlagDefinition, Rollout, Rule, Variants},
    evaluation::{ErrorCode, EvaluatedFlags, Evaluation, Reason},
    flags::Flags,
    layer::{Disabled, FeatureFlagLayer, OrElse},
    rollout::{bucket, murmur3_x86_32},
    service::{FeatureFlag, OrElseFuture, ResponseFuture},
    source::{EnvOverrides, FileSource, FileWatcher, Format, SourceError},
};

/// OpenTelemetry's feature-flag attribute names, as bulwark's events carry them.
pub mod telemetry {
    /// The flag's name.
    pub const KEY: &str = "feature_flag.key";
    /// The variant served (`on`/`off`, or the definition's names).
    pub const RESULT_VARIANT: &str = "feature_flag.result.variant";
    /// Why: [`Reason::otel_value`](super::Reason::otel_value).
    pub const RESULT_REASON: &str = "feature_flag.result.reason";
    /// The provider: `bulwark`.
    pub const PROVIDER_NAME: &str = "feature_flag.provider.name";
    /// On errors: [`ErrorCode::otel_value`](super::ErrorCode::otel_value).
    pub const ERROR_TYPE: &str = "error.type";
}
