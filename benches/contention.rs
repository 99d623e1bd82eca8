//! Contention: one layer value shared by one and by two OS threads, each calling its own clone
//! (as hyper does per connection). Throughput is reported in calls per second over all threads,
//! so the two-thread figure divided by the one-thread figure is the scaling factor.
//!
//! `cargo bench --bench contention`

mod support;

use std::{
    hint::black_box,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use tower::{Layer, Service};

/// Measures `threads` threads, each making `iters` calls on its own clone of `svc` with
/// requests from `request`; returns the wall time of the slowest thread.
fn run<S>(
    svc: &S,
    threads: usize,
    iters: u64,
    request: fn(usize) -> Request<support::Body>,
) -> Duration
where
    S: Service<Request<support::Body>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let mut svc = svc.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(support::call(&mut svc, request(thread)));
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

/// Every thread sends the same request (one key).
fn same_key(_thread: usize) -> Request<support::Body> {
    support::request()
}

fn group<S>(c: &mut Criterion, name: &str, svc: &S, request: fn(usize) -> Request<support::Body>)
where
    S: Service<Request<support::Body>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let mut group = c.benchmark_group(format!("contention/{name}"));
    for threads in [1_usize, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| run(svc, threads, iters, request));
        });
    }
    group.finish();
}

fn baseline(c: &mut Criterion) {
    group(c, "baseline", &support::bare(), same_key);
}

fn circuit_breaker(c: &mut Criterion) {
    use bulwark::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    let time = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).layer(support::bare());
    group(c, "circuit_breaker/time_window", &time, same_key);
    let count = CircuitBreakerConfig::builder()
        .count_window(100)
        .build()
        .expect("valid config");
    let count = CircuitBreakerLayer::new(count).layer(support::bare());
    group(c, "circuit_breaker/count_window", &count, same_key);
}

criterion_group!(benches, baseline, circuit_breaker);
criterion_main!(benches);
