//! The response fields that decide caching, as the cache reads them: `Cache-Control`
//! directives, targeted cache control (RFC 9213) standing in for them, qualified `no-cache` and
//! `private` field lists, and `Age`.

use std::{borrow::Cow, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The `Cache-Control` directives the layer itself looks at.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) s_maxage: bool,
    pub(crate) max_age: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

/// Splits a `Cache-Control` value into `(name, argument, raw text)` directives, honouring quoted
/// arguments (`no-cache="a, b"` is one directive).
pub(crate) fn split_directives(value: &str) -> Vec<(&str, Option<&str>, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let bytes = value.as_bytes();
    for i in 0..=bytes.len() {
        let end = i == bytes.len();
        if !end && bytes[i] == b'"' {
            quoted = !quoted;
        }
        if end || (bytes[i] == b',' && !quoted) {
            let raw = value[start..i].trim();
            start = i + 1;
            if raw.is_empty() {
                continue;
            }
            let (name, arg) = match raw.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (raw, None),
            };
            out.push((name, arg, raw));
        }
    }
    out
}

impl Directives {
    pub(crate) fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let mut d = Self::default();
        for value in values {
            let Ok(value) = value.to_str() else { continue };
            for (name, arg, _) in split_directives(value) {
                let secs = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    // The qualified forms (`no-cache="field"`, `private="field"`) only keep the
                    // listed fields out of the cache (see `effective_headers`).
                    "no-cache" if arg.is_none() => d.no_cache = true,
                    "private" if arg.is_none() => d.private = true,
                    "public" => d.public = true,
                    "s-maxage" => d.s_maxage = true,
                    "max-age" => d.max_age = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "only-if-cached" => d.only_if_cached = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                    "stale-if-error" => d.stale_if_error = secs(),
                    _ => {}
                }
            }
        }
        d
    }

    /// `public`, `s-maxage` or `must-revalidate`: the response may be stored for, and served to,
    /// requests with `Authorization` (RFC 9111 section 3.5).
    pub(crate) fn allows_authorized(&self) -> bool {
        self.public || self.s_maxage || self.must_revalidate
    }
}

/// The largest `Age` a cache reports (RFC 9111 section 5.1): larger or unparsable-but-numeric
/// values are replaced by it before the policy sees them.
pub(crate) const MAX_AGE_VALUE: u64 = 2_147_483_648;
/// The longest any entry is kept or considered fresh, whatever its headers say: keeps time
/// arithmetic far from overflow and stores' expiry values sane.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The response headers that decide caching: with targeted cache control (RFC 9213), the target
/// field's value stands in for `Cache-Control`, and `Expires` and `Pragma` are ignored. An
/// `Age` beyond 2^31 seconds is capped.
pub(crate) fn effective_headers<'a>(
    target: Option<&HeaderName>,
    headers: &'a HeaderMap,
) -> Cow<'a, HeaderMap> {
    let mut out = Cow::Borrowed(headers);
    if let Some(target) = target.filter(|t| headers.contains_key(*t)) {
        let h = out.to_mut();
        h.remove(header::CACHE_CONTROL);
        h.remove(header::EXPIRES);
        h.remove(header::PRAGMA);
        for v in headers.get_all(target) {
            h.append(header::CACHE_CONTROL, v.clone());
        }
    }
    // Qualified `no-cache="a, b"` and `private="a"` (RFC 9111 sections 5.2.2.4 and 5.2.2.7):
    // the response may be stored without the listed fields, so the policy sees the directive
    // removed and `omitted_fields` lists the fields to drop from the stored copy.
    let qualified = out
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| !qualified_fields(v).is_empty()));
    if qualified {
        let values: Vec<String> = out
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| {
                split_directives(v)
                    .into_iter()
                    .filter(|(n, a, _)| {
                        !(a.is_some()
                            && (n.eq_ignore_ascii_case("no-cache")
                                || n.eq_ignore_ascii_case("private")))
                    })
                    .map(|(_, _, raw)| raw)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        let h = out.to_mut();
        h.remove(header::CACHE_CONTROL);
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            if let Ok(v) = HeaderValue::try_from(v) {
                h.append(header::CACHE_CONTROL, v);
            }
        }
    }
    // Directive names are case-insensitive (RFC 9111 section 5.2), but the policy library
    // looks them up as written: `No-Cache` would be ignored. Lowercased whole: the arguments
    // that matter (numbers, field names) are case-insensitive too.
    let upper = out
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.as_bytes().iter().any(u8::is_ascii_uppercase));
    if upper {
        let values: Vec<HeaderValue> = out
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(&v.as_bytes().to_ascii_lowercase()).ok())
            .collect();
        let h = out.to_mut();
        h.remove(header::CACHE_CONTROL);
        for v in values {
            h.append(header::CACHE_CONTROL, v);
        }
    }
    match headers.get(header::AGE).map(|v| age_value(v.as_bytes())) {
        None | Some(Age::Valid) => {}
        Some(Age::TooBig) => {
            out.to_mut()
                .insert(header::AGE, HeaderValue::from(MAX_AGE_VALUE));
        }
        // Not `1*DIGIT` (RFC 9111 section 5.1), e.g. `+5`, which the policy library would
        // still parse (and overflow on, if huge): ignored, as the RFC asks.
        Some(Age::Invalid) => {
            out.to_mut().remove(header::AGE);
        }
    }
    out
}

pub(crate) enum Age {
    Valid,
    TooBig,
    Invalid,
}

/// How an `Age` value reads: digits only (surrounding spaces allowed), at most 2^31.
pub(crate) fn age_value(v: &[u8]) -> Age {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Age::Invalid;
    }
    // Digits only, so UTF-8; too many digits fail to parse as u64.
    match std::str::from_utf8(v)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(n) if n <= MAX_AGE_VALUE => Age::Valid,
        _ => Age::TooBig,
    }
}

/// The fields listed by qualified `no-cache="..."` and `private="..."` directives.
pub(crate) fn qualified_fields(value: &str) -> Vec<HeaderName> {
    split_directives(value)
        .into_iter()
        .filter(|(n, _, _)| n.eq_ignore_ascii_case("no-cache") || n.eq_ignore_ascii_case("private"))
        .filter_map(|(_, a, _)| a)
        .flat_map(|a| a.split(','))
        .filter_map(|f| HeaderName::from_bytes(f.trim().as_bytes()).ok())
        .collect()
}

/// The `Age` a response arrived with, in seconds; 0 without a valid one.
pub(crate) fn initial_age(headers: &HeaderMap) -> u64 {
    let Some(v) = headers.get(header::AGE) else {
        return 0;
    };
    match age_value(v.as_bytes()) {
        Age::Valid => std::str::from_utf8(v.as_bytes().trim_ascii())
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        Age::TooBig => MAX_AGE_VALUE,
        Age::Invalid => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn directives_parse() {
        let v = HeaderValue::from_static(
            "public, max-age=10, stale-while-revalidate=30, Stale-If-Error=\"60\"",
        );
        let d = Directives::parse([&v]);
        assert!(d.public && !d.private);
        assert_eq!(d.stale_while_revalidate, Some(30));
        assert_eq!(d.stale_if_error, Some(60));
    }
}
