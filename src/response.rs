//! [`ResponseForRejection`]: replace the answer a layer gives when it rejects a request.
//!
//! Each layer that can reject takes an `on_rejection`-style hook of this trait. Closures work:
//!
//! ```
//! use bulwark::{Rejection, ResponseForRejection};
//! use bytes::Bytes;
//! use http::Response;
//!
//! // Plain text instead of problem+json, same status.
//! let hook = |r: &Rejection| {
//!     let mut res = Response::new(Bytes::from_static(b"slow down"));
//!     *res.status_mut() = r.status();
//!     res
//! };
//! let res = hook.response_for(&Rejection::IdempotencyMismatch);
//! assert_eq!(res.status(), 422);
//! ```
//!
//! Whatever the hook returns, the layer then adds the headers the rejection's protocol requires
//! (`Retry-After`, `RateLimit-Policy`, `RateLimit`) if the hook left them out, and inserts the
//! [`Rejection`] extension, so outer layers always see why the request was rejected.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Response, header};

use crate::Rejection;

/// Builds the response for a [`Rejection`].
///
/// Implemented for [`DefaultResponseForRejection`] (RFC 9457 problem+json) and for closures
/// `Fn(&Rejection) -> Response<Bytes>`.
pub trait ResponseForRejection: Clone + Send + Sync + 'static {
    /// The response to send for `rejection`.
    fn response_for(&self, rejection: &Rejection) -> Response<Bytes>;
}

/// The default answer: status, headers and `application/problem+json` body described in
/// [`Rejection`]'s docs.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DefaultResponseForRejection;

impl ResponseForRejection for DefaultResponseForRejection {
    #[inline]
    fn response_for(&self, rejection: &Rejection) -> Response<Bytes> {
        rejection.default_response()
    }
}

impl<F> ResponseForRejection for F
where
    F: Fn(&Rejection) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    #[inline]
    fn response_for(&self, rejection: &Rejection) -> Response<Bytes> {
        self(rejection)
    }
}

/// Removes the hop-by-hop fields of a message (RFC 9110 section 7.6.1): `Connection` and every
/// field it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, and every
/// `Proxy-*` field (`Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, ...).
///
/// They describe one connection, so they are never stored with a response nor replayed on
/// another: the cache, idempotency replays and the fallback's last good answers all use this,
/// and so does a proxy forwarding a message (`examples/proxy.rs`).
///
/// ```
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("connection", "close, x-private".parse().unwrap());
/// headers.insert("x-private", "1".parse().unwrap());
/// headers.insert("proxy-authenticate", "Basic".parse().unwrap());
/// headers.insert("etag", "\"v1\"".parse().unwrap());
/// bulwark::strip_hop_by_hop(&mut headers);
/// assert_eq!(headers.len(), 1);
/// assert!(headers.contains_key("etag"));
/// ```
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    if headers.keys().any(|n| n.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}
