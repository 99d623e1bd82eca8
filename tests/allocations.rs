//! Allocations, counted: what the layers promise costs nothing on the heap.
//!
//! - Every layer's `layer` call allocates nothing. Routers may apply a layer anew for every
//!   request (axum's `Handler::layer` does), so a `layer` that built its state would allocate on
//!   every request.
//! - The pass-through paths the benchmarks call "close to zero" allocate nothing: the fallback
//!   when nothing fails, idempotency for a request without a key, the breaker while closed, and
//!   the rate limiter allowing a request under the global key.
//!
//! The count is per thread (a counting global allocator with a thread-local counter), so other
//! tests running at the same time do not disturb it. Timings are never asserted here.

// The counting allocator is the one `unsafe` in the package; the library forbids it.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    convert::Infallible,
    num::NonZeroU32,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bulwark::{
    cache::{CacheLayer, CacheStore},
    circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer},
    fallback::{FallbackLayer, LastGood},
    flag::{FeatureFlagLayer, FlagDefinition, Flags},
    idempotency::{IdempotencyLayer, IdempotencyStore},
    log::RequestLogLayer,
    rate_limit::{Quota, RateLimitLayer},
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, service_fn};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` made on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

type Body = Full<Bytes>;

/// A service that answers at once and allocates nothing itself.
fn bare<B>() -> impl Service<
    Request<B>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>>,
> + Clone {
    service_fn(|_req: Request<B>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

/// A `GET /` with no headers; building it allocates nothing.
fn request() -> Request<Body> {
    Request::new(Full::new(Bytes::from_static(b"")))
}

/// Calls `svc` once (ready, call, poll to the end, drop the response) and returns how many
/// allocations that made. Every service here answers without waiting.
fn call_allocations<S, B>(svc: &mut S) -> u64
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let req = request();
    let mut cx = Context::from_waker(Waker::noop());
    let (n, status) = allocations(|| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut future = pin!(svc.call(req));
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(res) => res.expect("the call succeeds").status(),
            Poll::Pending => panic!("every service here answers at once"),
        }
    });
    assert!(status.is_success(), "{status}");
    n
}

fn assert_layer_allocates_nothing<L>(name: &str, layer: &L)
where
    L: Layer<tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>>,
{
    let inner = tower::util::BoxCloneSyncService::new(bare());
    let (n, service) = allocations(|| layer.layer(inner));
    assert_eq!(n, 0, "{name}: `layer` allocated {n} times");
    drop(service);
}

fn plenty() -> Quota {
    Quota::per_second(NonZeroU32::MAX).burst(NonZeroU32::MAX)
}

#[test]
fn no_layer_allocates_when_it_wraps_a_service() {
    assert_layer_allocates_nothing("request log", &RequestLogLayer::new());
    assert_layer_allocates_nothing("rate limit", &RateLimitLayer::new(plenty()));
    assert_layer_allocates_nothing(
        "feature flag",
        &FeatureFlagLayer::new(Flags::new().with("f", FlagDefinition::on()), "f"),
    );
    assert_layer_allocates_nothing(
        "idempotency",
        &IdempotencyLayer::new(IdempotencyStore::memory()).require_key(false),
    );
    assert_layer_allocates_nothing("cache", &CacheLayer::new(CacheStore::memory(1 << 20)));
    assert_layer_allocates_nothing(
        "fallback (static)",
        &FallbackLayer::response(Response::new("fallback")).capture_headers(false),
    );
    assert_layer_allocates_nothing(
        "fallback (last good, or static)",
        &FallbackLayer::last_good(LastGood::new(10).unwrap()).or(
            bulwark::fallback::StaticResponse::new(Response::new("fallback")),
        ),
    );
    assert_layer_allocates_nothing(
        "circuit breaker",
        &CircuitBreakerLayer::new(CircuitBreakerConfig::default()),
    );
}

#[test]
fn a_layer_changed_after_cloning_keeps_the_clone_unchanged() {
    // The builders take over a layer's configuration when they own it alone, and copy it when
    // a clone shares it: the clone must not see the change.
    let layer = FallbackLayer::response(Response::new("fallback"));
    let kept = layer.clone();
    let changed = layer.trigger(bulwark::fallback::FallbackReason::Status, false);
    assert!(format!("{kept:?}").contains("Status"), "{kept:?}");
    assert_ne!(format!("{kept:?}"), format!("{changed:?}"));

    let layer = IdempotencyLayer::new(IdempotencyStore::memory());
    let kept = layer.clone();
    let changed = layer.require_key(true);
    assert!(
        format!("{kept:?}").contains("require_key: false"),
        "{kept:?}"
    );
    assert!(
        format!("{changed:?}").contains("require_key: true"),
        "{changed:?}"
    );
}

#[test]
fn pass_through_paths_allocate_nothing() {
    let mut bare_svc = bare();
    assert_eq!(call_allocations(&mut bare_svc), 0, "the baseline itself");

    let mut fallback = FallbackLayer::response(Response::new("fallback")).layer(bare());
    let mut idempotency = IdempotencyLayer::new(IdempotencyStore::memory()).layer(bare());
    let mut breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).layer(bare());
    let mut limiter = RateLimitLayer::new(plenty()).layer(bare());
    // The first call may set up what later ones reuse (the limiter's bucket).
    for round in 0..3 {
        let counts = [
            ("fallback, nothing failed", call_allocations(&mut fallback)),
            ("idempotency, no key", call_allocations(&mut idempotency)),
            ("circuit breaker, closed", call_allocations(&mut breaker)),
            ("rate limit, allowed", call_allocations(&mut limiter)),
        ];
        if round == 0 {
            continue;
        }
        for (path, n) in counts {
            assert_eq!(n, 0, "{path}: {n} allocations per request");
        }
    }
}
