//! The layer's settings, shared by all its services, and the request checks that depend on them.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_cache_semantics::CacheOptions;

/// How freshness is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every storable 2xx answer is fresh for this long, whatever its headers say.
    Forced(Duration),
    /// RFC 9111 shared-cache rules from the response's headers.
    Policy,
}

/// The layer's settings, shared by all its services.
#[derive(Debug, Clone)]
pub(crate) struct CacheSettings {
    pub(crate) name: HeaderValue,
    pub(crate) mode: Mode,
    pub(crate) heuristic: f32,
    pub(crate) target: Option<HeaderName>,
    pub(crate) allow_authorized: bool,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) validator_retention: Duration,
    pub(crate) max_body: usize,
    pub(crate) coalesce_wait: Duration,
}

impl CacheSettings {
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            name: HeaderValue::from_static("bulwark"),
            mode,
            heuristic: 0.0,
            target: None,
            allow_authorized: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            validator_retention: Duration::from_secs(300),
            max_body: 1024 * 1024,
            coalesce_wait: Duration::from_secs(10),
        }
    }

    pub(crate) fn options(&self) -> CacheOptions {
        CacheOptions {
            shared: true,
            cache_heuristic: self.heuristic,
            immutable_min_time_to_live: Duration::ZERO,
            ignore_cargo_cult: false,
        }
    }
}

/// Whether a request is "restricted": it carries credentials (`Authorization`, `Cookie`) and the
/// layer was not told to cache such requests.
/// Whether a request has none of the fields the hit path looks at (`Range`, `Authorization`,
/// `Cookie`, `Cache-Control`, `Pragma`, `If-None-Match`, `If-Modified-Since`), found in one pass
/// over its few fields instead of a lookup (a hash) per name. Requests with many fields are not
/// scanned: `false` only means "look each up".
pub(crate) fn plain(headers: &HeaderMap) -> bool {
    headers.len() <= 16
        && headers.keys().all(|n| {
            n != header::RANGE
                && n != header::AUTHORIZATION
                && n != header::COOKIE
                && n != header::CACHE_CONTROL
                && n != header::PRAGMA
                && n != header::IF_NONE_MATCH
                && n != header::IF_MODIFIED_SINCE
        })
}

pub(crate) fn is_restricted(cfg: &CacheSettings, headers: &HeaderMap) -> bool {
    !cfg.allow_authorized
        && (headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn plain_requests() {
        let mut h = HeaderMap::new();
        assert!(plain(&h));
        h.insert("x-request-id", HeaderValue::from_static("a"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("b"));
        assert!(plain(&h));
        for name in [
            header::RANGE,
            header::AUTHORIZATION,
            header::COOKIE,
            header::CACHE_CONTROL,
            header::PRAGMA,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ] {
            let mut with = h.clone();
            with.insert(name.clone(), HeaderValue::from_static("x"));
            assert!(!plain(&with), "{name}");
        }
        for i in 0..20 {
            h.insert(
                HeaderName::try_from(format!("x-{i}")).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert!(!plain(&h), "many fields are looked up one by one");
    }
}

/// Request and response heads for the cache's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use http::{request, response};

    use super::{CacheSettings, Mode};

    pub(crate) fn req(headers: &[(&str, &str)]) -> request::Parts {
        let mut b = http::Request::get("/p");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    pub(crate) fn res(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut b = http::Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    pub(crate) fn policy() -> CacheSettings {
        CacheSettings::new(Mode::Policy)
    }
}
