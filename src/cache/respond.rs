//! The answers the cache gives: a stored response served (with `Age`, `Cache-Status`, or as a
//! `304`), an inner answer passed through with its `Cache-Status`, and bulwark's own `504`
//! (`only-if-cached`) and `502` (the inner body broke off).

use http::{HeaderValue, Method, Response, StatusCode, header, request, response};

use super::{
    clock::Wall,
    conditional::not_modified,
    entry::Stored,
    freshness::Freshness,
    shared::Shared,
    status::{CacheOutcome, CacheStatus},
    store::Entry,
};
use crate::{
    body::ResponseBody,
    rejection::{UPSTREAM_BROKE_OFF, problem_response},
};

/// `entry`, which another request's call stored, served as `collapsed` if it is fresh for
/// this request.
pub(super) fn serve_collapsed<B>(
    shared: &Shared,
    entry: &Entry,
    req: &request::Parts,
    key: &str,
) -> Option<Response<ResponseBody<B>>> {
    let now = shared.clock.now();
    let stored = entry.as_response().expect("found entries are responses");
    (stored.freshness(&shared.cfg, req, now) == Freshness::Fresh).then(|| {
        serve(
            shared,
            stored,
            req,
            CacheStatus::new(CacheOutcome::Collapsed),
            now,
            key,
        )
    })
}

/// Serves a stored response: `304` when the client's own conditional request matches, else the
/// stored answer (without its body for `HEAD`), with `Age` and `Cache-Status`.
pub(super) fn serve<B>(
    shared: &Shared,
    stored: &Stored,
    req: &request::Parts,
    status: CacheStatus,
    now: Wall,
    key: &str,
) -> Response<ResponseBody<B>> {
    let not_modified = stored.not_modified_for(req);
    let (mut res, status) = serve_as(shared, stored, req, status, now, key, not_modified);
    res.extensions_mut().insert(status);
    res
}

/// [`serve`], told whether the answer is `304`; the answer's `CacheStatus` is returned beside
/// it for the caller to attach (into an extension map it may already have).
pub(super) fn serve_as<B>(
    shared: &Shared,
    stored: &Stored,
    req: &request::Parts,
    mut status: CacheStatus,
    now: Wall,
    key: &str,
    not_modified: bool,
) -> (Response<ResponseBody<B>>, CacheStatus) {
    let (code, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, ResponseBody::empty())
    } else if req.method == Method::HEAD {
        (stored.response.status, ResponseBody::empty())
    } else {
        (
            stored.response.status,
            ResponseBody::full(stored.response.body.clone()),
        )
    };
    let age = stored.age(now);
    if status.ttl.is_none() && status.outcome != CacheOutcome::Stale {
        status.ttl = Some(stored.ttl(now));
    }
    let headers = match status.ttl {
        // A plain fresh hit: the same header map for every hit of this entry within a second,
        // cloned instead of built (no formatting, no hashing of names).
        Some(ttl) if !not_modified && status == CacheStatus::hit(ttl) => {
            let name = shared.name();
            let headers = stored.hit_values.headers(name, age, ttl, || {
                let mut headers = stored.response.headers.clone();
                headers.insert(header::AGE, HeaderValue::from(age));
                status.write(name, &mut headers);
                headers
            });
            shared.count(status, Some(key));
            headers
        }
        _ => {
            let mut headers = stored.response.headers.clone();
            if not_modified {
                headers.remove(header::CONTENT_LENGTH);
            }
            headers.insert(header::AGE, HeaderValue::from(age));
            shared.report(status, &mut headers, Some(key));
            headers
        }
    };
    let mut res = Response::new(body);
    *res.status_mut() = code;
    *res.headers_mut() = headers;
    (res, status)
}

/// A response the cache passed by (`fwd=bypass`, with `detail`).
pub(super) fn bypassed<B>(
    shared: &Shared,
    parts: response::Parts,
    body: ResponseBody<B>,
    detail: &'static str,
) -> Response<ResponseBody<B>> {
    let mut status = CacheStatus::new(CacheOutcome::Bypass);
    status.detail = Some(detail);
    pass(shared, parts, body, status, None)
}

/// Passes an inner answer through, with `Cache-Status`.
pub(super) fn pass<B>(
    shared: &Shared,
    mut parts: response::Parts,
    body: ResponseBody<B>,
    mut status: CacheStatus,
    key: Option<&str>,
) -> Response<ResponseBody<B>> {
    status.fwd_status.get_or_insert(parts.status.as_u16());
    shared.report(status, &mut parts.headers, key);
    parts.extensions.insert(status);
    Response::from_parts(parts, body)
}

/// [`pass`] for the answer to a request forwarded without the client's conditionals (see
/// `take_client_validators`): when they match it, the client gets `304 Not Modified` and no
/// body, as the origin would have answered.
pub(super) fn answer<B>(
    shared: &Shared,
    head: &request::Parts,
    mut parts: response::Parts,
    body: ResponseBody<B>,
    mut status: CacheStatus,
    key: &str,
) -> Response<ResponseBody<B>> {
    if not_modified(parts.status, &parts.headers, head) {
        status.fwd_status = Some(parts.status.as_u16());
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        return pass(shared, parts, ResponseBody::empty(), status, Some(key));
    }
    pass(shared, parts, body, status, Some(key))
}

pub(super) fn gateway_timeout<B>(shared: &Shared, key: &str) -> Response<ResponseBody<B>> {
    let status = CacheStatus::new(CacheOutcome::OnlyIfCached);
    let mut res = problem_response(
        StatusCode::GATEWAY_TIMEOUT,
        "The request asked for a stored answer only (only-if-cached), and none is usable.",
    );
    shared.report(status, res.headers_mut(), Some(key));
    res.extensions_mut().insert(status);
    res
}

pub(super) fn bad_gateway<B>(
    shared: &Shared,
    outcome: CacheOutcome,
    key: &str,
) -> Response<ResponseBody<B>> {
    let mut status = CacheStatus::new(outcome);
    status.detail = Some("upstream-body-failed");
    let mut res = problem_response(StatusCode::BAD_GATEWAY, UPSTREAM_BROKE_OFF);
    shared.report(status, res.headers_mut(), Some(key));
    res.extensions_mut().insert(status);
    res
}
