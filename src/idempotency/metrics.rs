//! The idempotency layer's counter, `bulwark_idempotency_requests_total` (see the
//! [catalogue](crate::metrics)).

#[cfg(feature = "metrics")]
use crate::metrics::Vocabulary;

/// One keyed request's outcome in the idempotency layer.
#[inline]
pub(crate) fn idempotency(outcome: KeyOutcome) {
    #[cfg(feature = "metrics")]
    {
        static COUNTERS: std::sync::LazyLock<Vocabulary<KeyOutcome>> =
            std::sync::LazyLock::new(|| {
                Vocabulary::new(KeyOutcome::ALL, |outcome| {
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

/// An outcome of a keyed request, counted by the handle and the
/// `bulwark_idempotency_requests_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOutcome {
    New,
    Replayed,
    InFlight,
    Mismatch,
    NotReplayable,
    Released,
    LeaseLost,
    StoreError,
}

// Used for the metric's labels only.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl KeyOutcome {
    /// Every outcome, in declaration order.
    pub(crate) const ALL: [Self; 8] = [
        Self::New,
        Self::Replayed,
        Self::InFlight,
        Self::Mismatch,
        Self::NotReplayable,
        Self::Released,
        Self::LeaseLost,
        Self::StoreError,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Replayed => "replayed",
            Self::InFlight => "in_flight",
            Self::Mismatch => "mismatch",
            Self::NotReplayable => "not_replayable",
            Self::Released => "released",
            Self::LeaseLost => "lease_lost",
            Self::StoreError => "store_error",
        }
    }
}
