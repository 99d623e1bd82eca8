//! `x-request-id` validation and `traceparent` parsing, against models of their grammars, and
//! the request log end to end: whatever a client sends, the answer carries an id that is the
//! client's own if valid, else a generated one, and the log never panics on the headers it
//! reads.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use bulwark::log::{RequestId, RequestLogLayer, fuzzing};
use common::runtime;
use http::{HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt, service_fn};

fn id_model(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `version-trace-parent-flags`, lowercase hex, with the W3C rules on zeros, `ff` and
/// version 00's exact length; surrounding whitespace ignored.
fn traceparent_model(v: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() < 4 {
        return None;
    }
    let hex =
        |p: &str, n: usize| p.len() == n && p.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3]);
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace != "0".repeat(32)
        && hex(parent, 16)
        && parent != "0".repeat(16)
        && hex(flags, 2)
        && (version != "00" || parts.len() == 4);
    ok.then(|| (trace.to_owned(), parent.to_owned()))
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    id: &'a [u8],
    traceparent: &'a [u8],
    other: Vec<(u8, &'a [u8])>,
}

fuzz_target!(|input: Input<'_>| {
    assert_eq!(fuzzing::is_valid_request_id(input.id), id_model(input.id));
    assert_eq!(
        fuzzing::traceparent(input.traceparent).map(|(t, p)| (t.to_owned(), p.to_owned())),
        traceparent_model(input.traceparent),
        "traceparent {:?}",
        String::from_utf8_lossy(input.traceparent)
    );

    let id = HeaderValue::from_bytes(input.id).ok();
    if let Some(v) = &id {
        let parsed = RequestId::parse(v);
        assert_eq!(parsed.is_some(), id_model(input.id));
        if let Some(p) = parsed {
            assert_eq!(p.as_str().as_bytes(), input.id);
        }
    }

    let mut req = Request::new(String::new());
    if let Some(v) = &id {
        req.headers_mut().insert("x-request-id", v.clone());
    }
    if let Ok(v) = HeaderValue::from_bytes(input.traceparent) {
        req.headers_mut().insert("traceparent", v);
    }
    const NAMES: [&str; 5] = [
        "user-agent",
        "authorization",
        "cookie",
        "x-forwarded-for",
        "tracestate",
    ];
    for (n, v) in &input.other {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            req.headers_mut()
                .append(NAMES[usize::from(*n) % NAMES.len()], v);
        }
    }
    let svc = RequestLogLayer::new().layer(service_fn(|_req: Request<String>| async {
        Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
    }));
    let res = runtime().block_on(svc.oneshot(req)).unwrap();
    let answered = res
        .headers()
        .get("x-request-id")
        .expect("every answer has an id");
    match &id {
        Some(v) if id_model(input.id) => assert_eq!(answered, v),
        _ => {
            assert!(
                id_model(answered.as_bytes()),
                "a generated id is valid: {answered:?}"
            );
            assert_eq!(answered.len(), 36, "a UUID");
        }
    }
});
