//! Conditional requests (RFC 9110 section 13): the cache's own validators on revalidation, an
//! origin's `304` applied to the stored entry, and clients' `If-None-Match` and
//! `If-Modified-Since` answered from it.

use http::{HeaderMap, HeaderValue, StatusCode, header, request, response};

use super::entry::Stored;
use crate::strip_hop_by_hop;

impl Stored {
    /// Adds this entry's validators to a request that is about to revalidate it, unless the client
    /// sent its own conditional fields. Returns whether it added any.
    pub(crate) fn add_validators(&self, headers: &mut HeaderMap) -> bool {
        if headers.contains_key(header::IF_NONE_MATCH)
            || headers.contains_key(header::IF_MODIFIED_SINCE)
            || headers.contains_key(header::IF_MATCH)
            || headers.contains_key(header::IF_UNMODIFIED_SINCE)
            || headers.contains_key(header::IF_RANGE)
        {
            return false;
        }
        if let Some(etag) = self.response.headers.get(header::ETAG) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
            true
        } else if let Some(lm) = self.response.headers.get(header::LAST_MODIFIED) {
            headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
            true
        } else {
            false
        }
    }

    /// The stored headers updated with a `304 Not Modified` answer's (RFC 9111 section 3.2).
    pub(crate) fn refreshed_head(&self, not_modified: &response::Parts) -> response::Parts {
        let mut headers = self.response.headers.clone();
        for name in not_modified.headers.keys() {
            if name == header::CONTENT_LENGTH
                || name == header::CONTENT_ENCODING
                || name == header::TRANSFER_ENCODING
            {
                continue;
            }
            headers.remove(name);
            for v in not_modified.headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        strip_hop_by_hop(&mut headers);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = self.response.status;
        parts.headers = headers;
        parts
    }

    /// Whether a `304` from the origin speaks about this entry (its validator matches, or it
    /// carries none to compare).
    pub(crate) fn matches_not_modified(&self, not_modified: &response::Parts) -> bool {
        match (
            not_modified.headers.get(header::ETAG),
            self.response.headers.get(header::ETAG),
        ) {
            (Some(new), Some(old)) => weak_eq(new.as_bytes(), old.as_bytes()),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// Whether the client's own conditional request (`If-None-Match`, else `If-Modified-Since`)
    /// is satisfied by this entry, so the answer is `304 Not Modified`.
    pub(crate) fn not_modified_for(&self, req: &request::Parts) -> bool {
        not_modified(self.response.status, &self.response.headers, req)
    }
}

/// Whether a response (`status`, `headers`) satisfies the client's own conditional request
/// (`If-None-Match`, else `If-Modified-Since`), so the client is answered `304 Not Modified`.
pub(crate) fn not_modified(status: StatusCode, headers: &HeaderMap, req: &request::Parts) -> bool {
    if status != StatusCode::OK {
        return false;
    }
    if let Some(inm) = req.headers.get(header::IF_NONE_MATCH) {
        let Some(etag) = headers.get(header::ETAG) else {
            return false;
        };
        let Ok(inm) = inm.to_str() else { return false };
        return inm.trim() == "*"
            || inm
                .split(',')
                .any(|t| weak_eq(t.trim().as_bytes(), etag.as_bytes()));
    }
    if let Some(ims) = req.headers.get(header::IF_MODIFIED_SINCE) {
        let parse = |v: &HeaderValue| {
            v.to_str()
                .ok()
                .and_then(|s| httpdate::parse_http_date(s).ok())
        };
        let (Some(ims), Some(lm)) = (
            parse(ims),
            headers.get(header::LAST_MODIFIED).and_then(parse),
        ) else {
            return false;
        };
        return lm <= ims;
    }
    false
}

/// Takes the client's cache-validating conditionals (`If-None-Match`, `If-Modified-Since`) off
/// a request the cache forwards to fill or refresh an entry.
///
/// Forwarded as they are, they make the origin answer `304`, which cannot be stored: the entry
/// stays empty or stale for as long as clients revalidate, and every request waiting on this
/// one calls the origin itself. Without them the origin sends the full answer (or, for a
/// stale entry, a `304` to the cache's own validators), the cache stores it, and answers the
/// client `304` itself when its conditional matches (RFC 9111 section 4.3.2).
pub(crate) fn take_client_validators(headers: &mut HeaderMap) {
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
}

/// Weak entity-tag comparison (RFC 9110 section 8.8.3.2).
pub(crate) fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    pub(crate) fn strip(t: &[u8]) -> &[u8] {
        t.strip_prefix(b"W/").unwrap_or(t)
    }
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use crate::cache::{
        policy::testing::{policy, req, res},
        storable::decide,
    };

    #[test]
    pub(crate) fn conditional_matching() {
        let now = SystemTime::now();
        let r = res(
            200,
            &[
                ("cache-control", "max-age=5"),
                ("etag", "W/\"v1\""),
                ("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT"),
            ],
        );
        let s = decide(&policy(), &req(&[]), &r, now)
            .ok()
            .unwrap()
            .into_stored(&r, Bytes::new());
        assert!(s.not_modified_for(&req(&[("if-none-match", "\"v0\", \"v1\"")])));
        assert!(!s.not_modified_for(&req(&[("if-none-match", "\"v2\"")])));
        assert!(s.not_modified_for(&req(&[(
            "if-modified-since",
            "Tue, 24 Nov 2026 11:00:00 GMT"
        )])));
        assert!(!s.not_modified_for(&req(&[(
            "if-modified-since",
            "Tue, 24 Nov 2026 09:00:00 GMT"
        )])));
    }
}
