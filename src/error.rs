//! Errors: [`ConfigError`] for misconfiguration, [`StoreError`] for shared-state failures.
//!
//! Neither is ever shown to an HTTP client. A `ConfigError` comes back from a builder's
//! `build()` or a `try_*` constructor, so a bad setting stops the program at start-up with a
//! message that names the setting. A `StoreError` is what a store (memory or Redis) reports;
//! layers log and count it, then follow their documented fail-open or fail-closed policy.

use std::time::Duration;

use crate::BoxError;

/// A setting that cannot work, found while building a layer or its configuration.
///
/// Every message names the setting and the rule it breaks, e.g.
/// `invalid quota: burst must be > 0`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting whose value breaks a rule.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting, as named by its builder method.
        setting: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or a bare address) that does not parse.
    #[error("invalid IP network {input:?}: expected ADDRESS or ADDRESS/PREFIX")]
    InvalidIpNet {
        /// The text that was given.
        input: String,
    },
    /// A network prefix longer than the address family allows.
    #[error("invalid prefix length /{prefix}: at most /{max} for this address family")]
    InvalidPrefix {
        /// The prefix length that was given.
        prefix: u8,
        /// The largest allowed: 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl ConfigError {
    pub(crate) fn invalid(setting: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            setting,
            reason: reason.into(),
        }
    }
}

/// A shared-state store (memory or Redis) could not answer.
///
/// It carries its source for the log. It is never sent to clients: the layer that saw it
/// applies its failure policy (bypass, local fallback, or
/// [`Rejection::BackendUnavailable`](crate::Rejection::BackendUnavailable)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer within its call timeout.
    #[error("store operation `{operation}` timed out after {timeout:?}")]
    Timeout {
        /// What was being done, e.g. `"claim"`.
        operation: &'static str,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The store answered with an error, or could not be reached.
    #[error("store operation `{operation}` failed")]
    Backend {
        /// What was being done, e.g. `"claim"`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The store answered with data this version of bulwark cannot read.
    #[error("store operation `{operation}` returned malformed data: {detail}")]
    Malformed {
        /// What was being done.
        operation: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl StoreError {
    /// Wraps an error from a store's backend.
    pub fn backend(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            operation,
            source: source.into(),
        }
    }

    /// The operation that failed, for logs and metric labels.
    #[must_use]
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Timeout { operation, .. }
            | Self::Backend { operation, .. }
            | Self::Malformed { operation, .. } => operation,
        }
    }
}
