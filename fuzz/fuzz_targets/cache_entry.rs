//! Cache entries read back from a shared store (Redis) as bytes that may be corrupted,
//! truncated, or written by something else: `Entry::from_bytes` refuses what it cannot read,
//! what it reads writes back to bytes that read the same, and a layer whose store answers
//! every lookup with those bytes serves every request — from the entry, or from the inner
//! service when the bytes are unreadable — without a panic or a hang (an index entry that
//! points to itself included).
#![no_main]

mod common;

use std::time::Duration;

use bulwark::{
    StoreError,
    cache::{CacheLayer, CacheStore, Entry, Store, store::StoreFuture},
};
use common::runtime;
use http::{Request, Response};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt, service_fn};

/// A store whose every key holds the same bytes.
struct Foreign(Vec<u8>);

impl Store for Foreign {
    fn get<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, Option<Entry>> {
        Box::pin(async move { Entry::from_bytes(&self.0).map(Some) })
    }
    fn put<'a>(&'a self, _key: &'a str, _entry: Entry) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn remove<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
    fn remove_prefix<'a>(&'a self, _prefix: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async { Ok(0) })
    }
    fn name(&self) -> &'static str {
        "foreign"
    }
}

// The first byte: bit 0 serves a request through a layer (slower; not every input), bit 1
// puts that layer in forced-TTL mode, bit 2 adds an `Accept` field (a `Vary` lookup). The rest
// is what the store holds.
fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let decoded = Entry::from_bytes(bytes);
    match &decoded {
        Ok(entry) => {
            let bytes = entry.to_bytes();
            let again = Entry::from_bytes(&bytes).expect("an entry's own bytes read back");
            assert_eq!(again.to_bytes(), bytes, "writing is stable");
        }
        Err(e) => assert!(matches!(e, StoreError::Malformed { .. }), "{e:?}"),
    }
    if flags & 1 == 0 {
        return;
    }
    let store = CacheStore::custom(Foreign(bytes.to_vec()));
    let layer = if flags & 2 != 0 {
        CacheLayer::new(store).ttl(Duration::from_secs(60))
    } else {
        CacheLayer::new(store)
    };
    let svc = layer.layer(service_fn(|_req: Request<String>| async {
        let mut res = Response::new(String::from("inner"));
        res.headers_mut().insert(
            "cache-control",
            http::HeaderValue::from_static("max-age=60"),
        );
        Ok::<_, std::convert::Infallible>(res)
    }));
    let mut req = Request::new(String::new());
    *req.uri_mut() = "http://shop.example/products".parse().unwrap();
    if flags & 4 != 0 {
        req.headers_mut()
            .insert("accept", http::HeaderValue::from_static("text/html"));
    }
    let rt = runtime();
    let res = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            let res = svc.oneshot(req).await.unwrap();
            let (head, body) = res.into_parts();
            (head, body.collect().await.map(|b| b.to_bytes()))
        })
        .await
        .expect("the layer answers")
    });
    let (head, body) = res;
    if decoded.is_err() {
        assert_eq!(head.status, 200);
        assert_eq!(
            body.expect("the inner body").as_ref(),
            b"inner",
            "unreadable bytes are a miss"
        );
    }
    if let Some(age) = head.headers.get("age") {
        assert!(
            age.to_str().is_ok_and(|a| a.parse::<u64>().is_ok()),
            "Age {age:?}"
        );
    }
});
