use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    ContextExtractor, EvaluatedFlags, Flags, HeaderContext,
    layer::{Disabled, Gate, OrElse},
};
use crate::{Rejection, ResponseForRejection, body::ResponseBody};

/// The service made by [`FeatureFlagLayer`](super::FeatureFlagLayer).
#[must_use]
pub struct FeatureFlag<S, X = HeaderContext, O = Disabled> {
    pub(super) inner: S,
    pub(super) gate: Arc<Gate>,
    pub(super) extractor: X,
    pub(super) off: O,
}

crate::macros::define_inner_service_accessors!(FeatureFlag<S, X, O>);

impl<S: Clone, X: Clone, O: Clone> Clone for FeatureFlag<S, X, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
            extractor: self.extractor.clone(),
            off: self.off.clone(),
        }
    }
}

impl<S, X, O> fmt::Debug for FeatureFlag<S, X, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeatureFlag")
            .field("flag", &self.gate.name)
            .finish_non_exhaustive()
    }
}

impl<S, X, O> FeatureFlag<S, X, O> {
    /// The flags the gate reads (shared with the layer that made it).
    #[must_use]
    pub fn flags(&self) -> &Flags {
        &self.gate.flags
    }

    /// The gate's flag.
    #[must_use]
    pub fn flag(&self) -> &str {
        &self.gate.name
    }

    /// Evaluates the gate's flags for `req`, records them, and puts them in the request's
    /// [`EvaluatedFlags`] extension. Returns whether the gate's flag is on.
    fn decide<B>(&self, req: &mut Request<B>) -> bool
    where
        X: ContextExtractor<B>,
    {
        let gate = &*self.gate;
        let ctx = self.extractor.extract(req);
        let eval = evaluate(gate, &gate.name, &ctx);
        let on = eval.is_enabled();
        let extensions = req.extensions_mut();
        if let Some(evaluated) = extensions.get_mut::<EvaluatedFlags>() {
            for name in &*gate.also {
                evaluated.push(name.clone(), evaluate(gate, name, &ctx));
            }
            evaluated.push(gate.name.clone(), eval);
        } else {
            let mut also = Vec::with_capacity(gate.also.len());
            for name in &*gate.also {
                also.push((name.clone(), evaluate(gate, name, &ctx)));
            }
            let mut evaluated = EvaluatedFlags::new(ctx, gate.name.clone(), eval);
            for (name, eval) in also {
                evaluated.push(name, eval);
            }
            extensions.insert(evaluated);
        }
        on
    }
}

/// Evaluates `name`, with its tracing event and metric.
#[inline]
fn evaluate(gate: &Gate, name: &str, ctx: &super::EvaluationContext) -> super::Evaluation {
    let eval = gate.flags.evaluate_counted(name, ctx);
    tracing::debug!(
        target: "bulwark::flag",
        {
            feature_flag.key = name,
            feature_flag.provider.name = "bulwark",
            feature_flag.result.variant = eval.variant(),
            feature_flag.result.reason = eval.reason().otel_value(),
            error.r#type = eval.error_code().map(|c| c.otel_value()),
        },
        "feature flag evaluated"
    );
    eval
}

impl<S, X, R, ReqB, ResB> Service<Request<ReqB>> for FeatureFlag<S, X, Disabled<R>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    X: ContextExtractor<ReqB>,
    R: ResponseForRejection,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        if self.decide(&mut req) {
            ResponseFuture {
                state: State::Inner {
                    future: self.inner.call(req),
                },
            }
        } else {
            let rejection = Rejection::feature_disabled(self.gate.name.clone(), self.off.status);
            ResponseFuture {
                state: State::Rejected {
                    response: Some(rejection.into_response_with(&self.off.hook)),
                },
            }
        }
    }
}

pin_project! {
    /// Response future of [`FeatureFlag`] when an off flag answers `FeatureDisabled`.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(ResponseBody::new)))
            }
            StateProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<S, X, A, ReqB, ResB> Service<Request<ReqB>> for FeatureFlag<S, X, OrElse<A>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    A: Service<Request<ReqB>, Response = Response<ResB>, Error = S::Error> + Clone,
    X: ContextExtractor<ReqB>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = OrElseFuture<S::Future, A, Request<ReqB>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        if self.decide(&mut req) {
            OrElseFuture {
                state: OrElseState::Inner {
                    future: self.inner.call(req),
                },
            }
        } else {
            OrElseFuture {
                state: OrElseState::Ready {
                    service: self.off.service.clone(),
                    request: Some(req),
                },
            }
        }
    }
}

pin_project! {
    /// Response future of [`FeatureFlag`] with an alternative service
    /// ([`or_else`](super::FeatureFlagLayer::or_else)).
    pub struct OrElseFuture<F, A: Service<R>, R> {
        #[pin]
        state: OrElseState<F, A, R>,
    }
}

pin_project! {
    #[project = OrElseProj]
    enum OrElseState<F, A: Service<R>, R> {
        Inner { #[pin] future: F },
        Ready { service: A, request: Option<R> },
        Alternative { #[pin] future: A::Future },
    }
}

impl<F, A: Service<R>, R> fmt::Debug for OrElseFuture<F, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            OrElseState::Inner { .. } => "Inner",
            OrElseState::Ready { .. } => "Ready",
            OrElseState::Alternative { .. } => "Alternative",
        };
        f.debug_struct("OrElseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, A, R, T, E> Future for OrElseFuture<F, A, R>
where
    F: Future<Output = Result<T, E>>,
    A: Service<R, Response = T, Error = E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                OrElseProj::Inner { future } => return future.poll(cx),
                OrElseProj::Alternative { future } => return future.poll(cx),
                OrElseProj::Ready { service, request } => {
                    ready!(service.poll_ready(cx))?;
                    let request = request
                        .take()
                        .expect("OrElseFuture polled after completion");
                    let future = service.call(request);
                    state.set(OrElseState::Alternative { future });
                }
            }
        }
    }
}
