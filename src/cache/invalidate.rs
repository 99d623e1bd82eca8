//! Invalidation after unsafe requests (RFC 9111 section 4.4): which stored answers a
//! successful `POST`, `PUT`, `DELETE`... makes stale, and removing them.

use http::{HeaderMap, HeaderValue, Method, Request, header, response};

use super::{
    shared::Shared,
    status::{CacheOutcome, CacheStatus},
};

/// Methods that are safe (RFC 9110 section 9.2.1): they never invalidate.
pub(super) fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// What a successful unsafe request invalidates (RFC 9111 section 4.4): its target URI, and the
/// URIs in `Location` and `Content-Location` when they are on the same host.
pub(crate) struct InvalidationTarget {
    key: Option<String>,
    host: Option<HeaderValue>,
    authority: Option<http::uri::Authority>,
}

impl InvalidationTarget {
    pub(super) fn of<B>(shared: &Shared, req: &Request<B>) -> Self {
        let mut parts = Request::new(()).into_parts().0;
        parts.uri = req.uri().clone();
        parts.headers = req
            .headers()
            .get(header::HOST)
            .map(|h| {
                let mut m = HeaderMap::with_capacity(1);
                m.insert(header::HOST, h.clone());
                m
            })
            .unwrap_or_default();
        Self {
            key: shared.make_key(&parts),
            host: req.headers().get(header::HOST).cloned(),
            authority: req.uri().authority().cloned(),
        }
    }

    pub(crate) fn keys(self, shared: &Shared, res: &HeaderMap) -> Vec<String> {
        let mut keys: Vec<String> = self.key.into_iter().collect();
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = res
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = match uri.authority() {
                None => true,
                Some(a) => {
                    self.authority.as_ref() == Some(a)
                        || self
                            .host
                            .as_ref()
                            .is_some_and(|h| h.as_bytes() == a.as_str().as_bytes())
                }
            };
            if !same_host || uri.path().is_empty() {
                continue;
            }
            let mut parts = Request::new(()).into_parts().0;
            parts.uri = uri;
            if let Some(h) = &self.host {
                parts.headers.insert(header::HOST, h.clone());
            }
            if let Some(k) = shared.make_key(&parts) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    pub(crate) fn report(shared: &Shared, parts: &mut response::Parts) {
        let mut s = CacheStatus::new(CacheOutcome::Method);
        s.fwd_status = Some(parts.status.as_u16());
        shared.report(s, &mut parts.headers, None);
        parts.extensions.insert(s);
    }
}
