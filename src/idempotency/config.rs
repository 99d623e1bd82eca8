//! [`IdempotencyConfig`]: leases, retention, limits, methods, routes and policies.

use std::{sync::Arc, time::Duration};

use http::{HeaderName, Method};

use crate::ConfigError;

/// The store-failure policy's former name in this layer.
#[deprecated(
    since = "0.1.0",
    note = "use `bulwark::FailurePolicy`, shared by every layer with a store"
)]
pub type OnStoreError = crate::FailurePolicy;

/// The idempotency layer's settings. Build with [`IdempotencyConfig::builder`].
///
/// | setting | default |
/// | --- | --- |
/// | methods | `POST`, `PATCH` |
/// | routes | all paths |
/// | key required | no (requests without a key pass through) |
/// | lease of a claim | 60 s |
/// | retention of a completed response | 24 h |
/// | request body limit | 1 MiB (over it: 413) |
/// | response body limit | 1 MiB (over it: completed, not replayable) |
/// | `Retry-After` of a 409 | 1 s (never more than the lease left) |
/// | wait for an in-flight duplicate | no (409 at once) |
/// | release the claim on 5xx / on bulwark rejections / on cancel | yes / yes / no (held until the lease ends) |
/// | extra fingerprint headers | none |
/// | store failure | [`FailurePolicy::FailClosed`](crate::FailurePolicy::FailClosed) (503) |
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    pub(crate) methods: Arc<[Method]>,
    pub(crate) routes: Option<Arc<[Box<str>]>>,
    pub(crate) require_key: bool,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
    pub(crate) in_flight_retry_after: Duration,
    pub(crate) wait_for_in_flight: Option<Duration>,
    pub(crate) release_on_server_error: bool,
    pub(crate) release_on_rejection: bool,
    pub(crate) release_on_cancel: bool,
    pub(crate) fingerprint_headers: Arc<[HeaderName]>,
    pub(crate) on_store_error: crate::FailurePolicy,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            methods: Arc::from([Method::POST, Method::PATCH]),
            routes: None,
            require_key: false,
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 60 * 60),
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 1024 * 1024,
            in_flight_retry_after: Duration::from_secs(1),
            wait_for_in_flight: None,
            release_on_server_error: true,
            release_on_rejection: true,
            release_on_cancel: false,
            fingerprint_headers: Arc::from([]),
            on_store_error: crate::FailurePolicy::FailClosed,
        }
    }
}

impl IdempotencyConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> IdempotencyConfigBuilder {
        IdempotencyConfigBuilder(Self::default())
    }

    /// The lease of a claim.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How long a completed response is kept.
    #[must_use]
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Whether the layer handles a request with this method and path.
    pub(crate) fn applies(&self, method: &Method, path: &str) -> bool {
        self.methods.contains(method)
            && self.routes.as_ref().is_none_or(|routes| {
                routes.iter().any(|r| match r.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => path == &**r,
                })
            })
    }
}

/// Builds an [`IdempotencyConfig`]; [`build`](Self::build) checks it.
#[derive(Debug, Clone)]
#[must_use]
pub struct IdempotencyConfigBuilder(IdempotencyConfig);

impl IdempotencyConfigBuilder {
    /// The methods the layer handles (default `POST` and `PATCH`). Other methods pass through
    /// without their body being read.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.0.methods = methods.into_iter().collect();
        self
    }

    /// Only these paths (exact, or a prefix when ending in `*`, e.g. `/payments*`); default all.
    /// With axum, `Router::route_layer` on the routes concerned does the same.
    pub fn routes<T: AsRef<str>>(mut self, routes: impl IntoIterator<Item = T>) -> Self {
        self.0.routes = Some(routes.into_iter().map(|r| r.as_ref().into()).collect());
        self
    }

    /// Whether requests without `Idempotency-Key` are refused with 400
    /// [`IdempotencyKeyMissing`](crate::Rejection::IdempotencyKeyMissing) (default: no, they
    /// pass through).
    pub fn require_key(mut self, require: bool) -> Self {
        self.0.require_key = require;
        self
    }

    /// How long a claim holds its key while its request runs (default 60 s). A worker that
    /// crashed blocks the key this long at most. Keep it above your slowest request.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.0.lease = lease;
        self
    }

    /// How long a completed response is replayed (default 24 h).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.0.retention = retention;
        self
    }

    /// The largest request body read for the fingerprint (default 1 MiB); larger ones get 413.
    pub fn max_request_bytes(mut self, limit: usize) -> Self {
        self.0.max_request_bytes = limit;
        self
    }

    /// The largest response body stored (default 1 MiB). A larger response is sent, and its key
    /// is recorded as completed but not replayable: retries get 409
    /// [`IdempotencyNotReplayable`](crate::Rejection::IdempotencyNotReplayable), never a second
    /// execution.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.0.max_response_bytes = limit;
        self
    }

    /// The `Retry-After` of a 409 in-flight answer (default 1 s; never more than the lease
    /// left).
    pub fn in_flight_retry_after(mut self, hint: Duration) -> Self {
        self.0.in_flight_retry_after = hint;
        self
    }

    /// Instead of answering 409 at once, a duplicate of an in-flight request waits up to `max`
    /// for it to finish, then replays its response (or runs, if the first released its claim).
    pub fn wait_for_in_flight(mut self, max: Duration) -> Self {
        self.0.wait_for_in_flight = Some(max);
        self
    }

    /// Whether a 5xx answer frees the key instead of being stored (default: yes, so a retry
    /// runs again).
    pub fn release_on_server_error(mut self, release: bool) -> Self {
        self.0.release_on_server_error = release;
        self
    }

    /// Whether a bulwark rejection or fallback answer from an inner layer (a response with a
    /// [`Rejection`](crate::Rejection) or [`FallbackReason`](crate::fallback::FallbackReason)
    /// extension) frees the key instead of being stored (default: yes): the handler did not
    /// answer, so a retry should run it.
    pub fn release_on_rejection(mut self, release: bool) -> Self {
        self.0.release_on_rejection = release;
        self
    }

    /// Whether a request dropped before its response (the client went away) frees its key at
    /// once (default: no). By default the key stays claimed until the lease ends, since a
    /// handler cancelled half-way may already have done what must not happen twice (charged
    /// the card, say); `true` lets a retry run at once, for handlers whose effects are one
    /// atomic step. Only while the handler runs: once it has answered, a client that goes away
    /// while the answer's body is read leaves the key claimed until the lease ends, as without
    /// this option.
    pub fn release_on_cancel(mut self, release: bool) -> Self {
        self.0.release_on_cancel = release;
        self
    }

    /// Request headers that are part of the fingerprint besides `Content-Type` (default none).
    pub fn fingerprint_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.0.fingerprint_headers = names.into_iter().collect();
        self
    }

    /// What to do when the store fails or does not answer in time (default
    /// [`FailurePolicy::FailClosed`](crate::FailurePolicy::FailClosed)). With
    /// [`Local`](crate::FailurePolicy::Local), claims are kept in this instance's memory while
    /// the store is away, so a retry that reaches the same instance is answered from its first
    /// attempt; see [`FailurePolicy`](crate::FailurePolicy).
    pub fn failure_policy(mut self, policy: crate::FailurePolicy) -> Self {
        self.0.on_store_error = policy;
        self
    }

    /// The former name of [`failure_policy`](Self::failure_policy).
    #[deprecated(since = "0.1.0", note = "use `failure_policy`")]
    pub fn on_store_error(self, policy: crate::FailurePolicy) -> Self {
        self.failure_policy(policy)
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if the lease, the retention or a body limit is zero, the
    /// retention is shorter than the lease, a duration is over ten years (deadlines are
    /// computed from them, and stores take expiry times in milliseconds), a route does not
    /// start with `/`, or no method is given.
    pub fn build(self) -> Result<IdempotencyConfig, ConfigError> {
        /// Ten years: far beyond any sensible setting, far below overflow.
        const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
        let c = self.0;
        if c.lease.is_zero() {
            return Err(ConfigError::invalid("lease", "must be > 0"));
        }
        for (setting, d) in [
            ("lease", Some(c.lease)),
            ("retention", Some(c.retention)),
            ("in_flight_retry_after", Some(c.in_flight_retry_after)),
            ("wait_for_in_flight", c.wait_for_in_flight),
        ] {
            if d.is_some_and(|d| d > LONGEST) {
                return Err(ConfigError::invalid(setting, "must be at most ten years"));
            }
        }
        if let Some(r) = c
            .routes
            .iter()
            .flat_map(|r| r.iter())
            .find(|r| !r.starts_with('/'))
        {
            return Err(ConfigError::invalid(
                "routes",
                format!("{r:?} does not start with '/' and would never match a path"),
            ));
        }
        if c.retention < c.lease {
            return Err(ConfigError::invalid(
                "retention",
                "must be at least the lease",
            ));
        }
        if c.max_request_bytes == 0 {
            return Err(ConfigError::invalid("max_request_bytes", "must be > 0"));
        }
        if c.max_response_bytes == 0 {
            return Err(ConfigError::invalid("max_response_bytes", "must be > 0"));
        }
        if c.methods.is_empty() {
            return Err(ConfigError::invalid("methods", "at least one is needed"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_beyond_reason_and_relative_routes_are_refused() {
        let b = IdempotencyConfig::builder;
        assert!(b().retention(Duration::MAX).build().is_err());
        assert!(
            b().lease(Duration::MAX)
                .retention(Duration::MAX)
                .build()
                .is_err()
        );
        assert!(b().wait_for_in_flight(Duration::MAX).build().is_err());
        assert!(b().in_flight_retry_after(Duration::MAX).build().is_err());
        assert!(b().routes(["payments"]).build().is_err());
        assert!(
            b().retention(Duration::from_secs(365 * 24 * 3600))
                .routes(["/payments", "/orders/*"])
                .build()
                .is_ok()
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(
            IdempotencyConfig::builder()
                .lease(Duration::ZERO)
                .build()
                .is_err()
        );
        let err = IdempotencyConfig::builder()
            .lease(Duration::from_secs(10))
            .retention(Duration::from_secs(5))
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid retention: must be at least the lease"
        );
        assert!(IdempotencyConfig::builder().methods([]).build().is_err());
        assert!(
            IdempotencyConfig::builder()
                .max_request_bytes(0)
                .build()
                .is_err()
        );
    }

    #[test]
    fn methods_and_routes() {
        let c = IdempotencyConfig::default();
        assert!(c.applies(&Method::POST, "/x"));
        assert!(c.applies(&Method::PATCH, "/x"));
        assert!(!c.applies(&Method::GET, "/x"));
        assert!(!c.applies(&Method::PUT, "/x"));
        let c = IdempotencyConfig::builder()
            .routes(["/payments", "/orders/*"])
            .build()
            .unwrap();
        assert!(c.applies(&Method::POST, "/payments"));
        assert!(!c.applies(&Method::POST, "/payments/1"));
        assert!(c.applies(&Method::POST, "/orders/1"));
        assert!(!c.applies(&Method::POST, "/login"));
    }
}
