//! What happens once the inner service has answered: pass the answer through, keep a good one
//! (read into memory, then remembered by the source), or fall back. One decision shared by the
//! service's two request paths and its response future.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::Body;

use super::{
    BULWARK_FALLBACK, FallbackReason, FallbackSource, OnFallback, Triggers, last_good::storable,
};
use crate::{
    body::{Collect, ResponseBody},
    classify::{Classify, Outcome},
};

/// Everything but the inner service, shared by the clones of one service and its futures.
pub(crate) struct Shared<F, C, H> {
    pub(crate) source: F,
    pub(crate) classifier: C,
    pub(crate) on_fallback: H,
    pub(crate) triggers: Triggers,
    pub(crate) capture_headers: bool,
}

/// The layer's answer, boxed: taken only when a fallback runs or a response is kept.
pub(crate) type BoxAnswer<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

/// What to do once the inner service has answered.
pub(crate) enum Next<B, E, M> {
    /// Done: the result, passed through.
    Ready(Result<Response<ResponseBody<B>>, E>),
    /// A fallback runs.
    Later(BoxAnswer<B, E>),
    /// A good response to read into memory and keep, then pass on from the buffer. Read by
    /// the caller's own future (no allocation for the steady state of a busy route).
    Keep(Keeping<B, M>),
}

/// A good response being read to be kept (see [`Next::Keep`]).
pub(crate) struct Keeping<B, M> {
    pub(crate) head: http::response::Parts,
    pub(crate) body: B,
    pub(crate) collect: Collect,
    pub(crate) memo: M,
    /// The buffered request body, for a fallback if the response body fails.
    pub(crate) request_body: Bytes,
}

/// Decides, after the inner service answered, between passing through, keeping a good
/// response, and falling back.
#[inline]
pub(crate) fn after_inner<F, C, H, B, E>(
    shared: &Arc<Shared<F, C, H>>,
    memo: F::Memo,
    result: Result<Response<B>, E>,
    body: Bytes,
) -> Next<B, E, F::Memo>
where
    F: FallbackSource,
    C: Classify<Response<B>, E>,
    H: OnFallback,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: fmt::Display,
    E: fmt::Display + Send + 'static,
{
    let reason = match &result {
        Ok(res) => shared.triggers.for_response(&shared.classifier, res),
        Err(err) => shared.triggers.for_error(err),
    };
    if let Some(reason) = reason {
        let original = result.map(|res| res.map(ResponseBody::new));
        return Next::Later(Box::pin(run_fallback(
            Arc::clone(shared),
            memo,
            reason,
            original,
            body,
        )));
    }
    let res = match result {
        Ok(res) => res,
        Err(err) => return Next::Ready(Err(err)),
    };
    let keep = match shared.source.store_limit(&memo) {
        Some(limit)
            if storable(&res, limit)
                && shared.classifier.classify(Ok(&res)) == Outcome::Success =>
        {
            // `storable` checked the size hint against the limit.
            Collect::new(res.body(), limit).ok()
        }
        _ => None,
    };
    match keep {
        Some(collect) => {
            let (head, response_body) = res.into_parts();
            Next::Keep(Keeping {
                head,
                body: response_body,
                collect,
                memo,
                request_body: body,
            })
        }
        None => Next::Ready(Ok(res.map(ResponseBody::new))),
    }
}

/// The end of keeping a good response: it is kept and passed on from the buffer; or its body
/// broke (or was longer than its own size hint) before anything was sent, and as its bytes are
/// gone the honest original is a 502, which the fallback may replace.
#[inline]
pub(crate) fn kept<F, C, H, B, E>(
    shared: &Arc<Shared<F, C, H>>,
    memo: F::Memo,
    head: http::response::Parts,
    buffered: Result<Bytes, String>,
    request_body: Bytes,
) -> Next<B, E, std::convert::Infallible>
where
    F: FallbackSource,
    C: Send + Sync + 'static,
    H: OnFallback,
    B: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let err = match buffered {
        Ok(bytes) => {
            shared.source.remember(memo, &head, &bytes);
            return Next::Ready(Ok(Response::from_parts(head, ResponseBody::full(bytes))));
        }
        Err(err) => err,
    };
    tracing::error!(
        target: "bulwark::fallback",
        status = head.status.as_u16(),
        error = %err,
        "the inner response body failed while being buffered",
    );
    let bad_gateway = crate::rejection::problem_response(
        StatusCode::BAD_GATEWAY,
        crate::rejection::UPSTREAM_BROKE_OFF,
    );
    let reason = FallbackReason::Error;
    if shared.triggers.contains(reason) {
        Next::Later(Box::pin(run_fallback(
            Arc::clone(shared),
            memo,
            reason,
            Ok(bad_gateway),
            request_body,
        )))
    } else {
        Next::Ready(Ok(bad_gateway))
    }
}

/// Runs the fallback; on success marks and returns its answer, on failure logs both and
/// returns the original result.
async fn run_fallback<F, C, H, B, E>(
    shared: Arc<Shared<F, C, H>>,
    memo: F::Memo,
    reason: FallbackReason,
    original: Result<Response<ResponseBody<B>>, E>,
    body: Bytes,
) -> Result<Response<ResponseBody<B>>, E>
where
    F: FallbackSource,
    H: OnFallback,
    B: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let answer = shared.source.answer(reason, memo, body).await;
    let original_status = original.as_ref().ok().map(|res| res.status().as_u16());
    let original_error = original.as_ref().err().map(tracing::field::display);
    match answer {
        Ok(mut res) => {
            tracing::warn!(
                target: "bulwark::fallback",
                reason = reason.as_str(),
                original.status = original_status,
                original.error = original_error,
                status = res.status().as_u16(),
                "fallback answered",
            );
            super::metrics::fallback(reason, true);
            res.headers_mut()
                .insert(BULWARK_FALLBACK.clone(), reason.header_value());
            res.extensions_mut().insert(reason);
            shared.on_fallback.on_fallback(reason);
            Ok(res.map(ResponseBody::full))
        }
        Err(err) => {
            tracing::error!(
                target: "bulwark::fallback",
                reason = reason.as_str(),
                original.status = original_status,
                original.error = original_error,
                fallback.error = %err,
                "fallback failed; returning the original result",
            );
            super::metrics::fallback(reason, false);
            original
        }
    }
}
