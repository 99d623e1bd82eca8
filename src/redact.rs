//! What never reaches a log or a store key in the clear: sensitive headers and secret-looking
//! query values. The request log redacts with it; the cache hashes secret headers in its keys
//! and logs keys through it.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName};

/// Parts of header names that say the field carries a credential: a header whose (lowercase)
/// name contains one is never logged, and its value is hashed in cache keys. Covers
/// `Authorization`, `Proxy-Authorization`, `X-Forwarded-Authorization`, `Cookie`, `Set-Cookie`,
/// `X-Api-Key`, `Idempotency-Key`, `X-Auth-Token`, `X-CSRF-Token`, `X-Amz-Security-Token`,
/// `X-Session-Id`, `X-Signature`, `X-Goog-IAP-JWT-Assertion` and the like.
const SECRET_NAME_PARTS: &[&str] = &[
    "auth",
    "cookie",
    "token",
    "secret",
    "key",
    "session",
    "password",
    "signature",
    "jwt",
    "credential",
];

/// Whether a header's values are secrets, judged by its name (see [`SECRET_NAME_PARTS`]).
pub(crate) fn is_secret_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// Query parameter names (or parts of them) whose values are replaced by `REDACTED`.
pub(crate) const SENSITIVE_QUERY: &[&str] = &[
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "key",
    "signature",
    "sig",
    "auth",
    "session",
    "credential",
    "code",
];

pub(crate) const REDACTED: &str = "REDACTED";

/// Redaction lists, fixed when the layer is built.
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    headers: Vec<HeaderName>,
    query: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            query: SENSITIVE_QUERY.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl Redactor {
    pub(crate) fn add_header(&mut self, name: HeaderName) {
        self.headers.push(name);
    }

    pub(crate) fn add_query(&mut self, name: &str) {
        self.query.push(name.to_ascii_lowercase());
    }

    fn header_is_sensitive(&self, name: &HeaderName) -> bool {
        self.headers.contains(name) || is_secret_header(name)
    }

    fn param_is_sensitive(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        self.query.iter().any(|q| lower.contains(q.as_str()))
    }

    /// The query with every sensitive parameter's value replaced by `REDACTED`, or `None` when
    /// it has no sensitive parameter (log it as it is, without a copy).
    pub(crate) fn redacted_query(&self, query: &str) -> Option<String> {
        let sensitive = query.split('&').any(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            self.param_is_sensitive(name)
        });
        sensitive.then(|| self.query(query))
    }

    /// The query with every sensitive parameter's value replaced by `REDACTED`.
    pub(crate) fn query(&self, query: &str) -> String {
        let mut out = String::with_capacity(query.len());
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if self.param_is_sensitive(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                None if self.param_is_sensitive(pair) => out.push_str(pair),
                _ => out.push_str(pair),
            }
        }
        out
    }

    /// `name: value; name: value` for every header, sensitive values replaced by `REDACTED`,
    /// the query of a `Referer` redacted like the request's own, and values that are not
    /// visible ASCII shown as `<binary>`.
    pub(crate) fn headers(&self, headers: &HeaderMap) -> String {
        let mut out = String::new();
        for (name, value) in headers {
            if !out.is_empty() {
                out.push_str("; ");
            }
            if self.header_is_sensitive(name) {
                let _ = write!(out, "{name}: {REDACTED}");
                continue;
            }
            let Ok(shown) = value.to_str() else {
                let _ = write!(out, "{name}: <binary>");
                continue;
            };
            match shown.split_once('?') {
                Some((url, query)) if name == http::header::REFERER => {
                    let _ = write!(out, "{name}: {url}?{}", self.query(query));
                }
                _ => {
                    let _ = write!(out, "{name}: {shown}");
                }
            }
        }
        out
    }

    /// A cache key as it may be logged: the query's secret values redacted (see
    /// [`Redactor::query`]); the rest of the key (method, authority, path, and the `Vary` part
    /// after a NUL, in which secret headers are already hashed) as it is.
    pub(crate) fn key(key: &str) -> std::borrow::Cow<'_, str> {
        let Some((target, query)) = key.split_once('?') else {
            return key.into();
        };
        let (query, vary) = query.find('\0').map_or((query, ""), |i| query.split_at(i));
        static DEFAULT: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(Redactor::default);
        match DEFAULT.redacted_query(query) {
            Some(q) => format!("{target}?{q}{vary}").into(),
            None => key.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_secrets_are_redacted() {
        let r = Redactor::default();
        assert_eq!(
            r.query("page=2&access_token=abc&q=shoes&api_key=k1&password=hunter2&flag"),
            "page=2&access_token=REDACTED&q=shoes&api_key=REDACTED&password=REDACTED&flag"
        );
        let mut custom = Redactor::default();
        custom.add_query("email");
        assert_eq!(custom.query("email=a@b.c&x=1"), "email=REDACTED&x=1");
        assert_eq!(
            custom.redacted_query("x=1&email=a@b.c").as_deref(),
            Some("x=1&email=REDACTED")
        );
        assert_eq!(custom.redacted_query("x=1&y=2"), None);
        assert_eq!(
            r.redacted_query("flag&password").as_deref(),
            Some("flag&password")
        );
    }

    #[test]
    fn sensitive_headers_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer s3cr3t".parse().unwrap());
        h.insert("cookie", "sid=abc".parse().unwrap());
        h.insert("x-api-key", "k".parse().unwrap());
        h.insert("x-vendor-token", "t".parse().unwrap());
        h.insert("accept", "text/html".parse().unwrap());
        for (name, value) in [
            ("x-forwarded-authorization", "Bearer fwd1"),
            ("x-session-id", "sess1"),
            ("x-client-key", "ck1"),
            ("x-signature", "sig1"),
            ("x-goog-iap-jwt-assertion", "jwt1"),
            ("idempotency-key", "idem1"),
            ("set-cookie", "sid=sc1"),
        ] {
            h.insert(name, value.parse().unwrap());
        }
        h.insert(
            "referer",
            "https://shop.example/reset?token=ref1&step=2"
                .parse()
                .unwrap(),
        );
        let mut r = Redactor::default();
        r.add_header(HeaderName::from_static("x-tenant"));
        h.insert("x-tenant", "acme".parse().unwrap());
        let out = r.headers(&h);
        for secret in [
            "s3cr3t", "sid=abc", ": k", ": t;", "acme", "fwd1", "sess1", "ck1", "sig1", "jwt1",
            "idem1", "sc1", "ref1",
        ] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("accept: text/html"));
        assert!(out.contains("referer: https://shop.example/reset?token=REDACTED&step=2"));
    }

    #[test]
    fn cache_keys_are_logged_without_query_secrets() {
        assert_eq!(Redactor::key("GET a/p?x=1"), "GET a/p?x=1");
        assert_eq!(Redactor::key("GET a/p"), "GET a/p");
        assert_eq!(
            Redactor::key("GET a/dl?token=T0P&x=1\0a\0\u{1}gzip"),
            "GET a/dl?token=REDACTED&x=1\0a\0\u{1}gzip"
        );
    }
}
