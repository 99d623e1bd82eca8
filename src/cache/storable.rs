//! Whether a response may be stored, and for how long: forced-TTL mode, RFC 9111 policy mode
//! (through `http-cache-semantics`), stale-while-revalidate and stale-if-error on top, and the
//! never-store rules. The decision is made from the response's head, before its body is read.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header, request, response};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike};

use super::{
    clock::Wall,
    directives::{Directives, MAX_LIFETIME, effective_headers, initial_age, qualified_fields},
    entry::{HitMemo, Stored, StoredParts},
    policy::{CacheSettings, Mode, is_restricted},
    vary::{secret_digest, vary_key, vary_names},
};
use crate::{marker::StandIn, stored::StoredResponse};

/// The status the RFC 9111 policy evaluates. The policy library only stores the statuses it
/// lists as understood; any other final status is storable with explicit freshness
/// (RFC 9111 section 3), so it is evaluated as a `200` when the response has `max-age`,
/// `s-maxage` or `Expires`.
pub(crate) fn policy_status(status: StatusCode, headers: &HeaderMap, d: &Directives) -> StatusCode {
    const UNDERSTOOD: &[u16] = &[
        200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
    ];
    let s = status.as_u16();
    if UNDERSTOOD.contains(&s) || s < 200 || s == 206 || s == 304 {
        return status;
    }
    if d.max_age || d.s_maxage || headers.contains_key(header::EXPIRES) {
        StatusCode::OK
    } else {
        status
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Method,
    Status,
    Marked,
    SetCookie,
    VaryStar,
    Directive,
    Credentials,
    NoFreshness,
    Stream,
}

/// Whether a `Content-Type` is `text/event-stream` (any case, any parameters).
pub(crate) fn is_event_stream(v: &[u8]) -> bool {
    let essence = v.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

impl NotStored {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::Marked => "bulwark-answer",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::Directive => "directive",
            Self::Credentials => "credentials",
            Self::NoFreshness => "no-freshness",
            Self::Stream => "event-stream",
        }
    }
}

/// The decision to store a response, made from its head before its body is read.
pub(crate) struct Decision {
    policy: Option<Box<CachePolicy>>,
    req: StoredParts,
    response_time: SystemTime,
    fresh_until: SystemTime,
    keep_for: Duration,
    swr: Duration,
    sie: Duration,
    allows_authorized: bool,
    vary: Vec<HeaderName>,
    vary_key: String,
}

impl Decision {
    pub(crate) fn into_stored(self, res: &response::Parts, body: Bytes) -> Stored {
        let mut response = StoredResponse::capture(res, body);
        let omitted: Vec<HeaderName> = res
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(qualified_fields)
            .collect();
        for name in omitted {
            response.headers.remove(name);
        }
        Stored {
            initial_age: initial_age(&response.headers),
            response,
            req: self.req,
            policy_mode: self.policy.is_some(),
            policy: self.policy,
            response_time: Wall::of(self.response_time),
            fresh_until: Wall::of(self.fresh_until),
            keep_for: self.keep_for,
            stale_while_revalidate: self.swr,
            stale_if_error: self.sie,
            allows_authorized: self.allows_authorized,
            vary: self.vary,
            vary_key: self.vary_key,
            hit_values: HitMemo::default(),
        }
    }
}

/// Whether a response was produced by bulwark instead of a handler (a rejection, a fallback, an
/// idempotent replay): such answers are never stored.
pub(crate) fn is_bulwark_answer(res: &response::Parts) -> bool {
    StandIn::of(&res.extensions, &res.headers).is_some()
}

/// The stored view of the request a response answered: method, URI, `Host`, the `Vary`-named
/// headers (credential headers as their digest), and whether it carried `Authorization` (never
/// its value).
pub(crate) fn stored_request(
    cfg: &CacheSettings,
    req: &request::Parts,
    vary: &[HeaderName],
    method: &Method,
) -> StoredParts {
    let mut headers = HeaderMap::new();
    if let Some(h) = req.headers.get(header::HOST) {
        headers.insert(header::HOST, h.clone());
    }
    for name in vary {
        let values = req.headers.get_all(name);
        if crate::redact::is_secret_header(name) {
            // Never a credential in an entry (a Redis value): its digest, as in the key.
            if values.iter().next().is_some() {
                let digest = secret_digest(values.iter());
                if let Ok(v) = HeaderValue::try_from(digest) {
                    headers.append(name.clone(), v);
                }
            }
            continue;
        }
        for v in values {
            headers.append(name.clone(), v.clone());
        }
    }
    if !cfg.allow_authorized && req.headers.contains_key(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("redacted"));
    }
    StoredParts {
        method: method.clone(),
        uri: req.uri.clone(),
        headers,
    }
}

/// Whether the response to `req` may be stored, and for how long. Made from the response head,
/// before its body is read.
pub(crate) fn decide(
    cfg: &CacheSettings,
    req: &request::Parts,
    res: &response::Parts,
    now: SystemTime,
) -> Result<Decision, NotStored> {
    if req.method != Method::GET {
        return Err(NotStored::Method);
    }
    let status = res.status.as_u16();
    if status < 200 || status == 206 || status == 304 {
        return Err(NotStored::Status);
    }
    if is_bulwark_answer(res) {
        return Err(NotStored::Marked);
    }
    if res.headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    // An event stream never ends: buffering it to store it would hold its head back forever
    // (with a forced TTL, any 2xx GET is stored whatever its headers say).
    if res
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_event_stream(v.as_bytes()))
    {
        return Err(NotStored::Stream);
    }
    let Some(vary) = vary_names(&res.headers) else {
        return Err(NotStored::VaryStar);
    };
    let effective = effective_headers(cfg.target.as_ref(), &res.headers);
    let d = Directives::parse(effective.get_all(header::CACHE_CONTROL));
    if d.no_store || d.private {
        return Err(NotStored::Directive);
    }
    let req_d = Directives::parse(req.headers.get_all(header::CACHE_CONTROL));
    if req_d.no_store && cfg.mode == Mode::Policy {
        return Err(NotStored::Directive);
    }
    if is_restricted(cfg, &req.headers) && !d.allows_authorized() {
        return Err(NotStored::Credentials);
    }
    let allows_authorized = d.allows_authorized();
    let stored_req = stored_request(cfg, req, &vary, &Method::GET);
    let vary_key = vary_key(&vary, &req.headers);
    let no_stale = d.must_revalidate || d.proxy_revalidate || d.no_cache;
    let pick = |directive: Option<u64>, default: Duration| {
        if no_stale {
            Duration::ZERO
        } else {
            directive
                .map_or(default, Duration::from_secs)
                .min(MAX_LIFETIME)
        }
    };
    match cfg.mode {
        Mode::Forced(ttl) => {
            let ttl = ttl.min(MAX_LIFETIME);
            if !res.status.is_success() {
                return Err(NotStored::Status);
            }
            let swr = pick(None, cfg.stale_while_revalidate);
            let sie = pick(None, cfg.stale_if_error);
            let keep_for = (ttl + swr.max(sie)).min(MAX_LIFETIME);
            if keep_for.is_zero() {
                // A zero forced TTL without stale serving: nothing could ever be served from
                // the entry, so writing it would only cost a store call per request.
                return Err(NotStored::NoFreshness);
            }
            Ok(Decision {
                policy: None,
                req: stored_req,
                response_time: now,
                fresh_until: now + ttl,
                keep_for,
                swr,
                sie,
                allows_authorized,
                vary,
                vary_key,
            })
        }
        Mode::Policy => {
            let head = PolicyResponse {
                status: policy_status(res.status, &effective, &d),
                headers: &effective,
            };
            let policy = CachePolicy::new_options(&stored_req, &head, now, cfg.options());
            if !policy.is_storable() {
                return Err(NotStored::Directive);
            }
            let ttl = policy.time_to_live(now).min(MAX_LIFETIME);
            let validator = res.headers.contains_key(header::ETAG)
                || res.headers.contains_key(header::LAST_MODIFIED);
            let swr = pick(d.stale_while_revalidate, cfg.stale_while_revalidate);
            let sie = pick(d.stale_if_error, cfg.stale_if_error);
            if ttl.is_zero() && !validator && swr.is_zero() && sie.is_zero() {
                return Err(NotStored::NoFreshness);
            }
            let retention = if validator {
                cfg.validator_retention
            } else {
                Duration::ZERO
            };
            let keep_for = (ttl + swr.max(sie).max(retention)).min(MAX_LIFETIME);
            if keep_for.is_zero() {
                // Stale at once, kept for no time (a validator with no retention configured).
                return Err(NotStored::NoFreshness);
            }
            Ok(Decision {
                policy: Some(Box::new(policy)),
                req: stored_req,
                response_time: now,
                fresh_until: now + ttl,
                keep_for,
                swr,
                sie,
                allows_authorized,
                vary,
                vary_key,
            })
        }
    }
}

/// Rebuilds the policy of an entry read back from bytes.
pub(crate) fn rebuild_policy(
    options: CacheOptions,
    target: Option<&HeaderName>,
    req: &StoredParts,
    status: StatusCode,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> CachePolicy {
    let effective = effective_headers(target, headers);
    let d = Directives::parse(effective.get_all(header::CACHE_CONTROL));
    let head = PolicyResponse {
        status: policy_status(status, &effective, &d),
        headers: &effective,
    };
    CachePolicy::new_options(req, &head, response_time, options)
}

pub(crate) struct PolicyResponse<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

impl http_cache_semantics::ResponseLike for PolicyResponse<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

impl RequestLike for StoredParts {
    fn uri(&self) -> http::Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, other: &http::Uri) -> bool {
        &self.uri == other
    }
    fn method(&self) -> &Method {
        &self.method
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// A request whose own directives (`Cache-Control`, `Pragma`) decide whether a stored response
/// is fresh for it, as the policy library is shown it: the stored request's identity (method
/// `GET`, URI, `Host`, the `Vary`-named fields), which bulwark has already matched through the
/// key and the `Vary` key, and the request's directives with their names lowercased.
///
/// Not the request itself: its URI form differs between HTTP/1.1 (`/p` and `Host`) and HTTP/2
/// (`https://a/p`), a custom key may ignore parts of it, and credential headers are stored as
/// their digest; the library would call each of these another resource or variant.
pub(crate) struct Presented<'a> {
    stored: &'a StoredParts,
    headers: HeaderMap,
}

pub(crate) static GET: Method = Method::GET;

impl<'a> Presented<'a> {
    pub(crate) fn new(stored: &'a StoredParts, req: &request::Parts) -> Self {
        let mut headers = stored.headers.clone();
        for name in [header::CACHE_CONTROL, header::PRAGMA] {
            for v in req.headers.get_all(&name) {
                let lower = HeaderValue::from_bytes(&v.as_bytes().to_ascii_lowercase())
                    .unwrap_or_else(|_| v.clone());
                headers.append(name.clone(), lower);
            }
        }
        Self { stored, headers }
    }
}

impl RequestLike for Presented<'_> {
    fn uri(&self) -> http::Uri {
        self.stored.uri.clone()
    }
    fn is_same_uri(&self, other: &http::Uri) -> bool {
        &self.stored.uri == other
    }
    fn method(&self) -> &Method {
        &GET
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::testing::{policy, req, res};

    #[test]
    fn never_stores() {
        let now = SystemTime::now();
        let cfg = policy();
        let cases = [
            (
                res(
                    200,
                    &[("cache-control", "max-age=5"), ("set-cookie", "a=b")],
                ),
                NotStored::SetCookie,
            ),
            (
                res(200, &[("cache-control", "max-age=5, private")]),
                NotStored::Directive,
            ),
            (
                res(200, &[("cache-control", "no-store")]),
                NotStored::Directive,
            ),
            (
                res(200, &[("cache-control", "max-age=5"), ("vary", "*")]),
                NotStored::VaryStar,
            ),
            (res(200, &[]), NotStored::NoFreshness),
            (
                res(206, &[("cache-control", "max-age=5")]),
                NotStored::Status,
            ),
            (
                res(
                    200,
                    &[
                        ("cache-control", "max-age=5"),
                        ("idempotent-replayed", "true"),
                    ],
                ),
                NotStored::Marked,
            ),
        ];
        for (r, why) in cases {
            assert_eq!(decide(&cfg, &req(&[]), &r, now).err(), Some(why));
        }
        let auth = req(&[("authorization", "Bearer x")]);
        let r = res(200, &[("cache-control", "max-age=5")]);
        assert_eq!(
            decide(&cfg, &auth, &r, now).err(),
            Some(NotStored::Credentials)
        );
        let r = res(200, &[("cache-control", "s-maxage=5")]);
        assert!(decide(&cfg, &auth, &r, now).is_ok());
    }

    /// Found by the `cache_policy` fuzz target: an entry kept for no time was still written
    /// to the store (a Redis `SET` per request) though nothing could ever be served from it.
    #[test]
    fn an_entry_that_would_be_kept_for_no_time_is_not_stored() {
        let now = SystemTime::now();
        let forced = CacheSettings::new(Mode::Forced(Duration::ZERO));
        let r = res(200, &[]);
        assert_eq!(
            decide(&forced, &req(&[]), &r, now).err(),
            Some(NotStored::NoFreshness)
        );
        let mut stale_ok = CacheSettings::new(Mode::Forced(Duration::ZERO));
        stale_ok.stale_if_error = Duration::from_secs(5);
        assert!(decide(&stale_ok, &req(&[]), &r, now).is_ok());
        let mut no_retention = policy();
        no_retention.validator_retention = Duration::ZERO;
        let validated = res(200, &[("cache-control", "max-age=0"), ("etag", "\"v1\"")]);
        assert_eq!(
            decide(&no_retention, &req(&[]), &validated, now).err(),
            Some(NotStored::NoFreshness)
        );
        assert!(decide(&policy(), &req(&[]), &validated, now).is_ok());
    }

    #[test]
    fn targeted_field_wins() {
        let now = SystemTime::now();
        let mut cfg = policy();
        cfg.target = Some(HeaderName::from_static("cdn-cache-control"));
        let r = res(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
        );
        let d = decide(&cfg, &req(&[]), &r, now).ok().unwrap();
        assert_eq!(d.fresh_until, now + Duration::from_secs(60));
        let r = res(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "no-store"),
            ],
        );
        assert!(decide(&cfg, &req(&[]), &r, now).is_err());
    }

    #[test]
    fn s_maxage_beats_max_age() {
        let now = SystemTime::now();
        let r = res(200, &[("cache-control", "max-age=1, s-maxage=100")]);
        let d = decide(&policy(), &req(&[]), &r, now).ok().unwrap();
        assert_eq!(d.fresh_until, now + Duration::from_secs(100));
    }
}
