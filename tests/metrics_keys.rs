//! The metric keys layers register on every request are already in their shared form, so a
//! recorder that keeps keys (metrics-exporter-prometheus calls `Key::to_retained` on every
//! registration) does not copy names and labels into new allocations per request.

use std::{convert::Infallible, net::SocketAddr, num::NonZeroU32, sync::Mutex, time::Duration};

use bulwark::{
    cache::{CacheLayer, CacheStore},
    flag::{FeatureFlagLayer, FlagDefinition, Flags},
    key::PeerIp,
    log::RequestLogLayer,
    rate_limit::{Quota, RateLimitLayer},
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

/// Records, for every registration, whether retaining the key would have copied it.
#[derive(Default)]
struct RetainChecker {
    registered: Mutex<Vec<String>>,
    copied: Mutex<Vec<String>>,
}

impl RetainChecker {
    fn check(&self, key: &Key) {
        let retained = key.to_retained();
        let same_labels = std::ptr::eq(
            retained.labels().as_slice().as_ptr(),
            key.labels().as_slice().as_ptr(),
        );
        let same_name = std::ptr::eq(retained.name().as_ptr(), key.name().as_ptr());
        self.registered.lock().unwrap().push(key.name().to_owned());
        if !(same_labels && same_name) {
            self.copied.lock().unwrap().push(key.name().to_owned());
        }
    }
}

impl Recorder for RetainChecker {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.check(key);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.check(key);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.check(key);
        Histogram::noop()
    }
}

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::get("http://shop.test/products?page=2")
        .body(Full::default())
        .unwrap();
    req.extensions_mut()
        .insert(SocketAddr::from(([198, 51, 100, 7], 40_000)));
    req
}

#[test]
fn per_request_metric_keys_are_registered_without_copies() {
    let checker = RetainChecker::default();
    metrics::with_local_recorder(&checker, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let svc = ServiceBuilder::new()
                .layer(RequestLogLayer::new())
                .layer(RateLimitLayer::new(Quota::per_second(NonZeroU32::MAX)).key(PeerIp::new()))
                .layer(FeatureFlagLayer::new(
                    Flags::new().with("catalog", FlagDefinition::on()),
                    "catalog",
                ))
                .layer(CacheLayer::new(CacheStore::memory(1 << 20)).ttl(Duration::from_secs(60)))
                .service(service_fn(|_: Request<Full<Bytes>>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }));
            // A miss that is stored, then hits.
            for _ in 0..3 {
                let res = svc.clone().oneshot(request()).await.unwrap();
                res.into_body().collect().await.unwrap();
            }
            // And rejections, which an attacker can make us produce as fast as they like.
            let strict = RateLimitLayer::new(Quota::per_hour(NonZeroU32::MIN)).layer(service_fn(
                |_: Request<Full<Bytes>>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                },
            ));
            for _ in 0..3 {
                strict.clone().oneshot(request()).await.unwrap();
            }
        });
    });
    let registered = checker.registered.lock().unwrap().clone();
    for name in [
        "http_server_request_duration_seconds",
        "bulwark_rate_limit_requests_total",
        "bulwark_flag_evaluations_total",
        "bulwark_cache_requests_total",
        "bulwark_rejections_total",
    ] {
        assert!(
            registered.iter().any(|n| n == name),
            "{name} not registered: {registered:?}"
        );
    }
    let copied = checker.copied.lock().unwrap().clone();
    assert!(copied.is_empty(), "keys copied on registration: {copied:?}");
}
