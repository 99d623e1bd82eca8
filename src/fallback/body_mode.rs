//! What the fallback gets of the request body: [`HeadOnly`] or [`BufferBody`].

use std::fmt;

use crate::DefaultResponseForRejection;

/// The default: the inner service gets the request body as it came, and a closure or service
/// fallback gets an empty body (the inner service consumed the original).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct HeadOnly;

/// Set by [`FallbackLayer::buffer_body`](super::FallbackLayer::buffer_body): each request body is
/// read into memory (up to a limit) before the inner service runs; the inner service gets a body
/// made from those bytes (its body type must implement `From<Bytes>`, as axum's `Body` and
/// `Full<Bytes>` do), and a closure or service fallback gets the same bytes.
///
/// A body over the limit is answered with 413 ([`Rejection::PayloadTooLarge`]), a body that
/// fails to read with 400 ([`Rejection::BodyReadFailed`]), built by the `R` hook
/// ([`ResponseForRejection`](crate::ResponseForRejection)); the inner service is not called.
/// These are rejections, not failures: no fallback answers them.
///
/// [`Rejection::PayloadTooLarge`]: crate::Rejection::PayloadTooLarge
/// [`Rejection::BodyReadFailed`]: crate::Rejection::BodyReadFailed
#[derive(Clone)]
pub struct BufferBody<R = DefaultResponseForRejection> {
    pub(crate) limit: usize,
    pub(crate) on_rejection: R,
}

impl<R> fmt::Debug for BufferBody<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferBody")
            .field("limit", &self.limit)
            .field("on_rejection", &std::any::type_name::<R>())
            .finish()
    }
}

impl<R> BufferBody<R> {
    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}
