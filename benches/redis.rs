//! The Redis-backed paths per request, against one node and against a 3+3 cluster, on
//! loopback: the limiter's allowed path, an idempotency replay and a new claim, a cache hit.
//! Before the timings, each path's round trips per request are counted with `MONITOR` on
//! every primary (commands sent by clients; those a script runs inside Redis are not round
//! trips and are left out).
//!
//! `cargo bench --bench redis` (needs `redis-server` and `redis-cli`; it starts its own
//! servers on free loopback ports and stops them at the end).

#[path = "../tests/support/mod.rs"]
mod servers;

use std::{
    convert::Infallible,
    hint::black_box,
    io::{BufRead, BufReader},
    net::SocketAddr,
    num::NonZeroU32,
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use bulwark::{
    cache::{CacheLayer, CacheStore},
    idempotency::{IdempotencyLayer, IdempotencyStore},
    key::PeerIp,
    rate_limit::{Quota, RateLimitLayer},
};
use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response};
use http_body_util::Full;
use servers::{Backend, Deployment};
use tower::{Layer, Service, ServiceExt, service_fn};

type Body = Full<Bytes>;

fn ok<B: Send + 'static>()
-> impl Service<Request<B>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_req: Request<B>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap(),
        )
    })
}

fn from_peer(mut req: Request<Body>) -> Request<Body> {
    req.extensions_mut()
        .insert("192.0.2.1:1000".parse::<SocketAddr>().unwrap());
    req
}

fn get() -> Request<Body> {
    from_peer(
        Request::get("/products")
            .header("host", "shop.test")
            .body(Body::default())
            .unwrap(),
    )
}

fn payment(key: &str) -> Request<Body> {
    from_peer(
        Request::post("/payments")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
}

/// Counts the commands clients send to the primaries while `work` runs.
fn round_trips(d: &Deployment, work: &dyn Fn()) -> u64 {
    let primaries: Vec<u16> = d
        .servers
        .iter()
        .map(servers::RedisServer::port)
        .filter(|&p| {
            Command::new("redis-cli")
                .args(["-p", &p.to_string(), "role"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("master"))
        })
        .collect();
    let mut monitors = Vec::new();
    for port in primaries {
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli monitor");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "OK");
        let counter = std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                // Client commands carry the client's address; a script's, `lua`.
                .filter(|l| !l.contains(" lua] ") && l.contains("127.0.0.1:"))
                .count() as u64
        });
        monitors.push((child, counter));
    }
    work();
    std::thread::sleep(Duration::from_millis(300));
    let mut total = 0;
    for (mut child, counter) in monitors {
        let _ = child.kill();
        let _ = child.wait();
        total += counter.join().unwrap();
    }
    total
}

fn bench_backend(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: Backend) {
    let Some(d) = Deployment::start(backend) else {
        eprintln!("no redis-server: the Redis benchmarks are skipped");
        return;
    };
    let name = match backend {
        Backend::Node => "node",
        Backend::Tls => "tls",
        Backend::Cluster => "cluster",
        Backend::TlsCluster => "tls_cluster",
    };
    let redis = |prefix: &str| {
        let _guard = rt.enter();
        d.redis().prefix(format!("bench-{prefix}"))
    };
    let limiter = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap()))
        .key(PeerIp::new())
        .redis(redis("limiter"))
        .layer(ok());
    let payments = IdempotencyLayer::new(IdempotencyStore::redis(redis("idem"))).layer(ok());
    let cache = CacheLayer::new(CacheStore::redis(redis("cache"))).layer(ok());
    let next = AtomicU64::new(0);
    let fresh = || format!("k{}", next.fetch_add(1, Ordering::Relaxed));

    // Warm up: connections made, scripts loaded, the replayed key and the cached entry stored.
    rt.block_on(async {
        limiter.clone().oneshot(get()).await.unwrap();
        payments.clone().oneshot(payment("replayed")).await.unwrap();
        cache.clone().oneshot(get()).await.unwrap();
        payments.clone().oneshot(payment(&fresh())).await.unwrap();
    });

    const N: u64 = 200;
    let per_request = |work: &dyn Fn()| round_trips(&d, work) as f64 / N as f64;
    let rows = [
        (
            "rate_limit/allowed",
            per_request(&|| {
                rt.block_on(async {
                    for _ in 0..N {
                        limiter.clone().oneshot(get()).await.unwrap();
                    }
                });
            }),
        ),
        (
            "idempotency/replay",
            per_request(&|| {
                rt.block_on(async {
                    for _ in 0..N {
                        payments.clone().oneshot(payment("replayed")).await.unwrap();
                    }
                });
            }),
        ),
        (
            "idempotency/new_key",
            per_request(&|| {
                rt.block_on(async {
                    for _ in 0..N {
                        payments.clone().oneshot(payment(&fresh())).await.unwrap();
                    }
                });
            }),
        ),
        (
            "cache/hit",
            per_request(&|| {
                rt.block_on(async {
                    for _ in 0..N {
                        cache.clone().oneshot(get()).await.unwrap();
                    }
                });
            }),
        ),
    ];
    for (path, trips) in rows {
        println!("round trips per request: redis/{name}/{path}: {trips:.2}");
    }

    let mut group = c.benchmark_group(format!("redis/{name}"));
    group.bench_function("rate_limit/allowed", |b| {
        b.iter(|| rt.block_on(async { black_box(limiter.clone().oneshot(get()).await.unwrap()) }));
    });
    group.bench_function("idempotency/replay", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(payments.clone().oneshot(payment("replayed")).await.unwrap())
            })
        });
    });
    group.bench_function("idempotency/new_key", |b| {
        b.iter(|| {
            let key = fresh();
            rt.block_on(async { black_box(payments.clone().oneshot(payment(&key)).await.unwrap()) })
        });
    });
    group.bench_function("cache/hit", |b| {
        b.iter(|| rt.block_on(async { black_box(cache.clone().oneshot(get()).await.unwrap()) }));
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_backend(&mut c, &rt, Backend::Node);
    bench_backend(&mut c, &rt, Backend::Cluster);
    c.final_summary();
}
