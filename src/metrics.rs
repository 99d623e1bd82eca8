//! Metric emission, through the `metrics` facade when the `metrics` feature is on, and nothing
//! at all when it is off. Layers call these functions; names and labels live here only.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `bulwark_rejections_total` | counter | `rejection` ([`Rejection::kind`](crate::Rejection::kind)) |
//! | `bulwark_store_errors_total` | counter | `store`, `operation` |
//! | `bulwark_fallbacks_total` | counter | `reason` ([`FallbackReason`](crate::fallback::FallbackReason)), `outcome` (`answered`, `failed`) |

/// One rejection answered.
#[inline]
pub(crate) fn rejection(kind: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("bulwark_rejections_total", "rejection" => kind).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
}

/// One store operation failed.
#[inline]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn store_error(store: &'static str, operation: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("bulwark_store_errors_total", "store" => store, "operation" => operation)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (store, operation);
}

/// One fallback ran: `outcome` is `answered`, or `failed` when the original result went out.
#[inline]
pub(crate) fn fallback(reason: &'static str, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("bulwark_fallbacks_total", "reason" => reason, "outcome" => outcome)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (reason, outcome);
}
