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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{policy::testing, store::CacheStore};

    fn shared() -> Shared {
        Shared::new(testing::policy(), CacheStore::memory(1 << 20), None)
    }

    fn post(uri: &str, host: Option<&'static str>) -> Request<()> {
        let mut req = Request::post(uri).body(()).unwrap();
        if let Some(h) = host {
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_static(h));
        }
        req
    }

    fn answer(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(n.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_unsafe_methods_invalidate() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(is_safe(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(!is_safe(&m), "{m}");
        }
    }

    #[test]
    fn the_target_and_same_host_locations_are_invalidated() {
        let shared = shared();
        let target = InvalidationTarget::of(&shared, &post("/carts/1", Some("shop.test")));
        let keys = target.keys(
            &shared,
            &answer(&[
                (header::LOCATION, "/carts/1/items/9"),
                (header::CONTENT_LOCATION, "http://shop.test/carts/1"),
            ]),
        );
        assert_eq!(
            keys,
            ["GET shop.test/carts/1", "GET shop.test/carts/1/items/9"],
            "the duplicate Content-Location is one key"
        );
    }

    #[test]
    fn another_hosts_location_is_left_alone() {
        let shared = shared();
        let target = InvalidationTarget::of(&shared, &post("/carts/1", Some("shop.test")));
        let keys = target.keys(
            &shared,
            &answer(&[(header::LOCATION, "http://evil.test/carts/1")]),
        );
        assert_eq!(keys, ["GET shop.test/carts/1"]);
    }
}
