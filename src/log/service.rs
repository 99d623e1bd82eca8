use std::{
    fmt,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response, header::USER_AGENT};
use tokio::time::Instant;
use tower_service::Service;
use tracing::Level;

use super::{
    MakeRequestId, RequestId, X_REQUEST_ID,
    future::{RequestInfo, ResponseFuture},
};

/// The service made by [`RequestLogLayer`](super::RequestLogLayer).
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestLog<S, M> {
    pub(super) inner: S,
    pub(super) make_id: M,
    pub(super) slow: Duration,
}

crate::macros::define_inner_service_accessors!(RequestLog<S, M>);

impl<S, M, ReqB, ResB> Service<Request<ReqB>> for RequestLog<S, M>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: fmt::Display,
    M: MakeRequestId,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let start = Instant::now();
        let id = match req.headers().get(&X_REQUEST_ID).and_then(RequestId::parse) {
            Some(id) => id,
            None => {
                let id = self.make_id.make_request_id(&req);
                req.headers_mut()
                    .insert(X_REQUEST_ID.clone(), id.header_value().clone());
                id
            }
        };
        req.extensions_mut().insert(id.clone());

        let info = tracing::enabled!(target: "bulwark::log", Level::ERROR).then(|| {
            let span = tracing::info_span!(
                target: "bulwark::log",
                "request",
                http.request.method = %req.method(),
                url.path = req.uri().path(),
                request_id = id.as_str(),
            );
            RequestInfo {
                span,
                method: req.method().clone(),
                uri: req.uri().clone(),
                route: route(&req),
                client: crate::key::peer_ip(&req),
                user_agent: req.headers().get(USER_AGENT).cloned(),
            }
        });
        let future = match &info {
            Some(info) => info.span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        ResponseFuture::new(future, id, info, start, self.slow)
    }
}

#[cfg(feature = "axum")]
fn route<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|p| HeaderValue::from_str(p.as_str()).ok())
}

#[cfg(not(feature = "axum"))]
fn route<B>(_: &Request<B>) -> Option<HeaderValue> {
    None
}
