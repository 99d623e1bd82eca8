//! The fallback's counter, `bulwark_fallbacks_total` (see the [catalogue](crate::metrics)).

use super::FallbackReason;
#[cfg(feature = "metrics")]
use crate::metrics::Vocabulary;

/// One fallback ran: `outcome` is `answered`, or `failed` when the original result went out.
#[inline]
pub(crate) fn fallback(reason: FallbackReason, answered: bool) {
    #[cfg(feature = "metrics")]
    {
        fn outcome(answered: bool) -> &'static str {
            if answered { "answered" } else { "failed" }
        }
        // A failing dependency makes every request a fallback: held, like rejections.
        static COUNTERS: std::sync::LazyLock<Vocabulary<(FallbackReason, bool)>> =
            std::sync::LazyLock::new(|| {
                let all = FallbackReason::ALL
                    .iter()
                    .flat_map(|&r| [(r, true), (r, false)]);
                Vocabulary::new(all, |(reason, answered)| {
                    metrics::Key::from_parts(
                        "bulwark_fallbacks_total",
                        vec![
                            metrics::Label::from_static_parts("reason", reason.as_str()),
                            metrics::Label::from_static_parts("outcome", outcome(answered)),
                        ],
                    )
                })
            });
        COUNTERS.increment((reason, answered), || {
            metrics::counter!(
                "bulwark_fallbacks_total",
                "reason" => reason.as_str(),
                "outcome" => outcome(answered)
            )
            .increment(1);
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (reason, answered);
}
