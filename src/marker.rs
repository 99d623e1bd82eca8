//! The marks bulwark leaves on answers it made or changed, and the one check that reads them.
//!
//! A rejection carries a [`Rejection`] extension. An answer a layer changed without rejecting
//! carries a header (and, for fallbacks, an extension): `bulwark-fallback` with its
//! [`FallbackReason`], `Idempotent-Replayed: true` on a replay, `Cache-Status` from the cache.
//! Layers below a cache or an idempotency layer must never have such a stand-in stored as if a
//! handler had answered, and the request log reports every mark: they all read them here.

use std::fmt;

use http::{Extensions, HeaderMap, HeaderName, HeaderValue};

use crate::Rejection;

/// The `bulwark-fallback` header field, set on every answer the fallback gave, with the
/// [`FallbackReason`] as its value.
pub static BULWARK_FALLBACK: HeaderName = HeaderName::from_static("bulwark-fallback");

/// Why the fallback answered instead of the inner service.
///
/// Each reason is also the name of the trigger that produces it (see [`Triggers`](crate::fallback::Triggers)). It travels to
/// the fallback (as an argument of closures, as a request extension for a fallback service) and
/// onto the answer: as the `bulwark-fallback` header and as a response extension of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The inner service returned `Err` (and the error is not a timeout). Header value `error`.
    Error,
    /// The inner service answered with a response the classifier calls a failure (by default
    /// 500, 502, 503 or 504). Header value `status`.
    Status,
    /// The response carries [`Rejection::CircuitOpen`](crate::Rejection::CircuitOpen): an inner circuit breaker refused the
    /// call. Header value `circuit-open`.
    CircuitOpen,
    /// The inner service returned an error that is a timeout, as
    /// [`is_timeout`](crate::classify::is_timeout) sees it. Header value `timeout`.
    Timeout,
    /// The response carries another bulwark [`Rejection`](crate::Rejection) (a 429 from an inner rate limiter, a
    /// disabled feature, ...). Header value `rejected`.
    Rejected,
}

impl FallbackReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Error,
        Self::Status,
        Self::CircuitOpen,
        Self::Timeout,
        Self::Rejected,
    ];

    /// The header value and metric label: `error`, `status`, `circuit-open`, `timeout` or
    /// `rejected`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Status => "status",
            Self::CircuitOpen => "circuit-open",
            Self::Timeout => "timeout",
            Self::Rejected => "rejected",
        }
    }

    /// The value of the `bulwark-fallback` header.
    #[must_use]
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// Its bit in a set of triggers.
    pub(crate) fn bit(self) -> u8 {
        match self {
            Self::Error => 1,
            Self::Status => 1 << 1,
            Self::CircuitOpen => 1 << 2,
            Self::Timeout => 1 << 3,
            Self::Rejected => 1 << 4,
        }
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Idempotent-Replayed` response header field, `true` on replayed responses.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The RFC 9211 `Cache-Status` response header field.
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Which bulwark answer a response is, if any, by its marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StandIn {
    /// A layer refused the request ([`Rejection`] extension).
    Rejection,
    /// A fallback answered ([`FallbackReason`] extension or `bulwark-fallback` header).
    Fallback,
    /// An idempotency layer replayed a stored answer (`Idempotent-Replayed`).
    Replay,
}

impl StandIn {
    /// What answered instead of a handler, by the response's extensions and headers; `None` for a
    /// handler's own answer (a cache hit counts as the handler's: it is its stored answer).
    pub(crate) fn of(extensions: &Extensions, headers: &HeaderMap) -> Option<Self> {
        if extensions.get::<Rejection>().is_some() {
            Some(Self::Rejection)
        } else if Self::is_fallback(extensions, headers) {
            Some(Self::Fallback)
        } else if headers.contains_key(&IDEMPOTENT_REPLAYED) {
            Some(Self::Replay)
        } else {
            None
        }
    }

    /// Whether [`of`](Self::of) would say [`Rejection`](Self::Rejection) or
    /// [`Fallback`](Self::Fallback), without the replay check's header lookup (for a hot path
    /// that keeps a replay as it would the handler's answer).
    #[inline]
    pub(crate) fn is_rejection_or_fallback(extensions: &Extensions, headers: &HeaderMap) -> bool {
        extensions.get::<Rejection>().is_some() || Self::is_fallback(extensions, headers)
    }

    #[inline]
    fn is_fallback(extensions: &Extensions, headers: &HeaderMap) -> bool {
        extensions.get::<FallbackReason>().is_some() || headers.contains_key(&BULWARK_FALLBACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_are_told_by_their_marks() {
        let none = Extensions::new();
        let mut h = HeaderMap::new();
        assert_eq!(StandIn::of(&none, &h), None);
        h.insert(
            CACHE_STATUS.clone(),
            HeaderValue::from_static("bulwark; hit"),
        );
        assert_eq!(
            StandIn::of(&none, &h),
            None,
            "a hit is the handler's answer"
        );
        h.insert(
            IDEMPOTENT_REPLAYED.clone(),
            HeaderValue::from_static("true"),
        );
        assert_eq!(StandIn::of(&none, &h), Some(StandIn::Replay));
        h.insert(
            BULWARK_FALLBACK.clone(),
            FallbackReason::Status.header_value(),
        );
        assert_eq!(StandIn::of(&none, &h), Some(StandIn::Fallback));
        let mut ext = Extensions::new();
        ext.insert(FallbackReason::Timeout);
        assert_eq!(
            StandIn::of(&ext, &HeaderMap::new()),
            Some(StandIn::Fallback)
        );
        ext.insert(Rejection::PayloadTooLarge { limit: 1 });
        assert_eq!(StandIn::of(&ext, &h), Some(StandIn::Rejection));
        assert!(StandIn::is_rejection_or_fallback(&ext, &HeaderMap::new()));
        let mut replay = HeaderMap::new();
        replay.insert(
            IDEMPOTENT_REPLAYED.clone(),
            HeaderValue::from_static("true"),
        );
        assert!(!StandIn::is_rejection_or_fallback(&none, &replay));
        let mut fallback = replay.clone();
        fallback.insert(
            BULWARK_FALLBACK.clone(),
            FallbackReason::Status.header_value(),
        );
        assert!(StandIn::is_rejection_or_fallback(&none, &fallback));
    }

    #[test]
    fn reasons_name_their_header_values() {
        let names: Vec<_> = FallbackReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["error", "status", "circuit-open", "timeout", "rejected"]
        );
        let bits: u8 = FallbackReason::ALL.iter().map(|r| r.bit()).sum();
        assert_eq!(bits, 0b1_1111, "one bit each");
    }
}
