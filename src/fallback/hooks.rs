//! [`OnFallback`]: called when a fallback answered.

use super::FallbackReason;

/// Called with the reason each time a fallback answered (not when it failed: then the original
/// result goes out, and only the log and the metric say so).
///
/// Implemented for `()` (nothing, the default) and for closures `Fn(FallbackReason)`.
pub trait OnFallback: Clone + Send + Sync + 'static {
    /// A fallback answered for `reason`.
    fn on_fallback(&self, reason: FallbackReason);
}

impl OnFallback for () {
    #[inline]
    fn on_fallback(&self, _: FallbackReason) {}
}

impl<F> OnFallback for F
where
    F: Fn(FallbackReason) + Clone + Send + Sync + 'static,
{
    #[inline]
    fn on_fallback(&self, reason: FallbackReason) {
        self(reason);
    }
}
