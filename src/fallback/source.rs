//! The kinds of fallback: closures, a service, a fixed response, and [`Or`] to chain them.
//! The last good response lives in [`last_good`](super::last_good).

use std::{
    any::type_name,
    fmt,
    future::{Future, poll_fn},
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version, request};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::FallbackReason;
use crate::{BoxError, Rejection, stored::StoredResponse};

pub(crate) mod sealed {
    use super::*;

    /// A fallback answer in the making. The fallback path is rare, so it is boxed.
    #[allow(unreachable_pub)]
    pub type Answer = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

    /// What the layer asks of a fallback kind. Sealed: the kinds are built with this module's
    /// constructors, so the layer's internals can change without breaking anyone.
    #[allow(unreachable_pub)]
    pub trait Source {
        /// What the kind keeps from each request until the inner service has answered.
        type Memo: Send + 'static;

        /// Called in `call` with the request head, before the inner service takes the request.
        fn memo(&self, head: &request::Parts, capture_headers: bool) -> Self::Memo;

        /// The body limit under which a good response should be offered to `remember`, if the
        /// kind keeps responses for this request.
        fn store_limit(&self, _memo: &Self::Memo) -> Option<usize> {
            None
        }

        /// A good response (head and whole body) to keep.
        fn remember(&self, _memo: Self::Memo, _head: &http::response::Parts, _body: &Bytes) {}

        /// The answer for `reason`; `body` is the buffered request body (empty unless the layer
        /// buffers bodies).
        fn answer(&self, reason: FallbackReason, memo: Self::Memo, body: Bytes) -> Answer;
    }
}

use sealed::{Answer, Source};

/// A kind of fallback: what answers when a trigger fires.
///
/// Built with [`ReasonFn::new`], [`RequestFn::new`], [`ServiceFallback::new`],
/// [`StaticResponse::new`] or [`LastGood::new`](super::LastGood::new), or more directly with the
/// matching [`FallbackLayer`](super::FallbackLayer) constructors. The trait is sealed; chain
/// kinds with [`or`](Self::or).
pub trait FallbackSource: Source + Clone + Send + Sync + 'static {
    /// This kind, and `secondary` when this one has no answer (its closure or service failed,
    /// or no last good response is stored yet).
    ///
    /// ```
    /// use bulwark::fallback::{FallbackSource, LastGood, StaticResponse};
    /// use http::Response;
    ///
    /// let source = LastGood::new(1_000)
    ///     .unwrap()
    ///     .or(StaticResponse::new(Response::new(r#"["bestseller"]"#)));
    /// # let _ = source;
    /// ```
    fn or<G: FallbackSource>(self, secondary: G) -> Or<Self, G>
    where
        Self: Sized,
    {
        Or {
            first: self,
            second: secondary,
        }
    }
}

/// What a fallback closure may return: a response whose body converts into [`Bytes`], or a
/// `Result` of one. An `Err` means the fallback failed: the original result is returned.
pub trait FallbackOutput: Send + 'static {
    /// The answer, or why there is none.
    fn into_answer(self) -> Result<Response<Bytes>, BoxError>;
}

impl<T> FallbackOutput for Response<T>
where
    T: Into<Bytes> + Send + 'static,
{
    fn into_answer(self) -> Result<Response<Bytes>, BoxError> {
        Ok(self.map(Into::into))
    }
}

impl<T, E> FallbackOutput for Result<Response<T>, E>
where
    T: Into<Bytes> + Send + 'static,
    E: Into<BoxError> + Send + 'static,
{
    fn into_answer(self) -> Result<Response<Bytes>, BoxError> {
        self.map(|res| res.map(Into::into)).map_err(Into::into)
    }
}

/// Why a fallback had no answer; only ever logged.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    Panicked(String),
    FailedStatus(StatusCode),
    Rejected(&'static str),
    NothingStored,
    Both(BoxError, BoxError),
}

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(msg) => write!(f, "the fallback panicked: {msg}"),
            Self::FailedStatus(s) => write!(f, "the fallback service answered {s}"),
            Self::Rejected(kind) => write!(f, "the fallback service was rejected ({kind})"),
            Self::NothingStored => f.write_str("no last good response is stored for this request"),
            Self::Both(a, b) => write!(f, "{a}; then {b}"),
        }
    }
}

impl std::error::Error for NoAnswer {}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

pin_project! {
    /// Turns a panic while polling into an error.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T> Future for CatchUnwind<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(NoAnswer::Panicked(panic_message(&*payload)).into())),
        }
    }
}

/// Runs user code that makes an answer, turning panics (while making it or while polling it)
/// into errors, so a broken fallback never takes the request down with it.
fn guarded<Fut>(make: impl FnOnce() -> Fut) -> Answer
where
    Fut: Future<Output = Result<Response<Bytes>, BoxError>> + Send + 'static,
{
    match catch_unwind(AssertUnwindSafe(make)) {
        Ok(fut) => Box::pin(CatchUnwind { inner: fut }),
        Err(payload) => {
            let err: BoxError = NoAnswer::Panicked(panic_message(&*payload)).into();
            Box::pin(std::future::ready(Err(err)))
        }
    }
}

/// The request a fallback closure or service receives: the original method, URI and version,
/// the headers if the layer captures them, the body if the layer buffers it, and the reason as
/// an extension.
fn fallback_request(reason: FallbackReason, head: Request<()>, body: Bytes) -> Request<Bytes> {
    let mut req = head.map(|()| body);
    req.extensions_mut().insert(reason);
    req
}

/// The part of the request head a closure or service fallback sees.
fn capture_head(head: &request::Parts, capture_headers: bool) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    if capture_headers {
        *req.headers_mut() = head.headers.clone();
    }
    req
}

// ---------------------------------------------------------------------------------------------

/// A fallback closure that receives the [`FallbackReason`] only: `Fn(FallbackReason) -> Fut`
/// where `Fut` resolves to a [`FallbackOutput`] (a `Response<T>` with `T: Into<Bytes>`, or a
/// `Result` of one).
///
/// Made by [`FallbackLayer::new`](super::FallbackLayer::new). It needs nothing from the request,
/// so the layer keeps nothing of it.
#[derive(Clone)]
pub struct ReasonFn<F> {
    f: F,
}

impl<F, Fut> ReasonFn<F>
where
    F: Fn(FallbackReason) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
    /// Wraps the closure.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for ReasonFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReasonFn").field(&type_name::<F>()).finish()
    }
}

impl<F, Fut> Source for ReasonFn<F>
where
    F: Fn(FallbackReason) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
    type Memo = ();

    fn memo(&self, _: &request::Parts, _: bool) {}

    fn answer(&self, reason: FallbackReason, (): (), _: Bytes) -> Answer {
        guarded(|| {
            let fut = (self.f)(reason);
            async move { fut.await.into_answer() }
        })
    }
}

impl<F, Fut> FallbackSource for ReasonFn<F>
where
    F: Fn(FallbackReason) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
}

/// A fallback closure that receives the [`FallbackReason`] and the request:
/// `Fn(FallbackReason, Request<Bytes>) -> Fut` where `Fut` resolves to a [`FallbackOutput`].
///
/// The request has the original method, URI and version; its headers only if the layer
/// [captures headers](super::FallbackLayer::capture_headers); its body only if the layer
/// [buffers bodies](super::FallbackLayer::buffer_body) (otherwise it is empty: the inner service
/// consumed it). The reason is also in its extensions.
///
/// Made by [`FallbackLayer::from_fn`](super::FallbackLayer::from_fn).
#[derive(Clone)]
pub struct RequestFn<F> {
    f: F,
}

impl<F, Fut> RequestFn<F>
where
    F: Fn(FallbackReason, Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
    /// Wraps the closure.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for RequestFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestFn").field(&type_name::<F>()).finish()
    }
}

impl<F, Fut> Source for RequestFn<F>
where
    F: Fn(FallbackReason, Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
    type Memo = Request<()>;

    fn memo(&self, head: &request::Parts, capture_headers: bool) -> Request<()> {
        capture_head(head, capture_headers)
    }

    fn answer(&self, reason: FallbackReason, head: Request<()>, body: Bytes) -> Answer {
        guarded(|| {
            let fut = (self.f)(reason, fallback_request(reason, head, body));
            async move { fut.await.into_answer() }
        })
    }
}

impl<F, Fut> FallbackSource for RequestFn<F>
where
    F: Fn(FallbackReason, Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: FallbackOutput,
{
}

/// Another service as the fallback: `Service<Request<Bytes>, Response = Response<Bytes>>`.
///
/// It receives the same request as a [`RequestFn`] closure, with the [`FallbackReason`] in the
/// request extensions. Each fallback call clones the service, polls the clone ready and calls
/// it. The fallback fails, and the original result is returned, when the service is not ready,
/// returns `Err`, answers with a 5xx status, or answers with a bulwark [`Rejection`] (e.g. its
/// own circuit breaker is open).
///
/// Made by [`FallbackLayer::service`](super::FallbackLayer::service).
#[derive(Clone)]
pub struct ServiceFallback<T> {
    svc: T,
}

impl<T> ServiceFallback<T>
where
    T: Service<Request<Bytes>, Response = Response<Bytes>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
{
    /// Wraps the service.
    pub fn new(svc: T) -> Self {
        Self { svc }
    }
}

impl<T> fmt::Debug for ServiceFallback<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServiceFallback")
            .field(&type_name::<T>())
            .finish()
    }
}

impl<T> Source for ServiceFallback<T>
where
    T: Service<Request<Bytes>, Response = Response<Bytes>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
{
    type Memo = Request<()>;

    fn memo(&self, head: &request::Parts, capture_headers: bool) -> Request<()> {
        capture_head(head, capture_headers)
    }

    fn answer(&self, reason: FallbackReason, head: Request<()>, body: Bytes) -> Answer {
        let mut svc = self.svc.clone();
        let req = fallback_request(reason, head, body);
        guarded(move || async move {
            // The clone starts not ready: poll it ready before calling it.
            poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)?;
            let res = svc.call(req).await.map_err(Into::into)?;
            if let Some(rejection) = res.extensions().get::<Rejection>() {
                return Err(NoAnswer::Rejected(rejection.kind()).into());
            }
            if res.status().is_server_error() {
                return Err(NoAnswer::FailedStatus(res.status()).into());
            }
            Ok(res)
        })
    }
}

impl<T> FallbackSource for ServiceFallback<T>
where
    T: Service<Request<Bytes>, Response = Response<Bytes>> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Error: Into<BoxError>,
{
}

// ---------------------------------------------------------------------------------------------

/// A fixed response as the fallback, e.g. a static bestseller list. Cheap to clone.
///
/// Its status, version, headers and body are kept; its extensions are not (they cannot be
/// cloned in general). It never fails.
///
/// Made by [`FallbackLayer::response`](super::FallbackLayer::response).
///
/// ```
/// use bulwark::fallback::StaticResponse;
/// use http::{Response, header};
///
/// let bestsellers = StaticResponse::new(
///     Response::builder()
///         .header(header::CONTENT_TYPE, "application/json")
///         .body(r#"["the classic", "the sequel"]"#)
///         .unwrap(),
/// );
/// # let _ = bestsellers;
/// ```
#[derive(Clone)]
pub struct StaticResponse {
    res: Arc<StoredResponse>,
    version: Version,
}

impl StaticResponse {
    /// Answers with `res` whenever a trigger fires.
    pub fn new<T: Into<Bytes>>(res: Response<T>) -> Self {
        let (parts, body) = res.into_parts();
        Self {
            // As given: the hop-by-hop rule is for answers kept from a connection.
            res: Arc::new(StoredResponse {
                status: parts.status,
                headers: parts.headers,
                body: body.into(),
            }),
            version: parts.version,
        }
    }
}

impl fmt::Debug for StaticResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticResponse")
            .field("status", &self.res.status)
            .field("body_len", &self.res.body.len())
            .finish()
    }
}

impl Source for StaticResponse {
    type Memo = ();

    fn memo(&self, _: &request::Parts, _: bool) {}

    fn answer(&self, _: FallbackReason, (): (), _: Bytes) -> Answer {
        Box::pin(std::future::ready(Ok(self.res.to_response(self.version))))
    }
}

impl FallbackSource for StaticResponse {}

/// Two kinds of fallback in order: the second answers when the first has none. Made with
/// [`FallbackSource::or`] or [`FallbackLayer::or`](super::FallbackLayer::or).
///
/// Both keep what they need from each request, and both are offered good responses to keep
/// (so `last_good.or(other_last_good)` keeps them in both).
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: FallbackSource, B: FallbackSource> Source for Or<A, B> {
    type Memo = (A::Memo, B::Memo);

    fn memo(&self, head: &request::Parts, capture_headers: bool) -> Self::Memo {
        (
            self.first.memo(head, capture_headers),
            self.second.memo(head, capture_headers),
        )
    }

    fn store_limit(&self, memo: &Self::Memo) -> Option<usize> {
        match (
            self.first.store_limit(&memo.0),
            self.second.store_limit(&memo.1),
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn remember(&self, memo: Self::Memo, head: &http::response::Parts, body: &Bytes) {
        self.first.remember(memo.0, head, body);
        self.second.remember(memo.1, head, body);
    }

    fn answer(&self, reason: FallbackReason, memo: Self::Memo, body: Bytes) -> Answer {
        let first = self.first.answer(reason, memo.0, body.clone());
        let second = self.second.clone();
        let memo = memo.1;
        Box::pin(async move {
            match first.await {
                Ok(res) => Ok(res),
                Err(first_err) => {
                    tracing::debug!(
                        target: "bulwark::fallback",
                        reason = reason.as_str(),
                        error = %first_err,
                        "first fallback had no answer; trying the next",
                    );
                    second
                        .answer(reason, memo, body)
                        .await
                        .map_err(|second_err| NoAnswer::Both(first_err, second_err).into())
                }
            }
        })
    }
}

impl<A: FallbackSource, B: FallbackSource> FallbackSource for Or<A, B> {}
