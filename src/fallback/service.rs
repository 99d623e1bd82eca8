use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::{
    BULWARK_FALLBACK, BufferBody, FallbackReason, FallbackSource, HeadOnly, OnFallback, Triggers,
    future::ResponseFuture, last_good::storable,
};
use crate::{
    ResponseForRejection,
    body::{Collect, ResponseBody, to_bytes_limited},
    classify::{Classify, Outcome, ServerErrorsAsFailures},
};

/// The service made by [`FallbackLayer`](super::FallbackLayer): calls the inner service and answers with the
/// fallback when a trigger fires.
///
/// Cheap to clone when the inner service is: the configuration sits behind an `Arc`.
#[must_use]
pub struct Fallback<S, F, C = ServerErrorsAsFailures, H = (), Q = HeadOnly> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared<F, C, H>>,
    pub(super) body: Q,
}

/// Everything but the inner service, shared by the clones of one service and its futures.
pub(crate) struct Shared<F, C, H> {
    pub(crate) source: F,
    pub(crate) classifier: C,
    pub(crate) on_fallback: H,
    pub(crate) triggers: Triggers,
    pub(crate) capture_headers: bool,
}

crate::macros::define_inner_service_accessors!(Fallback<S, F, C, H, Q>);

impl<S: Clone, F, C, H, Q: Clone> Clone for Fallback<S, F, C, H, Q> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            body: self.body.clone(),
        }
    }
}

impl<S: fmt::Debug, F: fmt::Debug, C, H, Q: fmt::Debug> fmt::Debug for Fallback<S, F, C, H, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("source", &self.shared.source)
            .field("triggers", &self.shared.triggers)
            .field("capture_headers", &self.shared.capture_headers)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl<S, F, C, H, ReqB, ResB> Service<Request<ReqB>> for Fallback<S, F, C, H, HeadOnly>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: fmt::Display + Send + 'static,
    F: FallbackSource,
    C: Classify<Response<ResB>, S::Error>,
    H: OnFallback,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: fmt::Display,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error, F, C, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (head, body) = req.into_parts();
        let memo = self.shared.source.memo(&head, self.shared.capture_headers);
        let future = self.inner.call(Request::from_parts(head, body));
        ResponseFuture::inner(future, Arc::clone(&self.shared), memo)
    }
}

impl<S, F, C, H, R, ReqB, ResB> Service<Request<ReqB>> for Fallback<S, F, C, H, BufferBody<R>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    F: FallbackSource,
    C: Classify<Response<ResB>, S::Error>,
    H: OnFallback,
    R: ResponseForRejection,
    ReqB: Body + From<Bytes> + Send + 'static,
    ReqB::Error: fmt::Display + Send,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: fmt::Display,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error, F, C, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The body is read before the inner service is called, so the instance that was polled
        // ready moves into the future and a fresh clone stays behind (to be polled ready).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let BufferBody {
            limit,
            on_rejection,
        } = self.body.clone();
        let (head, body) = req.into_parts();
        let memo = shared.source.memo(&head, shared.capture_headers);
        ResponseFuture::boxed(Box::pin(async move {
            let bytes = match to_bytes_limited(body, limit).await {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::debug!(
                        target: "bulwark::fallback",
                        error = %err,
                        "request body not buffered; the inner service is not called",
                    );
                    return Ok(err.rejection().into_response_with(&on_rejection));
                }
            };
            let result = inner
                .call(Request::from_parts(head, ReqB::from(bytes.clone())))
                .await;
            match after_inner(&shared, memo, result, bytes) {
                Next::Ready(out) => out,
                Next::Later(fut) => fut.await,
                Next::Keep(keeping) => {
                    let Keeping {
                        head,
                        body,
                        mut collect,
                        memo,
                        request_body,
                    } = keeping;
                    // Scoped so that no body error (which need not be `Send`) is held across
                    // the await below.
                    let buffered = {
                        let mut body = std::pin::pin!(body);
                        let result =
                            std::future::poll_fn(|cx| collect.poll(body.as_mut(), cx)).await;
                        result.map_err(|err| err.to_string())
                    };
                    match kept(&shared, memo, head, buffered, request_body) {
                        Next::Ready(out) => out,
                        Next::Later(fut) => fut.await,
                    }
                }
            }
        }))
    }
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
