//! RFC 9211 `Cache-Status`: what the cache did, on every answer that passed through it.

use std::fmt::Write as _;

use http::HeaderValue;

pub use crate::marker::CACHE_STATUS;

/// What the cache did with one request. Put in the extensions of every answer that passed
/// through a [`CacheLayer`](super::CacheLayer), and written as the answer's `Cache-Status` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheOutcome {
    /// Served from the cache, fresh. `hit; ttl=N`.
    Hit,
    /// Served stale from the cache while one background request refreshes it
    /// (stale-while-revalidate). `hit; ttl=-N; detail=stale-while-revalidate`.
    StaleWhileRevalidate,
    /// Served by one inner call made for many concurrent requests: this request waited for
    /// another's answer. `fwd=miss; collapsed`.
    Collapsed,
    /// Nothing stored for the key. `fwd=miss`.
    Miss,
    /// Something stored for the URL, but not for this request's `Vary` headers. `fwd=vary-miss`.
    VaryMiss,
    /// Stored but stale: revalidated or refetched. `fwd=stale`.
    Stale,
    /// Stored but stale, and the inner service failed: served stale (stale-if-error).
    /// `fwd=stale; fwd-status=S; detail=stale-if-error`.
    StaleIfError,
    /// Stored and fresh, but the request asked for a fresh answer (`no-cache`, `max-age=0`).
    /// `fwd=request`.
    Request,
    /// The request method is never answered from the cache (`POST`, `PUT`, ...). `fwd=method`.
    Method,
    /// The cache stepped aside: a key hook declined, a range request, credentials, or a store
    /// failure. `fwd=bypass`.
    Bypass,
    /// `only-if-cached` and nothing usable stored: answered 504 without calling the inner
    /// service. `detail=only-if-cached`.
    OnlyIfCached,
}

impl CacheOutcome {
    /// Every outcome, in declaration order (`outcome as usize` indexes it).
    pub(crate) const ALL: [Self; 11] = [
        Self::Hit,
        Self::StaleWhileRevalidate,
        Self::Collapsed,
        Self::Miss,
        Self::VaryMiss,
        Self::Stale,
        Self::StaleIfError,
        Self::Request,
        Self::Method,
        Self::Bypass,
        Self::OnlyIfCached,
    ];

    /// A short name for logs and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::StaleWhileRevalidate => "stale_while_revalidate",
            Self::Collapsed => "collapsed",
            Self::Miss => "miss",
            Self::VaryMiss => "vary_miss",
            Self::Stale => "stale",
            Self::StaleIfError => "stale_if_error",
            Self::Request => "request",
            Self::Method => "method",
            Self::Bypass => "bypass",
            Self::OnlyIfCached => "only_if_cached",
        }
    }

    /// Whether the answer came out of the cache.
    #[must_use]
    pub fn is_hit(self) -> bool {
        matches!(
            self,
            Self::Hit | Self::StaleWhileRevalidate | Self::Collapsed | Self::StaleIfError
        )
    }
}

/// The cache's decision for one request, as a response extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    /// What happened.
    pub outcome: CacheOutcome,
    /// Whether the answer was stored.
    pub stored: bool,
    /// Freshness left (negative once stale), in seconds, for answers from the cache.
    pub ttl: Option<i64>,
    /// The inner service's status, when it was called.
    pub fwd_status: Option<u16>,
    /// Why the cache bypassed or did not store, when known.
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub(crate) fn new(outcome: CacheOutcome) -> Self {
        Self {
            outcome,
            stored: false,
            ttl: None,
            fwd_status: None,
            detail: None,
        }
    }

    /// A fresh hit with `ttl` seconds left, and nothing else to say.
    pub(crate) fn hit(ttl: i64) -> Self {
        let mut s = Self::new(CacheOutcome::Hit);
        s.ttl = Some(ttl);
        s
    }

    /// This cache's `Cache-Status` member, `name` being the cache's identifier.
    #[must_use]
    pub fn member(&self, name: &str) -> String {
        let mut s = String::with_capacity(48);
        s.push_str(name);
        let fwd = match self.outcome {
            CacheOutcome::Hit | CacheOutcome::StaleWhileRevalidate => {
                s.push_str("; hit");
                None
            }
            CacheOutcome::Collapsed | CacheOutcome::Miss => Some("miss"),
            CacheOutcome::VaryMiss => Some("vary-miss"),
            CacheOutcome::Stale | CacheOutcome::StaleIfError => Some("stale"),
            CacheOutcome::Request => Some("request"),
            CacheOutcome::Method => Some("method"),
            CacheOutcome::Bypass => Some("bypass"),
            CacheOutcome::OnlyIfCached => None,
        };
        if let Some(fwd) = fwd {
            let _ = write!(s, "; fwd={fwd}");
        }
        if let Some(st) = self.fwd_status {
            let _ = write!(s, "; fwd-status={st}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.outcome == CacheOutcome::Collapsed {
            s.push_str("; collapsed");
        }
        let detail = match self.outcome {
            CacheOutcome::StaleWhileRevalidate => Some("stale-while-revalidate"),
            CacheOutcome::StaleIfError => Some("stale-if-error"),
            CacheOutcome::OnlyIfCached => Some("only-if-cached"),
            _ => self.detail,
        };
        if let Some(d) = detail {
            let _ = write!(s, "; detail={d}");
        }
        s
    }

    /// Appends this cache's member to `headers`' `Cache-Status` list (the last member is the cache
    /// nearest the client, RFC 9211 section 2), as one field line: a list the answer split over
    /// several lines is joined first, so none of its members is lost.
    pub(crate) fn write(&self, name: &str, headers: &mut http::HeaderMap) {
        let mut lines = headers.get_all(&CACHE_STATUS).iter();
        let first = lines.next();
        let joined = match (first, lines.next()) {
            (Some(first), Some(second)) => {
                let mut joined = first.as_bytes().to_vec();
                for line in std::iter::once(second).chain(lines) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(line.as_bytes());
                }
                HeaderValue::from_bytes(&joined).ok()
            }
            _ => None,
        };
        let v = self.value(name, joined.as_ref().or(first));
        if let Some(v) = v {
            headers.insert(CACHE_STATUS.clone(), v);
        }
    }

    /// The `Cache-Status` value with this cache's member after `prev`, the answer's own.
    pub(crate) fn value(&self, name: &str, prev: Option<&HeaderValue>) -> Option<HeaderValue> {
        let member = self.member(name);
        let value = match prev.and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {member}"),
            _ => member,
        };
        HeaderValue::try_from(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_in_order() {
        for (i, o) in CacheOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }

    #[test]
    fn members() {
        let mut hit = CacheStatus::new(CacheOutcome::Hit);
        hit.ttl = Some(9);
        assert_eq!(hit.member("bulwark"), "bulwark; hit; ttl=9");
        let mut miss = CacheStatus::new(CacheOutcome::Miss);
        miss.fwd_status = Some(200);
        miss.stored = true;
        assert_eq!(miss.member("b"), "b; fwd=miss; fwd-status=200; stored");
        let c = CacheStatus::new(CacheOutcome::Collapsed);
        assert_eq!(c.member("b"), "b; fwd=miss; collapsed");
        let mut h = http::HeaderMap::new();
        h.insert(&CACHE_STATUS, HeaderValue::from_static("origin; hit"));
        hit.write("edge", &mut h);
        assert_eq!(h[&CACHE_STATUS], "origin; hit, edge; hit; ttl=9");
        // A list split over field lines keeps every member.
        let mut h = http::HeaderMap::new();
        h.append(&CACHE_STATUS, HeaderValue::from_static("cdn; hit"));
        h.append(&CACHE_STATUS, HeaderValue::from_static("origin; fwd=miss"));
        hit.write("edge", &mut h);
        assert_eq!(h.get_all(&CACHE_STATUS).iter().count(), 1);
        assert_eq!(
            h[&CACHE_STATUS],
            "cdn; hit, origin; fwd=miss, edge; hit; ttl=9"
        );
    }
}
