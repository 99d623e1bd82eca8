use std::{any::type_name, fmt, future::Future, sync::Arc};

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    BufferBody, Fallback, FallbackOutput, FallbackReason, FallbackSource, HeadOnly, LastGood,
    LastGoodKey, OnFallback, Or, ReasonFn, RequestFn, ServiceFallback, StaticResponse, Triggers,
    decide::Shared,
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
#[must_use]
pub struct FallbackLayer<F, C = ServerErrorsAsFailures, H = (), Q = HeadOnly> {
    /// Built once, here: a layer's `layer` only clones this `Arc`, which matters because some
    /// routers (axum's `Handler::layer`) apply the layer anew for every request.
    shared: Arc<Shared<F, C, H>>,
    body: Q,
}

impl<F, C, H, Q: Clone> Clone for FallbackLayer<F, C, H, Q> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            body: self.body.clone(),
        }
    }
}

impl<F: fmt::Debug, C, H, Q: fmt::Debug> fmt::Debug for FallbackLayer<F, C, H, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("source", &self.shared.source)
            .field("classifier", &type_name::<C>())
            .field("on_fallback", &type_name::<H>())
            .field("triggers", &self.shared.triggers)
            .field("capture_headers", &self.shared.capture_headers)
            .field("body", &self.body)
            .finish()
    }
}

impl<F: FallbackSource> FallbackLayer<F> {
    /// Falls back to any [`FallbackSource`], e.g. kinds chained with
    /// [`or`](FallbackSource::or).
    pub fn from_source(source: F) -> Self {
        Self {
            shared: Arc::new(Shared {
                source,
                classifier: ServerErrorsAsFailures::new(),
                on_fallback: (),
                triggers: Triggers::default(),
                capture_headers: false,
            }),
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

impl<F: Clone, C: Clone, H: Clone, Q> FallbackLayer<F, C, H, Q> {
    /// The configuration, to be changed by a builder method: taken over if this layer is its
    /// only owner (the usual chain of calls), else copied (a clone of the layer keeps its own).
    fn into_parts(self) -> (Shared<F, C, H>, Q) {
        let shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            source: shared.source.clone(),
            classifier: shared.classifier.clone(),
            on_fallback: shared.on_fallback.clone(),
            triggers: shared.triggers,
            capture_headers: shared.capture_headers,
        });
        (shared, self.body)
    }

    /// This layer with `change` made to its configuration.
    fn with(self, change: impl FnOnce(&mut Shared<F, C, H>)) -> Self {
        let (mut shared, body) = self.into_parts();
        change(&mut shared);
        Self {
            shared: Arc::new(shared),
            body,
        }
    }

    /// Decides what the status trigger calls a failure (default: [`ServerErrorsAsFailures`],
    /// i.e. 500, 502, 503 and 504). A good response must also be a success to this classifier
    /// to be kept by [`LastGood`].
    pub fn classifier<C2>(self, classifier: C2) -> FallbackLayer<F, C2, H, Q> {
        let (s, body) = self.into_parts();
        FallbackLayer {
            shared: Arc::new(Shared {
                source: s.source,
                classifier,
                on_fallback: s.on_fallback,
                triggers: s.triggers,
                capture_headers: s.capture_headers,
            }),
            body,
        }
    }

    /// Turns the trigger for `reason` on or off. See [`Triggers`] for the defaults.
    pub fn trigger(self, reason: FallbackReason, enabled: bool) -> Self {
        self.with(|s| s.triggers = s.triggers.with(reason, enabled))
    }

    /// Replaces the whole set of triggers.
    pub fn triggers(self, triggers: Triggers) -> Self {
        self.with(|s| s.triggers = triggers)
    }

    /// Whether closure and service fallbacks see the request headers (default: no).
    ///
    /// Off, the layer keeps only the method, URI and version of each request, which costs no
    /// allocation; on, it clones the header map of every request, in case a fallback is needed.
    pub fn capture_headers(self, capture: bool) -> Self {
        self.with(|s| s.capture_headers = capture)
    }

    /// Calls `hook` with the reason each time a fallback answered.
    pub fn on_fallback<H2: OnFallback>(self, hook: H2) -> FallbackLayer<F, C, H2, Q> {
        let (s, body) = self.into_parts();
        FallbackLayer {
            shared: Arc::new(Shared {
                source: s.source,
                classifier: s.classifier,
                on_fallback: hook,
                triggers: s.triggers,
                capture_headers: s.capture_headers,
            }),
            body,
        }
    }

    /// Falls back to `secondary` when the current fallback has no answer (its closure or
    /// service failed, or no last good response is stored for the request).
    pub fn or<G: FallbackSource>(self, secondary: G) -> FallbackLayer<Or<F, G>, C, H, Q>
    where
        F: FallbackSource,
    {
        let (s, body) = self.into_parts();
        FallbackLayer {
            shared: Arc::new(Shared {
                source: s.source.or(secondary),
                classifier: s.classifier,
                on_fallback: s.on_fallback,
                triggers: s.triggers,
                capture_headers: s.capture_headers,
            }),
            body,
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
            shared: self.shared,
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
            shared: self.shared,
            body: BufferBody {
                limit: self.body.limit,
                on_rejection: hook,
            },
        }
    }
}

impl<S, F, C, H, Q: Clone> Layer<S> for FallbackLayer<F, C, H, Q> {
    type Service = Fallback<S, F, C, H, Q>;

    /// Clones two handles: the configuration and the fallback's state (a `LastGood` store)
    /// were put together once, with the layer.
    #[inline]
    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            shared: Arc::clone(&self.shared),
            body: self.body.clone(),
        }
    }
}
