use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    BufferBody, FallbackSource, HeadOnly, OnFallback,
    decide::{Keeping, Next, Shared, after_inner, kept},
    future::ResponseFuture,
};
use crate::{
    ResponseForRejection,
    body::{ResponseBody, to_bytes_limited},
    classify::{Classify, ServerErrorsAsFailures},
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
