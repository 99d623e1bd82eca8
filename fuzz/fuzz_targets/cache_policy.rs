//! The cache's storing decision and freshness on arbitrary request and response heads
//! (`Cache-Control`, `CDN-Cache-Control`, `Age`, `Expires`, `Date`, `Last-Modified`, `Vary`,
//! `Set-Cookie`, credentials, validators): the origin is only half trusted. Checked: nothing
//! refused by the rules is stored; a lifetime is never negative, never past the cache's
//! ceiling, and never longer than the longest `max-age`/`s-maxage` the response gave; no stale
//! serving after `no-cache`/`must-revalidate`; a stored entry answers its own request; its
//! bytes read back to the same entry.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use bulwark::cache::{
    Entry,
    fuzzing::{MAX_LIFETIME, Settings, decide},
};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;

const DIRECTIVES: [&str; 16] = [
    "max-age",
    "s-maxage",
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "stale-while-revalidate",
    "stale-if-error",
    "immutable",
    "no-transform",
    "only-if-cached",
    "max-stale",
    "min-fresh",
    "Max-Age",
];

#[derive(Arbitrary, Debug)]
enum Directive<'a> {
    Bare(u8),
    Number(u8, u32),
    Quoted(u8, &'a str),
    Raw(&'a str),
}

impl Directive<'_> {
    fn render(&self) -> String {
        let name = |n: &u8| DIRECTIVES[usize::from(*n) % DIRECTIVES.len()];
        match self {
            Directive::Bare(n) => name(n).to_owned(),
            Directive::Number(n, v) => format!("{}={v}", name(n)),
            Directive::Quoted(n, v) => format!("{}=\"{v}\"", name(n)),
            Directive::Raw(s) => (*s).to_owned(),
        }
    }
}

const FIELDS: [&str; 18] = [
    "cache-control",
    "cdn-cache-control",
    "age",
    "expires",
    "date",
    "last-modified",
    "vary",
    "etag",
    "set-cookie",
    "pragma",
    "content-type",
    "authorization",
    "cookie",
    "accept",
    "accept-encoding",
    "if-none-match",
    "if-modified-since",
    "x-other",
];

#[derive(Arbitrary, Debug)]
enum Value<'a> {
    Directives(Vec<Directive<'a>>),
    /// An HTTP date this many seconds from now.
    Date(i32),
    Number(u64),
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Field<'a> {
    name: u8,
    value: Value<'a>,
}

impl Field<'_> {
    fn name(&self) -> &'static str {
        FIELDS[usize::from(self.name) % FIELDS.len()]
    }

    fn value(&self, now: SystemTime) -> Option<HeaderValue> {
        match &self.value {
            Value::Directives(d) => {
                let text: Vec<String> = d.iter().map(Directive::render).collect();
                HeaderValue::from_str(&text.join(", ")).ok()
            }
            // Dates from 1902 to 2038 around a "now" in 2025: all after the epoch.
            Value::Date(offset)
                if now.duration_since(UNIX_EPOCH).unwrap().as_secs()
                    < u64::from(offset.unsigned_abs())
                    && *offset < 0 =>
            {
                None
            }
            Value::Date(offset) => {
                let t = if *offset >= 0 {
                    now + Duration::from_secs(u64::from(offset.unsigned_abs()))
                } else {
                    now - Duration::from_secs(u64::from(offset.unsigned_abs()))
                };
                HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok()
            }
            Value::Number(n) => Some(HeaderValue::from(*n)),
            Value::Raw(b) => HeaderValue::from_bytes(b).ok(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    get: bool,
    request: Vec<Field<'a>>,
    status: u16,
    response: Vec<Field<'a>>,
    cdn: bool,
    heuristic: bool,
    allow_authorized: bool,
    stale_defaults: u8,
    forced_ttl: Option<u32>,
}

/// Splits at commas outside double quotes (`no-cache="a, b"` is one directive).
fn split_unquoted(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out
}

fn directives(values: &[&HeaderValue]) -> Vec<(String, Option<String>)> {
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_unquoted)
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .map(|d| match d.split_once('=') {
            Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim().to_owned())),
            None => (d.to_ascii_lowercase(), None),
        })
        .collect()
}

fuzz_target!(|input: Input<'_>| {
    // A fixed, whole-second "now": HTTP dates have no fractions.
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut req = Request::new(());
    *req.method_mut() = if input.get { Method::GET } else { Method::POST };
    *req.uri_mut() = "http://shop.example/products?page=2".parse().unwrap();
    for f in &input.request {
        if let Some(v) = f.value(now) {
            req.headers_mut().append(f.name(), v);
        }
    }
    let Ok(status) = StatusCode::from_u16(input.status % 600) else {
        return;
    };
    let mut res = Response::new(());
    *res.status_mut() = status;
    for f in &input.response {
        if let Some(v) = f.value(now) {
            res.headers_mut().append(f.name(), v);
        }
    }
    let (req, _) = req.into_parts();
    let (res, _) = res.into_parts();
    let settings = Settings {
        cdn: input.cdn,
        heuristic: input.heuristic,
        allow_authorized: input.allow_authorized,
        stale_defaults: u32::from(input.stale_defaults),
        forced_ttl: input.forced_ttl,
    };
    let Ok(d) = decide(settings, &req, &res, Bytes::from_static(b"body"), now) else {
        return;
    };

    // Refused by the rules, whatever else the response says.
    assert_eq!(req.method, Method::GET);
    let s = status.as_u16();
    assert!(s >= 200 && s != 206 && s != 304, "status {s} stored");
    assert!(!res.headers.contains_key("set-cookie"));
    let targeted = input.cdn && res.headers.contains_key("cdn-cache-control");
    let cc: Vec<&HeaderValue> = res.headers.get_all("cache-control").iter().collect();
    let cc = directives(&cc);
    if !targeted {
        assert!(
            !cc.iter().any(|(n, _)| n == "no-store"),
            "no-store stored: {cc:?}"
        );
        assert!(
            !cc.iter().any(|(n, a)| n == "private" && a.is_none()),
            "private stored"
        );
    }

    // Lifetimes.
    assert!(d.ttl <= MAX_LIFETIME && d.keep_for <= MAX_LIFETIME, "{d:?}");
    assert!(d.keep_for >= d.ttl, "{d:?}");
    match input.forced_ttl {
        Some(ttl) => {
            assert!(status.is_success());
            assert_eq!(d.ttl, Duration::from_secs(u64::from(ttl)).min(MAX_LIFETIME));
        }
        None if !targeted => {
            let lifetimes: Vec<&Option<String>> = cc
                .iter()
                .filter(|(n, _)| n == "max-age" || n == "s-maxage")
                .map(|(_, a)| a)
                .collect();
            let plain: Option<Vec<u64>> = lifetimes
                .iter()
                .map(|a| {
                    a.as_deref().and_then(|a| {
                        a.bytes()
                            .all(|b| b.is_ascii_digit())
                            .then(|| a.parse().ok())
                            .flatten()
                    })
                })
                .collect();
            if let Some(secs) = plain.filter(|s| !s.is_empty()) {
                let longest = Duration::from_secs(*secs.iter().max().unwrap());
                assert!(
                    d.ttl <= longest,
                    "ttl {:?} past max-age {longest:?}: {cc:?}",
                    d.ttl
                );
            }
            let no_stale = cc.iter().any(|(n, a)| {
                (n == "no-cache" && a.is_none())
                    || n == "must-revalidate"
                    || n == "proxy-revalidate"
            });
            if no_stale {
                assert!(
                    d.stale_while_revalidate.is_zero() && d.stale_if_error.is_zero(),
                    "{d:?}"
                );
            }
        }
        None => {}
    }

    // The entry answers the request it was stored for (one without its own directives).
    if !req.headers.contains_key("cache-control") && !req.headers.contains_key("pragma") {
        assert!(d.usable_for_its_request, "{d:?}");
        if d.fresh_for_its_request {
            assert!(!d.ttl.is_zero(), "fresh with no lifetime: {d:?}");
        }
    }

    // Its bytes (what a Redis store keeps) read back to the same entry.
    let bytes = d.entry.to_bytes();
    let back = Entry::from_bytes(&bytes).expect("an entry's own bytes read back");
    assert_eq!(back.to_bytes(), bytes);
});
