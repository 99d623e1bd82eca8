//! [`ResponseForRejection`]: replace the answer a layer gives when it rejects a request.
//!
//! Each layer that can reject takes an `on_rejection`-style hook of this trait. Closures work:
//!
//! ```
//! use bulwark::{Rejection, ResponseForRejection};
//! use bytes::Bytes;
//! use http::Response;
//!
//! // Plain text instead of problem+json, same status.
//! let hook = |r: &Rejection| {
//!     let mut res = Response::new(Bytes::from_static(b"slow down"));
//!     *res.status_mut() = r.status();
//!     res
//! };
//! let res = hook.response_for(&Rejection::IdempotencyMismatch);
//! assert_eq!(res.status(), 422);
//! ```
//!
//! Whatever the hook returns, the layer then adds the headers the rejection's protocol requires
//! (`Retry-After`, `RateLimit-Policy`, `RateLimit`) if the hook left them out, and inserts the
//! [`Rejection`] extension, so outer layers always see why the request was rejected.

use bytes::Bytes;
use http::Response;

use crate::Rejection;

/// Builds the response for a [`Rejection`].
///
/// Implemented for [`DefaultResponseForRejection`] (RFC 9457 problem+json) and for closures
/// `Fn(&Rejection) -> Response<Bytes>`.
pub trait ResponseForRejection: Clone + Send + Sync + 'static {
    /// The response to send for `rejection`.
    fn response_for(&self, rejection: &Rejection) -> Response<Bytes>;
}

/// The default answer: status, headers and `application/problem+json` body described in
/// [`Rejection`]'s docs.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DefaultResponseForRejection;

impl ResponseForRejection for DefaultResponseForRejection {
    #[inline]
    fn response_for(&self, rejection: &Rejection) -> Response<Bytes> {
        rejection.default_response()
    }
}

impl<F> ResponseForRejection for F
where
    F: Fn(&Rejection) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    #[inline]
    fn response_for(&self, rejection: &Rejection) -> Response<Bytes> {
        self(rejection)
    }
}
