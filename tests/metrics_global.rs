//! Handles of the global recorder are kept between requests (registering on every request cost
//! more than some layers), and that must never lose a count: a layer built before the recorder
//! was installed records into it, a thread-local recorder still gets what is recorded under it,
//! and a metric the exporter dropped for being idle is registered again.
//!
//! A test binary of its own: the global recorder is set once per process.

use std::{
    collections::HashMap,
    convert::Infallible,
    num::NonZeroU32,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bulwark::{
    log::RequestLogLayer,
    rate_limit::{Quota, RateLimitLayer},
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use tower::{Layer, Service, ServiceExt, service_fn};

/// How many values a histogram got.
#[derive(Default)]
struct Count(AtomicU64);

impl HistogramFn for Count {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A registry like an exporter's: one value per key, registrations counted, and `forget` to
/// drop a metric as an exporter's idle timeout does (handles given out before then count into
/// nothing).
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    counters: HashMap<String, Arc<AtomicU64>>,
    histograms: HashMap<String, Arc<Count>>,
    registrations: HashMap<String, u64>,
}

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Registry {
    fn counter(&self, key: &str) -> u64 {
        let inner = self.0.lock().unwrap();
        inner
            .counters
            .get(key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn histogram(&self, key: &str) -> u64 {
        let inner = self.0.lock().unwrap();
        inner
            .histograms
            .get(key)
            .map_or(0, |h| h.0.load(Ordering::Relaxed))
    }

    fn registrations(&self, key: &str) -> u64 {
        let inner = self.0.lock().unwrap();
        inner.registrations.get(key).copied().unwrap_or(0)
    }

    fn forget(&self, key: &str) {
        let mut inner = self.0.lock().unwrap();
        inner.counters.remove(key);
        inner.histograms.remove(key);
    }
}

impl Recorder for Registry {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut inner = self.0.lock().unwrap();
        *inner.registrations.entry(name(key)).or_default() += 1;
        Counter::from_arc(inner.counters.entry(name(key)).or_default().clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut inner = self.0.lock().unwrap();
        *inner.registrations.entry(name(key)).or_default() += 1;
        Histogram::from_arc(inner.histograms.entry(name(key)).or_default().clone())
    }
}

const ALLOWED: &str = "bulwark_rate_limit_requests_total{limiter=global,decision=allowed}";
const DURATION: &str = "http_server_request_duration_seconds{method=GET,route=,status_class=2xx}";

async fn send<S, B>(svc: &S, n: u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Error: std::fmt::Debug>,
{
    for _ in 0..n {
        let res = svc
            .clone()
            .oneshot(Request::new(Full::default()))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
}

#[test]
fn handles_of_the_global_recorder_are_kept_without_losing_counts() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Built before any recorder is installed, as a service may be.
    let svc = RequestLogLayer::new().layer(
        RateLimitLayer::new(Quota::per_second(NonZeroU32::MAX).burst(NonZeroU32::MAX))
            .name("global")
            .layer(service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            })),
    );
    rt.block_on(send(&svc, 3));

    let global = Registry::default();
    metrics::set_global_recorder(global.clone()).unwrap();
    rt.block_on(send(&svc, 20));
    assert_eq!(global.counter(ALLOWED), 20);
    assert_eq!(global.histogram(DURATION), 20);
    // Kept: registered again only if a second passed (a very slow machine), not per request.
    assert!(
        global.registrations(ALLOWED) <= 3,
        "{}",
        global.registrations(ALLOWED)
    );
    assert!(
        global.registrations(DURATION) <= 3,
        "{}",
        global.registrations(DURATION)
    );

    // A thread-local recorder gets what is recorded under it, not the kept global handles.
    let local = Registry::default();
    metrics::with_local_recorder(&local, || rt.block_on(send(&svc, 4)));
    assert_eq!(local.counter(ALLOWED), 4);
    assert_eq!(local.histogram(DURATION), 4);
    assert_eq!(global.counter(ALLOWED), 20);

    // Dropped as idle by the exporter: the handle kept is more than a second old by the next
    // request, which registers the metric again, so nothing counts into the dropped one.
    global.forget(ALLOWED);
    global.forget(DURATION);
    std::thread::sleep(Duration::from_millis(1_100));
    rt.block_on(send(&svc, 2));
    assert_eq!(global.counter(ALLOWED), 2);
    assert_eq!(global.histogram(DURATION), 2);
}
