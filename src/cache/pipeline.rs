//! The cache's path for `GET` and `HEAD`: the synchronous hit ([`hit_now`]), and the
//! asynchronous rest ([`cached`]) as named steps.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, header, request};
use http_body::Body;
use tower_service::Service;

use super::{
    coalesce::{FlightGuard, Join},
    conditional::take_client_validators,
    directives::Directives,
    freshness::Freshness,
    policy::{is_restricted, plain},
    respond::{gateway_timeout, pass, serve, serve_as, serve_collapsed},
    settle::{Forwarded, settle},
    shared::{IndexInfo, KEY_BUF, Lookup, QUIET, Shared, default_key_in, variant_key},
    status::{CacheOutcome, CacheStatus},
    store::{Entry, EntryKind},
    vary::vary_key,
};
use crate::{body::ResponseBody, redact::Redactor};

/// The synchronous fast path of `GET` and `HEAD`: a fresh entry the store finds at once
/// ([`Store::get_now`](super::Store::get_now)) is served without boxing a future. Anything
/// else (a range request, no entry found at once, a stale or unusable one) goes on to
/// [`cached`] with the base key if it was made: the same decisions, in the same order.
///
/// A hit answers with the request's own extension map, emptied: the request ends here, and
/// its map's allocations (a box and a table) then carry the answer's `CacheStatus` instead
/// of two new ones.
pub(super) fn hit_now<B>(
    shared: &Shared,
    parts: &mut request::Parts,
) -> Result<Response<ResponseBody<B>>, BaseKey> {
    let plain = plain(&parts.headers);
    if !plain && parts.headers.contains_key(header::RANGE) {
        return Err(BaseKey::NotMade);
    }
    let mut buf = [0u8; KEY_BUF];
    let base: std::borrow::Cow<'_, str> = match &shared.key {
        None => match default_key_in(parts, &mut buf) {
            Some(k) => k.into(),
            None => return Err(BaseKey::NotMade),
        },
        Some(key) => match key(parts) {
            Some(k) => k.into(),
            None => return Err(BaseKey::Made(None)),
        },
    };
    let Some(entry) = shared.store.inner.get_now(&base) else {
        return Err(BaseKey::Made(Some(base.into_owned())));
    };
    let (entry, variant) = match &*entry.0 {
        EntryKind::Response(_) => (entry, None),
        EntryKind::Index { id, vary, .. } => {
            let key = variant_key(&base, *id, &vary_key(vary, &parts.headers));
            match shared.store.inner.get_now(&key) {
                Some(v) if v.as_response().is_some() => (v, Some(key)),
                _ => return Err(BaseKey::Made(Some(base.into_owned()))),
            }
        }
    };
    let stored = entry.as_response().expect("checked above");
    let now = shared.clock.now();
    if stored.freshness_for(&shared.cfg, parts, now, plain) != Freshness::Fresh {
        return Err(BaseKey::Made(Some(base.into_owned())));
    }
    let key = variant.as_deref().unwrap_or(&base);
    // A plain request has no conditional fields: never a 304.
    let not_modified = !plain && stored.not_modified_for(parts);
    let (mut res, status) = serve_as(
        shared,
        stored,
        parts,
        CacheStatus::new(CacheOutcome::Hit),
        now,
        key,
        not_modified,
    );
    let mut extensions = std::mem::take(&mut parts.extensions);
    extensions.clear();
    extensions.insert(status);
    *res.extensions_mut() = extensions;
    Ok(res)
}

/// Whether the fast path already made the request's base key (`None`: the key hook declined).
pub(super) enum BaseKey {
    NotMade,
    Made(Option<String>),
}

/// A copy of the request head without its extensions, for the decisions made after the call.
fn head_of(parts: &request::Parts) -> request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// A `Cache-Status` for a request the cache passes by, with why.
fn bypass(detail: &'static str) -> CacheStatus {
    let mut s = CacheStatus::new(CacheOutcome::Bypass);
    s.detail = Some(detail);
    s
}

/// What a lookup leaves the request to do when no stored answer served it.
struct Miss {
    key: String,
    index: Option<IndexInfo>,
    outcome: CacheOutcome,
    /// The stale entry to revalidate, if any.
    stale: Option<Entry>,
}

/// What the entry found (or not) allows.
enum Examined<B> {
    /// Answered from the cache: fresh, or `504` for `only-if-cached`.
    Answer(Response<ResponseBody<B>>),
    /// Served stale (`stale-while-revalidate`); refresh the entry in the background.
    ServedStale {
        res: Response<ResponseBody<B>>,
        key: String,
        index: Option<IndexInfo>,
        entry: Entry,
    },
    /// The inner service must answer.
    Miss(Miss),
}

/// The whole cached path for `GET` and `HEAD` that [`hit_now`] did not answer, in steps:
/// requests passed by; the lookup; what the entry found allows ([`examine`]); a background
/// refresh ([`refresh_in_background`]); joining a call in flight ([`coalesce`]); the forwarded
/// call and its answer ([`forward`], then [`settle`]).
pub(super) async fn cached<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: S,
    parts: request::Parts,
    body: ReqB,
    base: BaseKey,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    if parts.headers.contains_key(header::RANGE) {
        return pass_by(&shared, inner, parts, body, bypass("range"), None).await;
    }
    let base = match base {
        BaseKey::Made(base) => base,
        BaseKey::NotMade => shared.make_key(&parts),
    };
    let Some(base) = base else {
        return pass_by(&shared, inner, parts, body, bypass("key"), None).await;
    };
    let only_if_cached =
        Directives::parse(parts.headers.get_all(header::CACHE_CONTROL)).only_if_cached;
    let landed = shared.flights.landed();
    let lookup = match shared.lookup(&base, &parts.headers).await {
        Ok(l) => l,
        Err(e) => {
            shared.store_failed(&e);
            let status = bypass("store-unavailable");
            return pass_by(&shared, inner, parts, body, status, Some(&base)).await;
        }
    };
    let miss = match examine(&shared, lookup, &parts, only_if_cached) {
        Examined::Answer(res) => return Ok(res),
        Examined::ServedStale {
            res,
            key,
            index,
            entry,
        } => {
            refresh_in_background(&shared, inner, parts, body, base, key, index, entry);
            return Ok(res);
        }
        Examined::Miss(miss) => miss,
    };
    if only_if_cached {
        return Ok(gateway_timeout(&shared, &miss.key));
    }
    if parts.method == Method::HEAD {
        // HEAD is answered from the stored GET; it never fills the cache itself.
        let mut status = CacheStatus::new(miss.outcome);
        status.detail = Some("head");
        return pass_by(&shared, inner, parts, body, status, Some(&miss.key)).await;
    }
    let guard = match coalesce(&shared, &base, &miss.key, &parts, landed).await {
        Ok(guard) => guard,
        Err(collapsed) => return Ok(collapsed),
    };
    let fwd = Forwarded {
        base,
        key: miss.key,
        index: miss.index,
        guard,
        outcome: miss.outcome,
        stale: miss.stale.map(|e| (e, false)),
    };
    forward(&shared, inner, parts, body, fwd).await
}

/// Calls the inner service for a request the cache does not handle, and passes its answer
/// through marked with `status`.
async fn pass_by<S, ReqB, ResB>(
    shared: &Shared,
    mut inner: S,
    parts: request::Parts,
    body: ReqB,
    status: CacheStatus,
    key: Option<&str>,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    let res = inner.call(Request::from_parts(parts, body)).await?;
    let (p, b) = res.into_parts();
    Ok(pass(shared, p, ResponseBody::new(b), status, key))
}

/// What the lookup found allows: a fresh entry answers; a stale one answers while it is
/// revalidated if `stale-while-revalidate` allows, else it is revalidated in line; an unusable
/// one (another variant, or one this request may not have) and no entry are misses.
fn examine<B>(
    shared: &Shared,
    lookup: Lookup,
    parts: &request::Parts,
    only_if_cached: bool,
) -> Examined<B> {
    let now = shared.clock.now();
    let (key, entry, index) = match lookup {
        Lookup::Found { key, entry, index } => (key, entry, index),
        Lookup::Miss { key, index } => {
            let outcome = if index.is_some() {
                CacheOutcome::VaryMiss
            } else {
                CacheOutcome::Miss
            };
            return Examined::Miss(Miss {
                key,
                index,
                outcome,
                stale: None,
            });
        }
    };
    let stored = entry.as_response().expect("found entries are responses");
    match stored.freshness(&shared.cfg, parts, now) {
        Freshness::Fresh => {
            let status = CacheStatus::new(CacheOutcome::Hit);
            Examined::Answer(serve(shared, stored, parts, status, now, &key))
        }
        Freshness::Unusable => {
            let outcome = if stored.vary.is_empty() {
                CacheOutcome::Miss
            } else {
                CacheOutcome::VaryMiss
            };
            Examined::Miss(Miss {
                key,
                index,
                outcome,
                stale: None,
            })
        }
        Freshness::Stale { .. } if only_if_cached => {
            Examined::Answer(gateway_timeout(shared, &key))
        }
        Freshness::Stale { by_request: false } if stored.may_serve_while_revalidating(now) => {
            let status = CacheStatus::new(CacheOutcome::StaleWhileRevalidate);
            let res = serve(shared, stored, parts, status, now, &key);
            Examined::ServedStale {
                res,
                key,
                index,
                entry,
            }
        }
        Freshness::Stale { by_request } => Examined::Miss(Miss {
            key,
            index,
            outcome: if by_request {
                CacheOutcome::Request
            } else {
                CacheOutcome::Stale
            },
            stale: Some(entry),
        }),
    }
}

/// Refreshes a stale entry that was just served (`stale-while-revalidate`) on a task of its
/// own, once: the flight table says whether a refresh is already running. `HEAD` requests
/// never refresh (their answer has no body to store), and without a tokio runtime to spawn on
/// the next request revalidates in line.
#[allow(clippy::too_many_arguments)]
fn refresh_in_background<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    mut inner: S,
    mut parts: request::Parts,
    body: ReqB,
    base: String,
    key: String,
    index: Option<IndexInfo>,
    entry: Entry,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    if parts.method == Method::HEAD || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let Join::Lead(guard) = shared.flights.join(&key) else {
        return;
    };
    let head = head_of(&parts);
    take_client_validators(&mut parts.headers);
    let added = entry
        .as_response()
        .expect("stale entries are responses")
        .add_validators(&mut parts.headers);
    let fut = inner.call(Request::from_parts(parts, body));
    let shared = shared.clone();
    let key_for_log = key.clone();
    let fwd = Forwarded {
        base,
        key,
        index,
        guard: Some(guard),
        outcome: CacheOutcome::Stale,
        stale: Some((entry, added)),
    };
    // Bounded like a coalesced wait: a refresh that hangs would hold the flight (every later
    // miss waiting on it, no other refresh started) for as long as it hangs. Dropped, its guard
    // ends the flight. Its answer was counted when the stale one was served, so storing it
    // reports nothing (`QUIET`).
    let deadline = shared.cfg.coalesce_wait;
    tokio::spawn(QUIET.scope(true, async move {
        let refresh = async {
            if let Ok(res) = fut.await {
                // Nobody reads the refreshed answer; what mattered was storing it.
                drop(settle(&shared, &head, res, fwd).await);
            }
        };
        if tokio::time::timeout(deadline, refresh).await.is_err() {
            tracing::warn!(
                target: "bulwark::cache",
                cache = shared.name(),
                key = &*Redactor::key(&key_for_log),
                "stale-while-revalidate refresh timed out"
            );
        }
    }));
}

/// Joins the call in flight for `key`, if there is one, and waits for its entry: `Err` with
/// the answer built from it when it is fresh for this request. Otherwise `Ok` with the guard
/// to lead this key's flight (`None`: call without leading, as requests with credentials do,
/// or when the flight waited on stored nothing usable).
async fn coalesce<B>(
    shared: &Arc<Shared>,
    base: &str,
    key: &str,
    parts: &request::Parts,
    landed: u64,
) -> Result<Option<FlightGuard>, Response<ResponseBody<B>>> {
    if is_restricted(&shared.cfg, &parts.headers) {
        // Answers to requests with credentials are rarely shareable: never make others wait.
        return Ok(None);
    }
    match shared.flights.join(key) {
        Join::Lead(g) if shared.flights.landed() != landed => {
            // A flight landed since our lookup, perhaps the one for this key, between our miss
            // and our joining: look again before calling.
            if let Ok(Lookup::Found { entry, .. }) = shared.lookup(base, &parts.headers).await {
                if let Some(res) = serve_collapsed(shared, &entry, parts, key) {
                    g.finish(Some(entry));
                    return Err(res);
                }
            }
            Ok(Some(g))
        }
        Join::Lead(g) => Ok(Some(g)),
        Join::Wait(waiter) => {
            let entry = waiter.entry(shared.cfg.coalesce_wait).await;
            match entry.and_then(|e| serve_collapsed(shared, &e, parts, key)) {
                Some(res) => Err(res),
                // The leader's answer was not shareable (or too slow): call on our own.
                None => Ok(None),
            }
        }
    }
}

/// Calls the inner service and settles its answer. The client's own conditional fields decide
/// whether it gets a `304`; they are taken off the forwarded request, so that the answer can be
/// stored (see `take_client_validators`), and a stale entry's own validators go in their
/// place. An inner error gives way to the stale entry where `stale-if-error` allows.
async fn forward<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    mut inner: S,
    mut parts: request::Parts,
    body: ReqB,
    mut fwd: Forwarded,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes> + Send + 'static,
{
    let head = head_of(&parts);
    take_client_validators(&mut parts.headers);
    if let Some((entry, added)) = &mut fwd.stale {
        *added = entry
            .as_response()
            .expect("stale entries are responses")
            .add_validators(&mut parts.headers);
    }
    match inner.call(Request::from_parts(parts, body)).await {
        Ok(res) => Ok(settle(shared, &head, res, fwd).await),
        Err(e) => {
            if let Some((entry, _)) = &fwd.stale {
                let stored = entry.as_response().expect("stale entries are responses");
                let now = shared.clock.now();
                if stored.may_serve_on_error(now) {
                    tracing::warn!(
                        target: "bulwark::cache",
                        key = &*Redactor::key(&fwd.key),
                        "inner service failed; serving stale (stale-if-error)"
                    );
                    let status = CacheStatus::new(CacheOutcome::StaleIfError);
                    return Ok(serve(shared, stored, &head, status, now, &fwd.key));
                }
            }
            Err(e)
        }
    }
}
