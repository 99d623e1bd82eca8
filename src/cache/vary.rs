//! `Vary`: which request fields pick a stored variant, and the variant key made of their values
//! (credential headers as a digest, never their values).

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The header names a response varies on, or `None` for `Vary: *`.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for v in headers.get_all(header::VARY) {
        let Ok(v) = v.to_str() else { continue };
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// The request's values of the `Vary` headers, as one string that identifies its variant. The
/// values of credential headers (`Authorization`, `Cookie`, API keys: see
/// [`is_secret_header`](crate::redact::is_secret_header)) are replaced by their digest
/// ([`secret_digest`]): the key becomes a store key name (a Redis key anyone with `SCAN` or
/// `MONITOR` reads) and may be logged.
pub(crate) fn vary_key(names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::new();
    for name in names {
        key.push('\u{1}');
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            key.push('\u{2}');
            continue;
        }
        if crate::redact::is_secret_header(name) {
            key.push_str(&secret_digest(values));
            continue;
        }
        for (i, v) in values.enumerate() {
            if i > 0 {
                key.push_str(", ");
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    key
}

/// What stands for a credential header's values in cache keys and stored requests:
/// `sha256:` and the first 16 bytes of the SHA-256 of the values, in hex. Stable across
/// processes (instances sharing a store must agree on keys), and long enough that two users'
/// credentials never name the same variant.
pub(crate) fn secret_digest<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> String {
    let mut h = crate::digest::Digester::new(b"bulwark cache vary v1");
    for v in values {
        h.field(v.as_bytes());
    }
    format!("sha256:{}", crate::digest::Hex(&h.finish()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn names_are_deduplicated_sorted_and_star_means_never() {
        let names = vary_names(&headers(&[
            ("vary", "Accept-Language, accept"),
            ("vary", "accept-language,,x-tenant"),
        ]))
        .unwrap();
        let names: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "accept-language", "x-tenant"]);
        assert!(vary_names(&headers(&[("vary", "accept, *")])).is_none());
        assert_eq!(vary_names(&HeaderMap::new()), Some(Vec::new()));
    }

    #[test]
    fn the_variant_key_tells_absent_from_empty_and_hides_credentials() {
        let accept = [HeaderName::from_static("accept")];
        let absent = vary_key(&accept, &HeaderMap::new());
        let empty = vary_key(&accept, &headers(&[("accept", "")]));
        assert_ne!(absent, empty);
        let two = vary_key(&accept, &headers(&[("accept", "a"), ("accept", "b")]));
        assert_eq!(two, "\u{1}a, b");

        let auth = [header::AUTHORIZATION];
        let alice = vary_key(&auth, &headers(&[("authorization", "Bearer alice")]));
        let bob = vary_key(&auth, &headers(&[("authorization", "Bearer bob")]));
        assert_ne!(alice, bob, "two users, two variants");
        assert!(!alice.contains("alice"), "never the credential itself");
        assert!(alice.contains("sha256:"));
        assert_eq!(
            alice,
            vary_key(&auth, &headers(&[("authorization", "Bearer alice")])),
            "stable"
        );
    }
}
