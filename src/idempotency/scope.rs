//! Scopes: the namespace an idempotency key lives in, so two principals using the same key never
//! see each other's requests or responses.

use http::{HeaderName, HeaderValue, Request, header::AUTHORIZATION};

use crate::digest::sha256;

/// Finds the namespace of a request's idempotency key, usually the authenticated principal.
///
/// Keys are only compared within one scope: the same key sent by two scopes is two different
/// keys. `None` is the shared anonymous scope: every request without a scope meets every other
/// one there, so a route that anonymous clients can call should use a scope that tells them
/// apart, or require authentication before this layer.
///
/// Implemented for [`AuthorizationScope`] (the default), [`HeaderScope`], and closures
/// `Fn(&Request<B>) -> Option<T>` where `T: AsRef<[u8]>`, e.g. a principal that an outer
/// authentication layer put in the request extensions:
///
/// ```
/// use bulwark::idempotency::{IdempotencyLayer, IdempotencyStore};
/// use http::Request;
///
/// #[derive(Clone)]
/// struct UserId(String);
///
/// let layer = IdempotencyLayer::new(IdempotencyStore::memory()).scope(
///     |req: &Request<axum::body::Body>| req.extensions().get::<UserId>().map(|u| u.0.clone()),
/// );
/// # let _ = layer;
/// ```
pub trait ScopeExtractor<B>: Clone + Send + Sync + 'static {
    /// The scope's bytes (hashed into the store key and the fingerprint, never stored as such).
    type Scope: AsRef<[u8]>;

    /// The scope of `req`; `None` for the shared anonymous scope.
    fn extract(&self, req: &Request<B>) -> Option<Self::Scope>;
}

impl<F, B, T> ScopeExtractor<B> for F
where
    F: Fn(&Request<B>) -> Option<T> + Clone + Send + Sync + 'static,
    T: AsRef<[u8]>,
{
    type Scope = T;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<T> {
        self(req)
    }
}

/// The default scope: the SHA-256 of the request's `Authorization` field values, so each
/// credential has its own keys. Requests without `Authorization` share the anonymous scope.
///
/// Only the hash is kept, never the credential.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct AuthorizationScope;

impl AuthorizationScope {
    /// The default scope.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl<B> ScopeExtractor<B> for AuthorizationScope {
    type Scope = [u8; 32];

    fn extract(&self, req: &Request<B>) -> Option<[u8; 32]> {
        let mut values = req.headers().get_all(AUTHORIZATION).iter();
        let first = values.next()?;
        match values.next() {
            None => Some(sha256(first.as_bytes())),
            Some(second) => {
                // Rare: several fields. Hash them all, each with its length.
                let mut all = Vec::new();
                for v in [first, second].into_iter().chain(values) {
                    all.extend_from_slice(&(v.len() as u64).to_be_bytes());
                    all.extend_from_slice(v.as_bytes());
                }
                Some(sha256(&all))
            }
        }
    }
}

/// A header's value as the scope, e.g. a tenant or user id set by an authenticating proxy you
/// trust (a client-set header is no boundary: anyone can send any value).
#[derive(Debug, Clone)]
pub struct HeaderScope {
    name: HeaderName,
}

impl HeaderScope {
    /// The value of the header `name` (its first field) is the scope.
    #[must_use]
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl<B> ScopeExtractor<B> for HeaderScope {
    type Scope = HeaderValue;

    fn extract(&self, req: &Request<B>) -> Option<HeaderValue> {
        req.headers().get(&self.name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_scope_hashes_the_credential() {
        let a = Request::get("/")
            .header("authorization", "Bearer a")
            .body(())
            .unwrap();
        let b = Request::get("/")
            .header("authorization", "Bearer b")
            .body(())
            .unwrap();
        let none = Request::get("/").body(()).unwrap();
        let sa = AuthorizationScope.extract(&a).unwrap();
        assert_eq!(sa, sha256(b"Bearer a"));
        assert_ne!(Some(sa), AuthorizationScope.extract(&b));
        assert_eq!(AuthorizationScope.extract(&none), None);
    }

    #[test]
    fn header_and_closure_scopes() {
        let req = Request::get("/").header("x-tenant", "t1").body(()).unwrap();
        let scope = HeaderScope::new(HeaderName::from_static("x-tenant"));
        assert_eq!(scope.extract(&req).unwrap(), "t1");
        let closure = |r: &Request<()>| r.headers().get("x-tenant").map(|v| v.as_bytes().to_vec());
        assert_eq!(closure.extract(&req).unwrap(), b"t1");
    }
}
