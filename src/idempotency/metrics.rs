//! The idempotency layer's counter, `bulwark_idempotency_requests_total` (see the
//! [catalogue](crate::metrics)).

use super::handle::Outcome;
#[cfg(feature = "metrics")]
use crate::metrics::Vocabulary;

/// One keyed request's outcome in the idempotency layer.
#[inline]
pub(crate) fn idempotency(outcome: Outcome) {
    #[cfg(feature = "metrics")]
    {
        static COUNTERS: std::sync::LazyLock<Vocabulary<Outcome>> =
            std::sync::LazyLock::new(|| {
                Vocabulary::new(Outcome::ALL, |outcome| {
                    metrics::Key::from_parts(
                        "bulwark_idempotency_requests_total",
                        vec![metrics::Label::from_static_parts(
                            "outcome",
                            outcome.as_str(),
                        )],
                    )
                })
            });
        COUNTERS.increment(outcome, || {
            metrics::counter!(
                "bulwark_idempotency_requests_total",
                "outcome" => outcome.as_str()
            )
            .increment(1);
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}
