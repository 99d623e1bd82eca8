//! Settling a forwarded request: the inner answer becomes the client's. It is stored when it
//! may be (its body read up to the limit), refreshes a stale entry on `304`, and gives way to
//! the stale entry where `stale-if-error` allows.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, request};
use http_body::Body;

use super::{
    clock::Wall,
    coalesce::FlightGuard,
    conditional::not_modified,
    entry::Stored,
    respond::{answer, bad_gateway, serve},
    shared::{IndexInfo, Shared},
    status::{CacheOutcome, CacheStatus},
    storable::{Decision, decide},
    store::Entry,
};
use crate::body::{Limited, ResponseBody, read_limited};

/// What the request was doing when it called the inner service.
pub(super) struct Forwarded {
    pub(super) base: String,
    pub(super) key: String,
    pub(super) index: Option<IndexInfo>,
    pub(super) guard: Option<FlightGuard>,
    pub(super) outcome: CacheOutcome,
    /// The stale entry being revalidated, and whether the request carries its validators.
    pub(super) stale: Option<(Entry, bool)>,
}

/// The origin answered the stale entry's conditional request with a `304` whose `ETag` is not
/// the stored one's: a stored answer without an `ETag`, revalidated by `If-Modified-Since` on a
/// server that now sends one (a deploy, or servers behind a load balancer that differ), or an
/// origin that matches `If-None-Match` loosely. That `304` must not refresh the entry (RFC 9111,
/// section 4.3.4), and the client, whose own conditionals it does not satisfy, must not get it:
/// it asked for the whole answer, and the conditional fields were the cache's. The request's
/// body is gone, so the cache cannot ask again without them; the origin has said that nothing
/// changed since what the cache holds, so the client gets that, marked
/// `fwd=stale; fwd-status=304; detail=validator-mismatch`. The entry is dropped, so the next
/// request fetches the whole answer and stores it with the origin's current validator.
async fn not_modified_elsewhere<B>(
    shared: &Shared,
    head: &request::Parts,
    stored: &Stored,
    key: &str,
    now: Wall,
) -> Response<ResponseBody<B>> {
    if let Err(e) = shared.store.inner.remove(key).await {
        shared.store_failed(&e);
    }
    let mut status = CacheStatus::new(CacheOutcome::Stale);
    status.fwd_status = Some(304);
    status.detail = Some("validator-mismatch");
    serve(shared, stored, head, status, now, key)
}

/// Turns the inner answer into the client's: stores it when it may (buffering its body), serves
/// the stale entry on errors where allowed, refreshes it on `304`.
pub(super) async fn settle<B>(
    shared: &Arc<Shared>,
    head: &request::Parts,
    res: Response<B>,
    mut fwd: Forwarded,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let now = shared.clock.now();
    let (parts, body) = res.into_parts();
    let fwd_status = parts.status.as_u16();
    if let Some((entry, added)) = &fwd.stale {
        let stored = entry.as_response().expect("stale entries are responses");
        if parts.status == StatusCode::NOT_MODIFIED && *added && stored.matches_not_modified(&parts)
        {
            let refreshed = stored.refreshed_head(&parts);
            let mut status = CacheStatus::new(CacheOutcome::Stale);
            status.fwd_status = Some(304);
            return match decide(&shared.cfg, head, &refreshed, now.system()) {
                Ok(decision) => {
                    let new = decision.into_stored(&refreshed, stored.response.body.clone());
                    let (entry, ok) = shared.put(&fwd.base, fwd.index.as_ref(), new).await;
                    status.stored = ok;
                    let res = serve(
                        shared,
                        entry.as_response().expect("response"),
                        head,
                        status,
                        now,
                        &fwd.key,
                    );
                    if let Some(g) = fwd.guard.take() {
                        g.finish(ok.then_some(entry));
                    }
                    res
                }
                Err(why) => {
                    status.detail = Some(why.as_str());
                    let served = stored.with_headers(refreshed.headers.clone());
                    serve(shared, &served, head, status, now, &fwd.key)
                }
            };
        }
        // Not the stored representation: the client's own conditionals are checked against the
        // one the `304` names (as if it were a full answer with those fields).
        if parts.status == StatusCode::NOT_MODIFIED
            && *added
            && !not_modified(StatusCode::OK, &parts.headers, head)
        {
            return not_modified_elsewhere(shared, head, stored, &fwd.key, now).await;
        }
        if parts.status.is_server_error() && stored.may_serve_on_error(now) {
            let mut status = CacheStatus::new(CacheOutcome::StaleIfError);
            status.fwd_status = Some(fwd_status);
            return serve(shared, stored, head, status, now, &fwd.key);
        }
    }
    let mut status = CacheStatus::new(fwd.outcome);
    status.fwd_status = Some(fwd_status);
    let decision: Decision = match decide(&shared.cfg, head, &parts, now.system()) {
        Ok(d) => d,
        Err(why) => {
            status.detail = Some(why.as_str());
            return answer(
                shared,
                head,
                parts,
                ResponseBody::new(body),
                status,
                &fwd.key,
            );
        }
    };
    match read_limited(body, shared.cfg.max_body).await {
        Limited::Whole(bytes) => {
            let stored = decision.into_stored(&parts, bytes.clone());
            let (entry, ok) = shared.put(&fwd.base, fwd.index.as_ref(), stored).await;
            status.stored = ok;
            if let Some(g) = fwd.guard.take() {
                g.finish(ok.then_some(entry));
            }
            answer(
                shared,
                head,
                parts,
                ResponseBody::full(bytes),
                status,
                &fwd.key,
            )
        }
        Limited::TooLarge(prefix, rest) => {
            status.detail = Some("too-large");
            answer(
                shared,
                head,
                parts,
                ResponseBody::prefixed(prefix, rest),
                status,
                &fwd.key,
            )
        }
        // A body that broke, or did not keep its announced length, is not the answer: never
        // stored, and answered as the origin's failure.
        Limited::Failed(..) | Limited::WrongLength(..) => {
            if let Some((entry, _)) = &fwd.stale {
                let stored = entry.as_response().expect("response");
                if stored.may_serve_on_error(now) {
                    let mut status = CacheStatus::new(CacheOutcome::StaleIfError);
                    status.fwd_status = Some(fwd_status);
                    return serve(shared, stored, head, status, now, &fwd.key);
                }
            }
            bad_gateway(shared, fwd.outcome, &fwd.key)
        }
    }
}
