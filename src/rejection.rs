//! [`Rejection`]: the one vocabulary for answers a bulwark layer gives instead of the inner service.
//!
//! Every response that a bulwark layer produced *instead of* calling the inner service carries a
//! [`Rejection`] in its extensions, so outer layers can react to it (the fallback layer falls back
//! on [`Rejection::CircuitOpen`], the log layer logs its kind, the breaker ignores it). The default
//! answer for each variant is an [RFC 9457] `application/problem+json` document:
//!
//! | variant | status | headers |
//! | --- | --- | --- |
//! | [`RateLimited`](Rejection::RateLimited) | 429 | `Retry-After`, `RateLimit-Policy`, `RateLimit` |
//! | [`CircuitOpen`](Rejection::CircuitOpen) | 503 | `Retry-After` |
//! | [`FeatureDisabled`](Rejection::FeatureDisabled) | 404 (configurable) | |
//! | [`IdempotencyKeyMissing`](Rejection::IdempotencyKeyMissing) | 400 | |
//! | [`IdempotencyKeyInvalid`](Rejection::IdempotencyKeyInvalid) | 400 | |
//! | [`IdempotencyInFlight`](Rejection::IdempotencyInFlight) | 409 | `Retry-After` |
//! | [`IdempotencyMismatch`](Rejection::IdempotencyMismatch) | 422 | |
//! | [`IdempotencyNotReplayable`](Rejection::IdempotencyNotReplayable) | 409 | |
//! | [`PayloadTooLarge`](Rejection::PayloadTooLarge) | 413 | |
//! | [`BodyReadFailed`](Rejection::BodyReadFailed) | 400 | |
//! | [`BackendUnavailable`](Rejection::BackendUnavailable) | 503 | `Retry-After` |
//!
//! `Retry-After` is always whole seconds, rounded up, and never less than 1. Problem bodies never
//! contain internal error text; that goes to the log.
//!
//! The answer can be replaced per layer with a [`ResponseForRejection`](crate::ResponseForRejection)
//! hook; the protocol headers above and the extension are added to whatever the hook returns.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bulwark::Rejection;
//!
//! let res = Rejection::circuit_open(Duration::from_millis(1_200)).into_response::<String>();
//! assert_eq!(res.status(), 503);
//! assert_eq!(res.headers()["retry-after"], "2");
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert!(matches!(
//!     res.extensions().get::<Rejection>(),
//!     Some(Rejection::CircuitOpen { .. })
//! ));
//! ```
//!
//! [RFC 9457]: https://www.rfc-editor.org/rfc/rfc9457

use std::{fmt::Write as _, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use crate::{ResponseForRejection, body::ResponseBody};

/// The `RateLimit-Policy` header field (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header field (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");
const DOCS: &str = "https://docs.rs/bulwark/latest/bulwark/enum.Rejection.html#variant.";

/// Why a bulwark layer answered instead of the inner service.
///
/// Found in the extensions of every response a bulwark layer produced on its own. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The key's quota is exhausted. 429.
    #[non_exhaustive]
    RateLimited {
        /// When the request would be allowed.
        retry_after: Duration,
        /// The policy that decided, for the `RateLimit-Policy` and `RateLimit` headers.
        limit: Option<RateLimitInfo>,
    },
    /// The circuit breaker is open, or half-open with every probe slot taken. 503.
    #[non_exhaustive]
    CircuitOpen {
        /// Time left until the breaker lets a probe through.
        retry_after: Duration,
        /// The name of the breaker that refused (`name[key]` for a per-key breaker), for logs:
        /// never sent to the client. `None` when built with [`Rejection::circuit_open`].
        breaker: Option<Arc<str>>,
    },
    /// The gate's feature flag is off for this request. 404 unless configured otherwise.
    #[non_exhaustive]
    FeatureDisabled {
        /// The flag's name (for logs; it is not put in the response body).
        flag: Arc<str>,
        /// The status to answer with.
        status: StatusCode,
    },
    /// The route requires an `Idempotency-Key` header and the request has none. 400.
    IdempotencyKeyMissing,
    /// The `Idempotency-Key` header is not 1 to 255 visible ASCII characters. 400.
    IdempotencyKeyInvalid,
    /// A request with the same idempotency key is still being processed. 409.
    #[non_exhaustive]
    IdempotencyInFlight {
        /// A hint for when to retry.
        retry_after: Duration,
    },
    /// The idempotency key was used before with a different request. 422.
    IdempotencyMismatch,
    /// The key's first request completed, but its response was too large to store, so it cannot
    /// be replayed; it is never executed a second time. 409.
    IdempotencyNotReplayable,
    /// The request body is larger than the layer's buffering limit. 413.
    #[non_exhaustive]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request body could not be read (the client went away or sent a broken body). 400.
    BodyReadFailed,
    /// A shared store is unreachable and the layer's policy is to fail closed. 503.
    #[non_exhaustive]
    BackendUnavailable {
        /// A hint for when to retry.
        retry_after: Duration,
    },
}

/// One rate-limit policy's state, as the IETF `RateLimit-Policy` and `RateLimit` fields carry it.
///
/// Formatted with the syntax of draft-ietf-httpapi-ratelimit-headers-09 (structured-field lists
/// of named items): `RateLimit-Policy: "login";q=5;w=60` and `RateLimit: "login";r=0;t=12`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitInfo {
    /// The policy's name (a structured-field string).
    pub policy: Arc<str>,
    /// Requests allowed per window (`q`).
    pub quota: u64,
    /// The window (`w`). Formatted in whole seconds, rounded up; when it is not whole seconds,
    /// `q` is scaled to the rounded window (rounded down).
    pub window: Duration,
    /// Requests left in the current window (`r`).
    pub remaining: u64,
    /// Time until the quota is fully restored (`t`), in whole seconds rounded up when formatted.
    pub reset: Duration,
}

impl RateLimitInfo {
    /// Describes a policy's state.
    #[must_use]
    pub fn new(
        policy: impl Into<Arc<str>>,
        quota: u64,
        window: Duration,
        remaining: u64,
        reset: Duration,
    ) -> Self {
        Self {
            policy: policy.into(),
            quota,
            window,
            remaining,
            reset,
        }
    }

    /// The quota and window as advertised: the window in whole seconds (rounded up, at least
    /// 1), the quota scaled to it (rounded down) when the window is not whole seconds, so that
    /// `10` per 500 ms is `q=20;w=1`, not `q=10;w=1` (half the real rate).
    fn advertised(&self) -> (u64, u64) {
        let w = ceil_secs(self.window).max(1);
        let window = self.window.as_nanos();
        let w_nanos = u128::from(w) * 1_000_000_000;
        if window == 0 || window == w_nanos {
            return (self.quota, w);
        }
        let q = u128::from(self.quota) * w_nanos / window;
        (u64::try_from(q).unwrap_or(u64::MAX), w)
    }

    /// Sets `RateLimit-Policy` and `RateLimit` on `headers`, replacing earlier values.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let mut buf = String::with_capacity(48);
        write_sf_string(&mut buf, &self.policy);
        let name_len = buf.len();
        let (q, w) = self.advertised();
        let _ = write!(buf, ";q={q};w={w}");
        if let Ok(v) = HeaderValue::from_str(&buf) {
            headers.insert(RATELIMIT_POLICY.clone(), v);
        }
        buf.truncate(name_len);
        let _ = write!(buf, ";r={};t={}", self.remaining, ceil_secs(self.reset));
        if let Ok(v) = HeaderValue::from_str(&buf) {
            headers.insert(RATELIMIT.clone(), v);
        }
    }
}

impl Rejection {
    /// [`Rejection::RateLimited`] with only a retry hint.
    #[must_use]
    pub fn rate_limited(retry_after: Duration, limit: Option<RateLimitInfo>) -> Self {
        Self::RateLimited { retry_after, limit }
    }

    /// [`Rejection::CircuitOpen`].
    #[must_use]
    pub fn circuit_open(retry_after: Duration) -> Self {
        Self::CircuitOpen {
            retry_after,
            breaker: None,
        }
    }

    /// [`Rejection::CircuitOpen`] from the breaker named `breaker`.
    pub(crate) fn circuit_open_by(breaker: Arc<str>, retry_after: Duration) -> Self {
        Self::CircuitOpen {
            retry_after,
            breaker: Some(breaker),
        }
    }

    /// [`Rejection::FeatureDisabled`] answering `status` (404 by default in the gate).
    #[must_use]
    pub fn feature_disabled(flag: impl Into<Arc<str>>, status: StatusCode) -> Self {
        Self::FeatureDisabled {
            flag: flag.into(),
            status,
        }
    }

    /// [`Rejection::IdempotencyInFlight`].
    #[must_use]
    pub fn idempotency_in_flight(retry_after: Duration) -> Self {
        Self::IdempotencyInFlight { retry_after }
    }

    /// [`Rejection::PayloadTooLarge`].
    #[must_use]
    pub fn payload_too_large(limit: usize) -> Self {
        Self::PayloadTooLarge { limit }
    }

    /// [`Rejection::BackendUnavailable`].
    #[must_use]
    pub fn backend_unavailable(retry_after: Duration) -> Self {
        Self::BackendUnavailable { retry_after }
    }

    /// The status code of the default answer.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::CircuitOpen { .. } | Self::BackendUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::FeatureDisabled { status, .. } => *status,
            Self::IdempotencyKeyMissing | Self::IdempotencyKeyInvalid | Self::BodyReadFailed => {
                StatusCode::BAD_REQUEST
            }
            Self::IdempotencyInFlight { .. } | Self::IdempotencyNotReplayable => {
                StatusCode::CONFLICT
            }
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// Every value [`kind`](Self::kind) returns.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const KINDS: [&'static str; 11] = [
        "rate_limited",
        "circuit_open",
        "feature_disabled",
        "idempotency_key_missing",
        "idempotency_key_invalid",
        "idempotency_in_flight",
        "idempotency_mismatch",
        "idempotency_not_replayable",
        "payload_too_large",
        "body_read_failed",
        "backend_unavailable",
    ];

    /// A stable snake-case name for logs and metric labels, e.g. `"rate_limited"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::FeatureDisabled { .. } => "feature_disabled",
            Self::IdempotencyKeyMissing => "idempotency_key_missing",
            Self::IdempotencyKeyInvalid => "idempotency_key_invalid",
            Self::IdempotencyInFlight { .. } => "idempotency_in_flight",
            Self::IdempotencyMismatch => "idempotency_mismatch",
            Self::IdempotencyNotReplayable => "idempotency_not_replayable",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyReadFailed => "body_read_failed",
            Self::BackendUnavailable { .. } => "backend_unavailable",
        }
    }

    /// The `Retry-After` hint, if the variant has one.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::CircuitOpen { retry_after, .. }
            | Self::IdempotencyInFlight { retry_after }
            | Self::BackendUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    fn anchor(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "RateLimited",
            Self::CircuitOpen { .. } => "CircuitOpen",
            Self::FeatureDisabled { .. } => "FeatureDisabled",
            Self::IdempotencyKeyMissing => "IdempotencyKeyMissing",
            Self::IdempotencyKeyInvalid => "IdempotencyKeyInvalid",
            Self::IdempotencyInFlight { .. } => "IdempotencyInFlight",
            Self::IdempotencyMismatch => "IdempotencyMismatch",
            Self::IdempotencyNotReplayable => "IdempotencyNotReplayable",
            Self::PayloadTooLarge { .. } => "PayloadTooLarge",
            Self::BodyReadFailed => "BodyReadFailed",
            Self::BackendUnavailable { .. } => "BackendUnavailable",
        }
    }

    /// The problem `title`: short, fixed per variant.
    #[must_use]
    pub fn title(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "Too many requests",
            Self::CircuitOpen { .. } => "Service temporarily unavailable",
            Self::FeatureDisabled { .. } => "Not found",
            Self::IdempotencyKeyMissing => "Idempotency-Key header missing",
            Self::IdempotencyKeyInvalid => "Idempotency-Key header invalid",
            Self::IdempotencyInFlight { .. } => "Request with this idempotency key in progress",
            Self::IdempotencyMismatch => "Idempotency key reused with a different request",
            Self::IdempotencyNotReplayable => "Idempotent response cannot be replayed",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::BodyReadFailed => "Request body could not be read",
            Self::BackendUnavailable { .. } => "Service temporarily unavailable",
        }
    }

    /// The problem `detail`: what happened and what the client can do.
    #[must_use]
    pub fn detail(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => {
                "The request quota for this client is exhausted; retry after the time given in Retry-After."
            }
            Self::CircuitOpen { .. } => {
                "A dependency of this service is failing and calls to it are paused; retry after the time given in Retry-After."
            }
            // Says nothing about the flag: a disabled feature should look like a missing one.
            Self::FeatureDisabled { .. } => "The requested resource is not available.",
            Self::IdempotencyKeyMissing => {
                "This operation requires an Idempotency-Key header with a unique key per logical request."
            }
            Self::IdempotencyKeyInvalid => {
                "The Idempotency-Key must be 1 to 255 visible ASCII characters without commas, as a token or a quoted string."
            }
            Self::IdempotencyInFlight { .. } => {
                "A request with the same idempotency key is still being processed; retry after the time given in Retry-After."
            }
            Self::IdempotencyMismatch => {
                "This idempotency key was already used with a different request; use a new key for a new request."
            }
            Self::IdempotencyNotReplayable => {
                "The request with this idempotency key was already processed, but its response was too large to keep; it will not be processed again."
            }
            Self::PayloadTooLarge { .. } => {
                "The request body is larger than this endpoint accepts."
            }
            Self::BodyReadFailed => "The request body ended early or was malformed.",
            Self::BackendUnavailable { .. } => {
                "A backing store is unreachable; retry after the time given in Retry-After."
            }
        }
    }

    /// The RFC 9457 problem document of the default answer.
    #[must_use]
    pub fn problem_json(&self) -> Bytes {
        let mut out = problem_start(
            Some(self.anchor()),
            self.title(),
            self.status(),
            self.detail(),
        );
        if let Some(retry) = self.retry_after() {
            let _ = write!(out, ",\"retry_after_seconds\":{}", retry_after_secs(retry));
        }
        match self {
            Self::PayloadTooLarge { limit } => {
                let _ = write!(out, ",\"max_body_bytes\":{limit}");
            }
            Self::RateLimited {
                limit: Some(info), ..
            } => {
                out.push_str(",\"policy\":");
                write_json_string(&mut out, &info.policy);
                let (q, w) = info.advertised();
                let _ = write!(out, ",\"quota\":{q},\"window_seconds\":{w}");
            }
            _ => {}
        }
        out.push('}');
        Bytes::from(out)
    }

    /// Adds the headers this variant's protocol requires (`Retry-After`, `RateLimit-Policy`,
    /// `RateLimit`) unless they are already present.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(retry) = self.retry_after() {
            if !headers.contains_key(header::RETRY_AFTER) {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(retry)),
                );
            }
        }
        if let Self::RateLimited {
            limit: Some(info), ..
        } = self
        {
            if !headers.contains_key(&RATELIMIT_POLICY) || !headers.contains_key(&RATELIMIT) {
                info.write_headers(headers);
            }
        }
    }

    /// The default answer: status, protocol headers, problem+json body, and `self` as a
    /// response extension. Emits the rejection's tracing event and metric.
    #[must_use]
    pub fn into_response<B>(self) -> Response<ResponseBody<B>> {
        respond(&crate::DefaultResponseForRejection, self)
    }

    /// The answer built by `hook`, completed like every bulwark rejection: the protocol headers
    /// the hook left out are added, `self` goes in the extensions, and the tracing event and
    /// metric are emitted. Layers call this; custom layers of yours can too.
    #[must_use]
    pub fn into_response_with<B, H>(self, hook: &H) -> Response<ResponseBody<B>>
    where
        H: ResponseForRejection,
    {
        respond(hook, self)
    }

    /// The default answer's parts, with a plain [`Bytes`] body, as a
    /// [`ResponseForRejection`](crate::ResponseForRejection) hook may want to start from.
    #[must_use]
    pub fn default_response(&self) -> Response<Bytes> {
        let mut res = Response::new(self.problem_json());
        *res.status_mut() = self.status();
        res.headers_mut().insert(header::CONTENT_TYPE, PROBLEM_JSON);
        self.write_headers(res.headers_mut());
        res
    }
}

/// The one place every layer's rejection becomes a response: the hook's answer, plus the
/// protocol headers it left out, plus the extension, plus one tracing event and one metric.
pub(crate) fn respond<B, H>(hook: &H, rejection: Rejection) -> Response<ResponseBody<B>>
where
    H: ResponseForRejection,
{
    let mut res = hook.response_for(&rejection);
    rejection.write_headers(res.headers_mut());
    let kind = rejection.kind();
    let status = res.status().as_u16();
    if matches!(rejection, Rejection::BackendUnavailable { .. }) {
        tracing::warn!(target: "bulwark::rejection", rejection = kind, status, "request rejected: shared store unavailable");
    } else {
        let breaker = match &rejection {
            Rejection::CircuitOpen { breaker, .. } => breaker.as_deref(),
            _ => None,
        };
        tracing::debug!(target: "bulwark::rejection", rejection = kind, status, breaker, "request rejected");
    }
    crate::metrics::rejection(kind);
    res.extensions_mut().insert(rejection);
    res.map(ResponseBody::full)
}

/// The members every problem document opens with, the closing brace left to the caller:
/// `type` (this variant's documentation, or `about:blank` for an answer that is no
/// [`Rejection`]), `title`, `status` and `detail`.
fn problem_start(anchor: Option<&str>, title: &str, status: StatusCode, detail: &str) -> String {
    let mut out = String::with_capacity(320);
    out.push_str("{\"type\":\"");
    match anchor {
        Some(anchor) => {
            out.push_str(DOCS);
            out.push_str(anchor);
        }
        None => out.push_str("about:blank"),
    }
    out.push_str("\",\"title\":");
    write_json_string(&mut out, title);
    let _ = write!(out, ",\"status\":{}", status.as_u16());
    out.push_str(",\"detail\":");
    write_json_string(&mut out, detail);
    out
}

/// An error answer bulwark makes that is no [`Rejection`] (nothing refused the request: an
/// upstream broke off, or a client's `only-if-cached` found nothing): `status` with an
/// `about:blank` problem document titled by the status' reason phrase. It carries no
/// `Rejection` extension, so outer layers treat it as the inner service's own answer (a fallback
/// may replace a 502, a breaker counts it), which is what it stands for.
pub(crate) fn problem_response<B>(status: StatusCode, detail: &str) -> Response<ResponseBody<B>> {
    let mut out = problem_start(
        None,
        status.canonical_reason().unwrap_or("Error"),
        status,
        detail,
    );
    out.push('}');
    let mut res = Response::new(ResponseBody::full(Bytes::from(out)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, PROBLEM_JSON);
    res
}

/// The `detail` of the 502 that stands for an upstream answer whose body broke off.
pub(crate) const UPSTREAM_BROKE_OFF: &str = "The upstream answer broke off.";

/// Whole seconds, rounded up, at least 1: what `Retry-After` must say.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    ceil_secs(d).max(1)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Writes `s` as a JSON string literal.
///
/// Runs of characters that need no escape are copied whole: the strings written here are
/// mostly fixed titles and details, so this is one copy per string.
pub(crate) fn write_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut rest = s;
    while let Some(i) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f)
    {
        out.push_str(&rest[..i]);
        // The byte is ASCII, so `i` is a char boundary and the char is that byte.
        let c = rest.as_bytes()[i];
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    // Other control characters (C1, U+0080..U+009F) are valid JSON unescaped.
    out.push('"');
}

/// Writes `s` as an RFC 8941 structured-field string; characters it cannot hold become `?`.
fn write_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Rejection> {
        vec![
            Rejection::rate_limited(Duration::from_millis(1), None),
            Rejection::circuit_open(Duration::from_secs(3)),
            Rejection::feature_disabled("f", StatusCode::NOT_FOUND),
            Rejection::IdempotencyKeyMissing,
            Rejection::IdempotencyKeyInvalid,
            Rejection::idempotency_in_flight(Duration::from_secs(1)),
            Rejection::IdempotencyMismatch,
            Rejection::IdempotencyNotReplayable,
            Rejection::payload_too_large(10),
            Rejection::BodyReadFailed,
            Rejection::backend_unavailable(Duration::ZERO),
        ]
    }

    /// The answers that stand for an upstream's failure are problem documents too, written by
    /// the same writer, with no `Rejection` on them.
    #[tokio::test]
    async fn gateway_answers_are_problem_documents() {
        use http_body_util::{BodyExt, Empty};
        let res = problem_response::<Empty<Bytes>>(StatusCode::BAD_GATEWAY, UPSTREAM_BROKE_OFF);
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(res.extensions().get::<Rejection>().is_none());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"type":"about:blank","title":"Bad Gateway","status":502,"detail":"The upstream answer broke off."}"#
        );
        let res = problem_response::<Empty<Bytes>>(StatusCode::GATEWAY_TIMEOUT, "a \"quoted\" x");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["title"], "Gateway Timeout");
        assert_eq!(v["status"], 504);
        assert_eq!(v["detail"], "a \"quoted\" x");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2_001)), 3);
    }

    #[test]
    fn ratelimit_policy_scales_the_quota_to_whole_seconds() {
        let policy = |quota, window| {
            let info = RateLimitInfo::new("p", quota, window, 0, Duration::ZERO);
            let mut h = HeaderMap::new();
            info.write_headers(&mut h);
            let body = Rejection::rate_limited(Duration::ZERO, Some(info)).problem_json();
            (h[&RATELIMIT_POLICY].to_str().unwrap().to_owned(), body)
        };
        assert_eq!(policy(5, Duration::from_secs(60)).0, r#""p";q=5;w=60"#);
        // 10 per 500 ms is 20 per second.
        let (header, body) = policy(10, Duration::from_millis(500));
        assert_eq!(header, r#""p";q=20;w=1"#);
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(body.contains(r#""quota":20,"window_seconds":1"#), "{body}");
        // 10 per 1.5 s: 13 in the 2 s advertised (rounded down).
        assert_eq!(
            policy(10, Duration::from_millis(1_500)).0,
            r#""p";q=13;w=2"#
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn structured_field_strings_are_escaped() {
        let mut s = String::new();
        write_sf_string(&mut s, "a\"b\\cé");
        assert_eq!(s, r#""a\"b\\c?""#);
    }

    #[test]
    fn kinds_and_anchors_are_unique() {
        let rejections = all();
        let mut kinds: Vec<_> = rejections.iter().map(Rejection::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), rejections.len());
        let mut listed = Rejection::KINDS.to_vec();
        listed.sort_unstable();
        assert_eq!(kinds, listed, "Rejection::KINDS lists every kind, once");
        for r in &rejections {
            assert!(
                r.problem_json()
                    .starts_with(b"{\"type\":\"https://docs.rs/bulwark/")
            );
        }
    }
}
