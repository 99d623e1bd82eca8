//! The request fingerprint and the store key (scope + idempotency key), as SHA-256 digests
//! made with the crate's [`Digester`](crate::digest::Digester).

use std::fmt;

use http::{HeaderMap, HeaderName, Method, Uri, header::CONTENT_TYPE};

use super::IdempotencyKey;
use crate::digest::{Digester, Hex};

/// The SHA-256 digest of what makes two requests "the same request": method, path and query,
/// `Content-Type`, the configured extra headers, the scope, and the body.
///
/// A key reused with a different fingerprint is answered with
/// [`Rejection::IdempotencyMismatch`](crate::Rejection::IdempotencyMismatch).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// A fingerprint from its 32 bytes (for stores that keep it elsewhere).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's 32 bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", Hex(&self.0[..6]))
    }
}

/// Where a key's claim and record live in a store: the SHA-256 of the scope and the
/// idempotency key. Stores never see the raw key or the scope.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// The store key of `key` in `scope` (`None`: the shared anonymous scope, distinct from
    /// every `Some` scope, including an empty one).
    #[must_use]
    pub fn new(scope: Option<&[u8]>, key: &IdempotencyKey) -> Self {
        let mut h = Digester::new(b"bulwark idempotency store key v1");
        h.optional(scope);
        h.field(key.as_str().as_bytes());
        Self(h.finish())
    }

    /// A store key from its 32 bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's 32 bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits (the Redis store's key suffix).
    #[must_use]
    pub fn to_hex(&self) -> String {
        Hex(&self.0).to_string()
    }

    /// The first 12 hex digits: what logs show for the key.
    #[must_use]
    pub fn short(&self) -> impl fmt::Display + Copy + '_ {
        Hex(&self.0[..6])
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({})", Hex(&self.0[..6]))
    }
}

/// The fingerprint of a request whose head is known and whose body is still to be read.
#[derive(Clone)]
pub(crate) struct FingerprintHasher(Digester);

impl FingerprintHasher {
    pub(crate) fn new(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extra_headers: &[HeaderName],
        scope: Option<&[u8]>,
    ) -> Self {
        let mut h = Digester::new(b"bulwark idempotency fingerprint v1");
        h.field(method.as_str().as_bytes());
        h.field(
            uri.path_and_query()
                .map_or("/", |pq| pq.as_str())
                .as_bytes(),
        );
        header_values(&mut h, headers, &CONTENT_TYPE);
        h.count(extra_headers.len());
        for name in extra_headers {
            h.field(name.as_str().as_bytes());
            header_values(&mut h, headers, name);
        }
        h.optional(scope);
        Self(h)
    }

    pub(crate) fn finish(mut self, body: &[u8]) -> Fingerprint {
        self.0.field(body);
        Fingerprint(self.0.finish())
    }
}

fn header_values(h: &mut Digester, headers: &HeaderMap, name: &HeaderName) {
    let values = headers.get_all(name);
    h.count(values.iter().count());
    for v in values {
        h.field(v.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request};

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::parse(s.as_bytes()).unwrap()
    }

    fn fp(
        req: &Request<()>,
        extra: &[HeaderName],
        scope: Option<&[u8]>,
        body: &[u8],
    ) -> Fingerprint {
        FingerprintHasher::new(req.method(), req.uri(), req.headers(), extra, scope).finish(body)
    }

    #[test]
    fn store_keys_separate_scopes() {
        let k = key("abc");
        assert_eq!(StoreKey::new(None, &k), StoreKey::new(None, &k));
        assert_ne!(StoreKey::new(None, &k), StoreKey::new(Some(b""), &k));
        assert_ne!(StoreKey::new(Some(b"a"), &k), StoreKey::new(Some(b"b"), &k));
        assert_ne!(StoreKey::new(None, &k), StoreKey::new(None, &key("abd")));
        assert_eq!(StoreKey::new(None, &k).to_hex().len(), 64);
        assert_eq!(StoreKey::new(None, &k).short().to_string().len(), 12);
    }

    #[test]
    fn fingerprint_covers_every_part() {
        let base = Request::post("/pay?x=1")
            .header("content-type", "application/json")
            .header("x-tenant", "t1")
            .body(())
            .unwrap();
        let tenant = [HeaderName::from_static("x-tenant")];
        let reference = fp(&base, &tenant, Some(b"s"), b"{}");
        assert_eq!(reference, fp(&base, &tenant, Some(b"s"), b"{}"));

        let mut other = Request::patch("/pay?x=1").body(()).unwrap();
        *other.headers_mut() = base.headers().clone();
        assert_ne!(reference, fp(&other, &tenant, Some(b"s"), b"{}"), "method");

        let mut other = Request::post("/pay?x=2").body(()).unwrap();
        *other.headers_mut() = base.headers().clone();
        assert_ne!(reference, fp(&other, &tenant, Some(b"s"), b"{}"), "query");

        let mut other = Request::post("/pay?x=1").body(()).unwrap();
        *other.headers_mut() = base.headers().clone();
        other
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        assert_ne!(reference, fp(&other, &tenant, Some(b"s"), b"{}"), "type");
        other
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        other
            .headers_mut()
            .insert("x-tenant", HeaderValue::from_static("t2"));
        assert_ne!(reference, fp(&other, &tenant, Some(b"s"), b"{}"), "header");
        assert_eq!(
            fp(&base, &[], Some(b"s"), b"{}"),
            fp(&other, &[], Some(b"s"), b"{}"),
            "headers not configured are ignored"
        );

        assert_ne!(reference, fp(&base, &tenant, Some(b"t"), b"{}"), "scope");
        assert_ne!(reference, fp(&base, &tenant, None, b"{}"), "no scope");
        assert_ne!(reference, fp(&base, &tenant, Some(b"s"), b"{ }"), "body");
    }
}
