use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    future::ResponseFuture,
    invalidate::{InvalidationTarget, is_safe},
    pipeline::{BaseKey, cached, hit_now},
    shared::Shared,
};
use crate::body::ResponseBody;

/// The service made by [`CacheLayer`](super::CacheLayer).
#[must_use]
pub struct Cache<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
}

crate::macros::define_inner_service_accessors!(Cache<S>);

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Cache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let method = req.method().clone();
        if method == Method::GET || method == Method::HEAD {
            let (mut parts, body) = req.into_parts();
            let base = match hit_now(&self.shared, &mut parts) {
                Ok(res) => return ResponseFuture::ready(res),
                Err(BaseKey::Made(None)) => {
                    // The key hook declined: nothing to look up or store.
                    let future = self.inner.call(Request::from_parts(parts, body));
                    return ResponseFuture::bypass(future, self.shared.clone(), "key");
                }
                Err(base) => base,
            };
            // The instance that was polled ready serves this request; a fresh clone stays.
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::cached(Box::pin(cached(
                self.shared.clone(),
                inner,
                parts,
                body,
                base,
            )));
        }
        let keys = if is_safe(&method) {
            None
        } else {
            Some(InvalidationTarget::of(&self.shared, &req))
        };
        ResponseFuture::forward(self.inner.call(req), self.shared.clone(), keys)
    }
}
