//! Failure classification: is this result a success, a failure, or not a signal at all?
//!
//! The circuit breaker counts failures, the fallback layer falls back on them, the log layer
//! reports them. All of them ask one [`Classify`] implementation, so "failure" means the same
//! thing everywhere in a stack.
//!
//! The default, [`ServerErrorsAsFailures`], counts as failures:
//! - every `Err` from the inner service (a `tower::timeout` `Elapsed` included, wherever it sits
//!   in the error's source chain: see [`is_timeout`]);
//! - responses with status 500, 502, 503 or 504 (not 501 or 505, which say nothing about a
//!   dependency's health).
//!
//! It *ignores* responses that carry a bulwark [`Rejection`] (an outer rate
//! limiter's 429 or an inner breaker's 503 says nothing about the service), and treats everything
//! else as a success. Closures `Fn(Result<&T, &E>) -> Outcome` are classifiers too:
//!
//! ```
//! use bulwark::classify::{Classify, Outcome, ServerErrorsAsFailures};
//! use http::{Response, StatusCode};
//!
//! let res = Response::builder().status(502).body(()).unwrap();
//! let default = ServerErrorsAsFailures::new();
//! assert_eq!(Classify::<_, std::io::Error>::classify(&default, Ok(&res)), Outcome::Failure);
//!
//! // Also count 429 from the upstream as a failure, and ignore 404s.
//! let custom = |r: Result<&Response<()>, &std::io::Error>| match r {
//!     Ok(res) if res.status() == StatusCode::TOO_MANY_REQUESTS => Outcome::Failure,
//!     Ok(res) if res.status() == StatusCode::NOT_FOUND => Outcome::Ignore,
//!     other => ServerErrorsAsFailures::new().classify(other),
//! };
//! let too_many = Response::builder().status(429).body(()).unwrap();
//! assert_eq!(custom.classify(Ok(&too_many)), Outcome::Failure);
//! ```

use std::error::Error as StdError;

use http::{Response, StatusCode};

use crate::Rejection;

/// What a result means for the health of the service that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed in a way that says the service is unhealthy.
    Failure,
    /// The result is not a health signal (a rejection by bulwark itself, a client error).
    Ignore,
}

/// Decides the [`Outcome`] of a call that returned `Result<T, E>`.
pub trait Classify<T, E>: Clone + Send + Sync + 'static {
    /// The outcome of one call.
    fn classify(&self, result: Result<&T, &E>) -> Outcome;
}

impl<F, T, E> Classify<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Outcome + Clone + Send + Sync + 'static,
{
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        self(result)
    }
}

/// The default HTTP classifier: `Err`, 500, 502, 503 and 504 are failures; bulwark rejections
/// are ignored; everything else succeeds.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ServerErrorsAsFailures;

impl ServerErrorsAsFailures {
    /// The default classifier.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl<B, E> Classify<Response<B>, E> for ServerErrorsAsFailures {
    #[inline]
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Err(_) => Outcome::Failure,
            Ok(res) => {
                if res.extensions().get::<Rejection>().is_some() {
                    Outcome::Ignore
                } else if matches!(
                    res.status(),
                    StatusCode::INTERNAL_SERVER_ERROR
                        | StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }
        }
    }
}

/// An HTTP classifier that fails every status in an inclusive range (and every `Err`), ignores
/// bulwark rejections, and counts everything else as success.
///
/// ```
/// use bulwark::classify::{Classify, Outcome, StatusInRangeAsFailures};
/// use http::Response;
///
/// let c = StatusInRangeAsFailures::new(500..=599);
/// let res = Response::builder().status(501).body(()).unwrap();
/// assert_eq!(Classify::<_, ()>::classify(&c, Ok(&res)), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct StatusInRangeAsFailures {
    low: u16,
    high: u16,
}

impl StatusInRangeAsFailures {
    /// Fails statuses in `range` (inclusive), e.g. `500..=599` or `429..=599`.
    #[must_use]
    pub fn new(range: std::ops::RangeInclusive<u16>) -> Self {
        Self {
            low: *range.start(),
            high: *range.end(),
        }
    }
}

impl<B, E> Classify<Response<B>, E> for StatusInRangeAsFailures {
    #[inline]
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Err(_) => Outcome::Failure,
            Ok(res) if res.extensions().get::<Rejection>().is_some() => Outcome::Ignore,
            Ok(res) if (self.low..=self.high).contains(&res.status().as_u16()) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        }
    }
}

/// The classifier for non-HTTP services: every `Err` fails, every `Ok` succeeds.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ErrorsAsFailures;

impl<T, E> Classify<T, E> for ErrorsAsFailures {
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Whether `error`, or any error in its source chain, is a timeout: tower's
/// `timeout::error::Elapsed`, tokio's `time::error::Elapsed`, or an I/O error of kind `TimedOut`.
///
/// ```
/// use bulwark::classify::is_timeout;
/// use bulwark::BoxError;
///
/// #[derive(Debug)]
/// struct Upstream(BoxError);
/// impl std::fmt::Display for Upstream {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("upstream") }
/// }
/// impl std::error::Error for Upstream {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&*self.0) }
/// }
///
/// let wrapped = Upstream(Box::new(tower::timeout::error::Elapsed::new()));
/// assert!(is_timeout(&wrapped));
/// assert!(!is_timeout(&std::fmt::Error));
/// ```
pub fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
            // `io::Error::source` skips the error it wraps, so step into it by hand.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(status: u16) -> Response<()> {
        Response::builder().status(status).body(()).unwrap()
    }

    #[test]
    fn default_classifier_statuses() {
        let c = ServerErrorsAsFailures::new();
        let classify = |s| Classify::<_, ()>::classify(&c, Ok(&res(s)));
        for s in [500, 502, 503, 504] {
            assert_eq!(classify(s), Outcome::Failure, "{s}");
        }
        for s in [200, 201, 204, 301, 304, 400, 404, 429, 501, 505] {
            assert_eq!(classify(s), Outcome::Success, "{s}");
        }
        assert_eq!(
            Classify::<Response<()>, _>::classify(&c, Err(&())),
            Outcome::Failure
        );
    }

    #[test]
    fn rejections_are_ignored() {
        let c = ServerErrorsAsFailures::new();
        let mut r = res(503);
        r.extensions_mut()
            .insert(Rejection::circuit_open(std::time::Duration::from_secs(1)));
        assert_eq!(Classify::<_, ()>::classify(&c, Ok(&r)), Outcome::Ignore);
        let mut r = res(429);
        r.extensions_mut().insert(Rejection::rate_limited(
            std::time::Duration::from_secs(1),
            None,
        ));
        let range = StatusInRangeAsFailures::new(400..=599);
        assert_eq!(Classify::<_, ()>::classify(&range, Ok(&r)), Outcome::Ignore);
    }

    #[test]
    fn timeouts_are_found_anywhere_in_the_chain() {
        let direct: crate::BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(is_timeout(&*direct));
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(is_timeout(&io));
        let wrapped = std::io::Error::other(tower::timeout::error::Elapsed::new());
        assert!(is_timeout(&wrapped));
        let other = std::io::Error::other("boom");
        assert!(!is_timeout(&other));
    }
}
