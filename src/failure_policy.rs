//! [`FailurePolicy`]: what a layer does when its shared store fails.

/// What a layer backed by a shared store (Redis, or a store of your own) does when the store
/// fails or does not answer within its call timeout. One vocabulary for every layer that keeps
/// shared state:
///
/// | policy | rate limiter | idempotency |
/// | --- | --- | --- |
/// | [`Local`](Self::Local) | decides with this instance's memory limiter, same quotas (its default) | claims the key in this instance's memory: a retry that reaches the same instance is still answered from it |
/// | [`FailOpen`](Self::FailOpen) | lets the request through | runs the request unprotected: a retry may run it again |
/// | [`FailClosed`](Self::FailClosed) | 503 [`BackendUnavailable`](crate::Rejection::BackendUnavailable) | 503 `BackendUnavailable`, the request not run (its default) |
///
/// Each layer keeps its own default (the table's), chosen for what its failure costs: a limiter
/// that over-admits for a while is better than one that refuses everyone, a payment that cannot
/// be protected from running twice is better not run. `FailurePolicy::default()` is `Local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Decide with this instance's memory. The guarantee holds per instance while the store is
    /// away: with N instances, a client may get up to N times a rate limit, and a retry that
    /// reaches another instance than its first attempt runs again.
    #[default]
    Local,
    /// Go on without the store's protection.
    FailOpen,
    /// Refuse with [`Rejection::BackendUnavailable`](crate::Rejection::BackendUnavailable)
    /// (503, `Retry-After: 1`).
    FailClosed,
}

impl FailurePolicy {
    /// The policy's name in events and metric labels: `local`, `fail_open`, `fail_closed`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FailurePolicy;

    #[test]
    fn names_are_the_metric_labels() {
        assert_eq!(FailurePolicy::default(), FailurePolicy::Local);
        assert_eq!(FailurePolicy::Local.as_str(), "local");
        assert_eq!(FailurePolicy::FailOpen.as_str(), "fail_open");
        assert_eq!(FailurePolicy::FailClosed.as_str(), "fail_closed");
    }
}
