//! The cache's Redis store against a real `redis-server`: entries shared between layer instances
//! (both modes, `Vary`, purge), and bypass while Redis is down, with recovery when it is back.
#![cfg(feature = "redis")]

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bulwark::{
    cache::{CacheLayer, CacheOutcome, CacheStatus, CacheStore},
    redis::Redis,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt, service_fn};

fn origin(
    calls: &Arc<AtomicUsize>,
    headers: &'static [(&'static str, &'static str)],
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    let calls = calls.clone();
    service_fn(move |req: Request<()>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let lang = req
            .headers()
            .get("accept-language")
            .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned());
        let mut b = Response::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = b
            .body(Full::new(Bytes::from(format!("v{n} {lang}"))))
            .unwrap();
        async move { Ok::<_, Infallible>(res) }
    })
}

fn get(path: &str, lang: Option<&str>) -> Request<()> {
    let mut b = Request::get(path).header("host", "shop.test");
    if let Some(l) = lang {
        b = b.header("accept-language", l);
    }
    b.body(()).unwrap()
}

async fn send<S>(svc: &S, req: Request<()>) -> (CacheStatus, String, Option<String>)
where
    S: Service<
            Request<()>,
            Response = Response<bulwark::body::ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let status = *res.extensions().get::<CacheStatus>().unwrap();
    let age = res
        .headers()
        .get("age")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap(), age)
}

fn redis_on(d: &support::Deployment, prefix: &str) -> Redis {
    d.redis()
        .prefix(prefix.to_owned())
        .timeout(Duration::from_millis(300))
}

every_backend! {
async fn entries_are_shared_between_instances(d) {
    let run = format!("{:?}-{}", d.backend(), std::process::id());
    for (mode, headers) in [
        ("forced", &[][..]),
        (
            "policy",
            &[("cache-control", "max-age=60"), ("vary", "accept-language")][..],
        ),
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let make = || {
            let layer = CacheLayer::new(CacheStore::redis(redis_on(d, &format!("{run}-{mode}"))));
            if mode == "forced" {
                layer.ttl(Duration::from_secs(60))
            } else {
                layer
            }
        };
        let a = make().layer(origin(&calls, headers));
        let b = make().layer(origin(&calls, headers));
        let (s, body, _) = send(&a, get("/p", Some("en"))).await;
        assert!(s.stored, "{mode}: {s:?}");
        let (s, body_b, age) = send(&b, get("/p", Some("en"))).await;
        assert_eq!(s.outcome, CacheOutcome::Hit, "{mode}");
        assert_eq!(body_b, body);
        assert!(age.is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{mode}");
        if mode == "policy" {
            let (s, body_de, _) = send(&b, get("/p", Some("de"))).await;
            assert_eq!(s.outcome, CacheOutcome::VaryMiss);
            assert!(body_de.ends_with("de"));
            let (s, _, _) = send(&a, get("/p", Some("de"))).await;
            assert_eq!(s.outcome, CacheOutcome::Hit);
        }
        // Purge through either instance's handle.
        let handle = make().handle();
        assert!(handle.purge_prefix("GET shop.test/").await.unwrap() >= 1);
        let (s, _, _) = send(&a, get("/p", Some("en"))).await;
        assert_ne!(s.outcome, CacheOutcome::Hit, "{mode}: purged");
    }
}
}

every_backend! {
own async fn redis_down_bypasses_then_recovers(d) {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = CacheLayer::new(CacheStore::redis(redis_on(d, "outage")))
        .ttl(Duration::from_secs(60))
        .layer(origin(&calls, &[]));
    send(&svc, get("/o", None)).await;
    assert_eq!(
        send(&svc, get("/o", None)).await.0.outcome,
        CacheOutcome::Hit
    );

    d.stop_all();
    for _ in 0..3 {
        let (s, body, _) = send(&svc, get("/o", None)).await;
        assert_eq!(s.outcome, CacheOutcome::Bypass, "answers still served");
        assert_eq!(s.detail, Some("store-unavailable"));
        assert!(body.starts_with('v'));
    }

    d.restart_all();
    let mut recovered = false;
    for _ in 0..100 {
        let (s, _, _) = send(&svc, get("/o", None)).await;
        if s.outcome != CacheOutcome::Bypass {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the cache works again once Redis is back");
    // The restarted server is empty: the next answers fill it and hit.
    send(&svc, get("/o", None)).await;
    assert_eq!(
        send(&svc, get("/o", None)).await.0.outcome,
        CacheOutcome::Hit
    );
}
}
