use std::{any::type_name, fmt, future::Future, sync::Arc};

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    BufferBody, Fallback, FallbackOutput, FallbackReason, FallbackSource, HeadOnly, LastGood,
    LastGoodKey, OnFallback, Or, ReasonFn, RequestFn, ServiceFallback, StaticResponse, Triggers,
    service::Shared,
};
use crate::{
    BoxError, ConfigError, DefaultResponseForRejection, ResponseForRejection,
    classify::ServerErrorsAsFailures,
};

/// Answers with a fallback when the inner service fails. See the [module docs](super).
///
/// Type parameters: `F` the [kind of fallback](FallbackSource), `C` the classifier of the
/// status trigger, `H` the [`OnFallback`] hook, `Q` what the fallback gets of the request body
/// ([`HeadOnly`] or [`BufferBody`]).
///
/// Cheap to clone when its parts are; every clone, and every service it makes, shares the
/// fallback's state (the [`LastGood`] store).
#[derive(Clone)]
#[must_use]
pub struct FallbackLayer<F, C = ServerErrorsAsFailures, H = (), Q = HeadOnly> {
    source: F,
    classifier: C,
    on_fallback: H,
    triggers: Triggers,
    capture_headers: bool,
    body: Q,
}

impl<F: fmt::Debug, C, H, Q: fmt::Debug> fmt::Debug for FallbackLayer<F, C, H, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("source", &self.source)
            .field("classifier", &type_name::<C>())
            .field("on_fallback", &type_name::<H>())
            .field("triggers", &self.triggers)
            .field("capture_headers", &self.capture_headers)
            .field("body", &self.body)
            .finish()
    }
}

impl<F: FallbackSource> FallbackLayer<F> {
    /// Falls back to any [`FallbackSource`], e.g. kinds chained with
    /// [`or`](FallbackSource::or).
    pub fn from_source(source: F) -> Self {
        Self {
            source,
            classifier: ServerErrorsAsFailures::new(),
            on_fallback: (),
            triggers: Triggers::default(),
            capture_headers: false,
            body: HeadOnly,
        }
    }
}

impl<F, Fut> FallbackLayer<ReasonFn<F>>
where
    F: Fn(FallbackReason) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
    /// Falls back to an async closure that receives the reason: see [`ReasonFn`].
    ///
    /// ```
    /// use bulwark::fallback::FallbackLayer;
    /// use http::Response;
    ///
    /// let layer = FallbackLayer::new(|reason| async move {
    ///     Response::new(format!("degraded ({reason})"))
    /// });
    /// # let _ = layer;
    /// ```
    pub fn new(f: F) -> Self {
        FallbackLayer::from_source(ReasonFn::new(f))
    }
}

impl<F, Fut> FallbackLayer<RequestFn<F>>
where
    F: Fn(FallbackReason, Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
    /// Falls back to an async closure that receives the reason and the request head (and the
    /// body, with [`buffer_body`](Self::buffer_body)): see [`RequestFn`].
    pub fn from_fn(f: F) -> Self {
        FallbackLayer::from_source(RequestFn::new(f))
    }
}

impl<T> FallbackLayer<ServiceFallback<T>>
where
    T: Service<Request<Bytes>, Response = Response<Bytes>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
{
    /// Falls back to another service: see [`ServiceFallback`].
    pub fn service(svc: T) -> Self {
        FallbackLayer::from_source(ServiceFallback::new(svc))
    }
}

impl FallbackLayer<StaticResponse> {
    /// Falls back to a fixed response: see [`StaticResponse`].
    pub fn response<T: Into<Bytes>>(res: Response<T>) -> Self {
        FallbackLayer::from_source(StaticResponse::new(res))
    }
}

impl<X: LastGoodKey> FallbackLayer<LastGood<X>> {
    /// Falls back to the last good response for the request's key: see [`LastGood`]. Chain a
    /// secondary fallback for keys with nothing stored yet with [`or`](Self::or).
    pub fn last_good(store: LastGood<X>) -> Self {
        FallbackLayer::from_source(store)
    }
}

impl<F, C, H, Q> FallbackLayer<F, C, H, Q> {
    /// Decides what the status trigger calls a failure (default: [`ServerErrorsAsFailures`],
    /// i.e. 500, 502, 503 and 504). A good response must also be a success to this classifier
    /// to be kept by [`LastGood`].
    pub fn classifier<C2>(self, classifier: C2) -> FallbackLayer<F, C2, H, Q> {
        FallbackLayer {
            source: self.source,
            classifier,
            on_fallback: self.on_fallback,
            triggers: self.triggers,
            capture_headers: self.capture_headers,
            body: self.body,
        }
    }

    /// Turns the trigger for `reason` on or off. See [`Triggers`] for the defaults.
    pub fn trigger(mut self, reason: FallbackReason, enabled: bool) -> Self {
        self.triggers = self.triggers.with(reason, enabled);
        self
    }

    /// Replaces the whole set of triggers.
    pub fn triggers(mut self, triggers: Triggers) -> Self {
        self.triggers = triggers;
        self
    }

    /// Whether closure and service fallbacks see the request headers (default: no).
    ///
    /// Off, the layer keeps only the method, URI and version of each request, which costs no
    /// allocation; on, it clones the header map of every request, in case a fallback is needed.
    pub fn capture_headers(mut self, capture: bool) -> Self {
        self.capture_headers = capture;
        self
    }

    /// Calls `hook` with the reason each time a fallback answered.
    pub fn on_fallback<H2: OnFallback>(self, hook: H2) -> FallbackLayer<F, C, H2, Q> {
        FallbackLayer {
            source: self.source,
            classifier: self.classifier,
            on_fallback: hook,
            triggers: self.triggers,
            capture_headers: self.capture_headers,
            body: self.body,
        }
    }

    /// Falls back to `secondary` when the current fallback has no answer (its closure or
    /// service failed, or no last good response is stored for the request).
    pub fn or<G: FallbackSource>(self, secondary: G) -> FallbackLayer<Or<F, G>, C, H, Q>
    where
        F: FallbackSource,
    {
        FallbackLayer {
            source: self.source.or(secondary),
            classifier: self.classifier,
            on_fallback: self.on_fallback,
            triggers: self.triggers,
            capture_headers: self.capture_headers,
            body: self.body,
        }
    }

    /// Buffers each request body (up to `limit` bytes) before the inner service runs, so that
    /// a closure or service fallback gets a copy of it. See [`BufferBody`].
    ///
    /// # Errors
    ///
    /// If `limit` is 0.
    pub fn buffer_body(
        self,
        limit: usize,
    ) -> Result<FallbackLayer<F, C, H, BufferBody>, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::invalid("buffer_body", "limit must be > 0"));
        }
        Ok(FallbackLayer {
            source: self.source,
            classifier: self.classifier,
            on_fallback: self.on_fallback,
            triggers: self.triggers,
            capture_headers: self.capture_headers,
            body: BufferBody {
                limit,
                on_rejection: DefaultResponseForRejection,
            },
        })
    }
}

impl<F, C, H, R> FallbackLayer<F, C, H, BufferBody<R>> {
    /// Builds the 413 and 400 answers for bodies over the limit or broken with `hook` instead
    /// of the default problem+json.
    pub fn on_rejection<R2: ResponseForRejection>(
        self,
        hook: R2,
    ) -> FallbackLayer<F, C, H, BufferBody<R2>> {
        FallbackLayer {
            source: self.source,
            classifier: self.classifier,
            on_fallback: self.on_fallback,
            triggers: self.triggers,
            capture_headers: self.capture_headers,
            body: BufferBody {
                limit: self.body.limit,
                on_rejection: hook,
            },
        }
    }
}

impl<S, F, C, H, Q> Layer<S> for FallbackLayer<F, C, H, Q>
where
    F: Clone,
    C: Clone,
    H: Clone,
    Q: Clone,
{
    type Service = Fallback<S, F, C, H, Q>;

    fn layer(&self, inner: S) -> Self::Service {
        // Only configuration is put together here; the state (a `LastGood` store) was made with
        // the source, and the clone below shares it.
        Fallback {
            inner,
            shared: Arc::new(Shared {
                source: self.source.clone(),
                classifier: self.classifier.clone(),
                on_fallback: self.on_fallback.clone(),
                triggers: self.triggers,
                capture_headers: self.capture_headers,
            }),
            body: self.body.clone(),
        }
    }
}
