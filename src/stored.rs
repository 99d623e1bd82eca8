//! [`StoredResponse`]: a response kept whole to be answered again later — the one shape the
//! cache, the fallback's last good answers and idempotency replays keep, with the one rule for
//! what is kept ([`end_to_end`]: hop-by-hop fields never are), the one way back to a response,
//! and the one weight memory bounds count in.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Response, StatusCode, Version, header, response};

use crate::body::ResponseBody;

/// A response kept for replay: status, end-to-end headers and body.
///
/// Idempotency stores keep one per completed key (see
/// [`idempotency::store`](crate::idempotency::store) for its byte form); the cache and the
/// fallback keep the same parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status, replayed as is (a 201 stays 201).
    pub status: StatusCode,
    /// The headers, without hop-by-hop fields.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl StoredResponse {
    /// Keeps a response's status, end-to-end headers ([`end_to_end`]) and whole body.
    pub(crate) fn capture(head: &response::Parts, body: Bytes) -> Self {
        Self {
            status: head.status,
            headers: end_to_end(&head.headers),
            body,
        }
    }

    /// About how many bytes the response takes in a store.
    #[must_use]
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 8)
            .sum();
        self.body.len() + headers + 16
    }

    /// The response again, with `version` (the body shares the kept bytes).
    pub(crate) fn to_response(&self, version: Version) -> Response<Bytes> {
        let mut res = Response::new(self.body.clone());
        *res.status_mut() = self.status;
        *res.version_mut() = version;
        *res.headers_mut() = self.headers.clone();
        res
    }

    /// The response again, as a layer answers it.
    pub(crate) fn replay<B>(&self) -> Response<ResponseBody<B>> {
        let mut res = Response::new(ResponseBody::full(self.body.clone()));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        res
    }
}

/// Whether a field describes one connection rather than the message: `Connection`,
/// `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and every `Proxy-*` field
/// (RFC 9110 section 7.6.1). Fields that a `Connection` field names are hop-by-hop too;
/// [`end_to_end`] drops those as well.
#[inline]
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// The end-to-end fields of `headers`, in their order: what a kept response keeps. One pass of
/// copies when there is no `Connection` field (the common case); with one, the fields it names
/// are dropped too ([`strip_hop_by_hop`](crate::strip_hop_by_hop)).
pub(crate) fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    if headers.contains_key(header::CONNECTION) {
        let mut kept = headers.clone();
        crate::strip_hop_by_hop(&mut kept);
        return kept;
    }
    let mut kept = HeaderMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        if !is_hop_by_hop(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::BodyExt;

    fn head(headers: &[(&'static str, &'static str)]) -> response::Parts {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::CREATED;
        for (n, v) in headers {
            res.headers_mut().append(*n, HeaderValue::from_static(v));
        }
        res.into_parts().0
    }

    #[test]
    fn capture_keeps_end_to_end_fields_in_order() {
        let kept = StoredResponse::capture(
            &head(&[
                ("set-cookie", "a=1"),
                ("transfer-encoding", "chunked"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic"),
                ("set-cookie", "b=2"),
                ("etag", "\"v1\""),
            ]),
            Bytes::from_static(b"ok"),
        );
        let fields: Vec<_> = kept
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("etag", "\"v1\"")
            ]
        );
        assert_eq!(kept.status, StatusCode::CREATED);
    }

    #[test]
    fn fields_named_by_connection_are_not_kept() {
        let kept = StoredResponse::capture(
            &head(&[
                ("connection", "x-private"),
                ("x-private", "1"),
                ("etag", "1"),
            ]),
            Bytes::new(),
        );
        assert_eq!(kept.headers.len(), 1);
        assert!(kept.headers.contains_key("etag"));
    }

    #[tokio::test]
    async fn a_replay_is_the_kept_response() {
        let kept = StoredResponse::capture(&head(&[("etag", "1")]), Bytes::from_static(b"body"));
        let res = kept.replay::<http_body_util::Empty<Bytes>>();
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(res.headers(), &kept.headers);
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "body");
        let res = kept.to_response(Version::HTTP_2);
        assert_eq!(res.version(), Version::HTTP_2);
        assert_eq!(res.body(), "body");
        assert_eq!(kept.weight(), 4 + (4 + 1 + 8) + 16);
    }
}
