//! Idempotency records read back from a shared store (Redis): `StoredResponse::decode` refuses
//! what it cannot read (a counted store error), what it reads encodes to bytes that decode to
//! the same response, and any response encodes and decodes to itself.
#![no_main]

use arbitrary::Arbitrary;
use bulwark::{StoreError, idempotency::store::StoredResponse};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    bytes: &'a [u8],
    status: u16,
    headers: Vec<(&'a [u8], &'a [u8])>,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let bytes = Bytes::copy_from_slice(input.bytes);
    match StoredResponse::decode(&bytes) {
        Ok(r) => {
            let again = StoredResponse::decode(&Bytes::from(r.encode())).expect("its own bytes");
            assert_eq!(again, r);
        }
        Err(e) => assert!(matches!(e, StoreError::Malformed { .. }), "{e:?}"),
    }
    let Ok(status) = StatusCode::from_u16(input.status) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (n, v) in &input.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            headers.append(n, v);
        }
    }
    let r = StoredResponse {
        status,
        headers,
        body: Bytes::copy_from_slice(input.body),
    };
    let decoded = StoredResponse::decode(&Bytes::from(r.encode())).expect("an encoded response");
    assert_eq!(decoded, r);
});
