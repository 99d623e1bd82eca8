//! What makes the fallback answer: the set of enabled [`Triggers`], one per [`FallbackReason`].

use std::{any::Any, error::Error as StdError, fmt};

use http::Response;

use crate::{
    BoxError, Rejection,
    classify::{Classify, Outcome, is_timeout},
    marker::FallbackReason,
};

/// The set of enabled triggers, one per [`FallbackReason`].
///
/// | trigger | default | fires when |
/// | --- | --- | --- |
/// | [`Error`](FallbackReason::Error) | on | the inner service returns an `Err` that is not a timeout |
/// | [`Timeout`](FallbackReason::Timeout) | on | the inner service returns an `Err` that is a timeout |
/// | [`Status`](FallbackReason::Status) | on | the classifier calls the response a failure |
/// | [`CircuitOpen`](FallbackReason::CircuitOpen) | on | the response carries [`Rejection::CircuitOpen`] |
/// | [`Rejected`](FallbackReason::Rejected) | off | the response carries any other [`Rejection`] |
///
/// The error triggers split errors in two: a timeout is only ever a `timeout`, so turning the
/// timeout trigger off lets timeouts through even while the error trigger is on. A circuit-open
/// rejection with the circuit-open trigger off is still a rejection: it falls back with reason
/// `rejected` if that trigger is on.
///
/// ```
/// use bulwark::fallback::{FallbackReason, Triggers};
///
/// let t = Triggers::default().with(FallbackReason::Rejected, true);
/// assert!(t.contains(FallbackReason::Rejected));
/// assert!(!Triggers::none().contains(FallbackReason::Error));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Triggers(u8);

impl Triggers {
    /// No trigger: the layer never falls back (useful as a start for [`with`](Self::with)).
    #[must_use]
    pub const fn none() -> Self {
        Self(0)
    }

    /// Every trigger, `rejected` included.
    #[must_use]
    pub const fn all() -> Self {
        Self(0b1_1111)
    }

    /// This set with `reason`'s trigger turned on or off.
    #[must_use]
    pub fn with(self, reason: FallbackReason, enabled: bool) -> Self {
        if enabled {
            Self(self.0 | reason.bit())
        } else {
            Self(self.0 & !reason.bit())
        }
    }

    /// Whether `reason`'s trigger is on.
    #[must_use]
    pub fn contains(self, reason: FallbackReason) -> bool {
        self.0 & reason.bit() != 0
    }

    /// The trigger that fires for an inner error, if any.
    pub(crate) fn for_error<E: 'static>(self, error: &E) -> Option<FallbackReason> {
        let reason = if error_is_timeout(error) {
            FallbackReason::Timeout
        } else {
            FallbackReason::Error
        };
        self.contains(reason).then_some(reason)
    }

    /// The trigger that fires for an inner response, if any.
    pub(crate) fn for_response<B, E, C>(
        self,
        classifier: &C,
        res: &Response<B>,
    ) -> Option<FallbackReason>
    where
        C: Classify<Response<B>, E>,
    {
        if let Some(rejection) = res.extensions().get::<Rejection>() {
            // The classifier ignores rejections (the default one does), so look at the extension
            // here. A circuit-open rejection is also a rejection.
            if matches!(rejection, Rejection::CircuitOpen { .. })
                && self.contains(FallbackReason::CircuitOpen)
            {
                return Some(FallbackReason::CircuitOpen);
            }
            if self.contains(FallbackReason::Rejected) {
                return Some(FallbackReason::Rejected);
            }
        }
        (self.contains(FallbackReason::Status) && classifier.classify(Ok(res)) == Outcome::Failure)
            .then_some(FallbackReason::Status)
    }
}

impl Default for Triggers {
    /// Everything but `rejected`.
    fn default() -> Self {
        Self::all().with(FallbackReason::Rejected, false)
    }
}

impl fmt::Debug for Triggers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(FallbackReason::ALL.iter().filter(|r| self.contains(**r)))
            .finish()
    }
}

/// Whether an inner error is a timeout.
///
/// There is no bound that lends `&dyn Error` from both `E: Error` and `BoxError` (the error type
/// of `tower::timeout` and of most tower middleware): `Box<dyn Error>` does not implement
/// `Error`, and coherence forbids a blanket impl beside one for the box. So the error is looked
/// at through `Any`, which needs only `E: 'static`: boxed errors, `std::io::Error` and the
/// `Elapsed` types are searched with [`is_timeout`], source chain included. Other error types
/// count as plain errors; map them into a `BoxError` (`MapErrLayer`) inside the fallback layer
/// to have their timeouts seen.
fn error_is_timeout<E: 'static>(error: &E) -> bool {
    let any: &dyn Any = error;
    if let Some(e) = any.downcast_ref::<BoxError>() {
        return is_timeout(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn StdError + Send + 'static>>() {
        return is_timeout(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn StdError + 'static>>() {
        return is_timeout(&**e);
    }
    if let Some(e) = any.downcast_ref::<std::io::Error>() {
        return is_timeout(e);
    }
    any.is::<tower::timeout::error::Elapsed>() || any.is::<tokio::time::error::Elapsed>()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::classify::ServerErrorsAsFailures;

    fn res(status: u16, rejection: Option<Rejection>) -> Response<()> {
        let mut res = Response::builder().status(status).body(()).unwrap();
        if let Some(r) = rejection {
            res.extensions_mut().insert(r);
        }
        res
    }

    fn reason(t: Triggers, r: &Response<()>) -> Option<FallbackReason> {
        t.for_response::<_, (), _>(&ServerErrorsAsFailures::new(), r)
    }

    #[test]
    fn reasons_have_their_header_values() {
        let names: Vec<_> = FallbackReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["error", "status", "circuit-open", "timeout", "rejected"]
        );
        assert_eq!(FallbackReason::CircuitOpen.to_string(), "circuit-open");
    }

    #[test]
    fn default_set_and_toggles() {
        let t = Triggers::default();
        for r in FallbackReason::ALL {
            assert_eq!(t.contains(r), r != FallbackReason::Rejected, "{r}");
        }
        assert_eq!(
            format!("{:?}", Triggers::none().with(FallbackReason::Timeout, true)),
            "{Timeout}"
        );
        assert_eq!(Triggers::all().with(FallbackReason::Rejected, false), t);
    }

    #[test]
    fn responses_map_to_reasons() {
        let open = Rejection::circuit_open(Duration::from_secs(1));
        let limited = Rejection::rate_limited(Duration::from_secs(1), None);
        let t = Triggers::default();
        assert_eq!(reason(t, &res(503, None)), Some(FallbackReason::Status));
        assert_eq!(reason(t, &res(404, None)), None);
        assert_eq!(
            reason(t, &res(503, Some(open.clone()))),
            Some(FallbackReason::CircuitOpen)
        );
        assert_eq!(reason(t, &res(429, Some(limited.clone()))), None);
        let t = Triggers::default()
            .with(FallbackReason::CircuitOpen, false)
            .with(FallbackReason::Rejected, true);
        assert_eq!(
            reason(t, &res(503, Some(open.clone()))),
            Some(FallbackReason::Rejected)
        );
        assert_eq!(
            reason(t, &res(429, Some(limited))),
            Some(FallbackReason::Rejected)
        );
        let t = Triggers::none().with(FallbackReason::Status, true);
        assert_eq!(
            reason(t, &res(503, Some(open))),
            None,
            "the classifier ignores rejections"
        );
    }

    #[test]
    fn timeouts_are_found_in_boxed_and_io_errors() {
        let boxed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(error_is_timeout(&boxed));
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(error_is_timeout(&io));
        assert!(error_is_timeout(&tower::timeout::error::Elapsed::new()));
        let other: BoxError = "boom".into();
        assert!(!error_is_timeout(&other));
        assert!(!error_is_timeout(&std::fmt::Error));
        let t = Triggers::default().with(FallbackReason::Timeout, false);
        assert_eq!(t.for_error(&boxed), None, "a timeout is never an `error`");
        assert_eq!(t.for_error(&other), Some(FallbackReason::Error));
    }
}
