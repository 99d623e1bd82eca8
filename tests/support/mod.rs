//! Helpers shared by the integration tests: a private `redis-server`, a readiness probe that
//! enforces the `Service` contract, a loopback hyper server, and a capturing tracing layer.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)]

use std::{
    convert::Infallible,
    future::Future,
    net::{SocketAddr, TcpListener, TcpStream},
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tower::Service;

// ---------------------------------------------------------------------------------------------
// Redis

/// A private `redis-server` on a free loopback port, stopped on drop.
///
/// `start()` returns `None` (after printing why) when no `redis-server` is on PATH, so the test
/// can skip; under `CI=true` that is a failure instead.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Arguments besides the port and persistence (TLS files, cluster mode).
    args: Vec<String>,
    tls: bool,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Whether `redis-server` runs here; under `CI=true` its absence is a failure.
fn redis_server_found() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let reason = "redis-server is not on PATH (install it: apt-get install redis-server)";
        assert!(!in_ci(), "CI=true and {reason}");
        eprintln!("skipping Redis test: {reason}");
    }
    found
}

impl RedisServer {
    /// Starts a server of this test's own, or skips (see the type docs).
    pub fn start() -> Option<Self> {
        Self::start_with(&[], false, free_port)
    }

    /// Starts a server with `args`, speaking TLS on its port if `tls`, on a port from `pick`.
    pub(crate) fn start_with(args: &[String], tls: bool, pick: fn() -> u16) -> Option<Self> {
        if !redis_server_found() {
            return None;
        }
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                port: pick(),
                args: args.to_vec(),
                tls,
            };
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// One server per test binary, shared while any test holds it; stopped when the last
    /// holder drops it.
    pub fn shared() -> Option<Arc<Self>> {
        static SHARED: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = slot.upgrade() {
            return Some(server);
        }
        let server = Arc::new(Self::start()?);
        *slot = Arc::downgrade(&server);
        Some(server)
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken meanwhile
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// `redis://127.0.0.1:PORT/` (`rediss://` for a TLS server)
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Sends a signal to the server's process (`STOP`, `CONT`, `KILL`).
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server now (to test outages); `restart` brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with empty data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

mod deployment;
#[allow(unused_imports)]
pub use deployment::{Backend, Deployment};

// ---------------------------------------------------------------------------------------------
// Service contract

/// Wraps a service and panics if `call` runs on an instance that was not polled ready since its
/// last call. A clone starts not ready, as the `Service` contract says.
pub struct ReadyProbe<S> {
    inner: S,
    ready: bool,
}

impl<S> ReadyProbe<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            ready: false,
        }
    }
}

impl<S: Clone> Clone for ReadyProbe<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S, R> Service<R> for ReadyProbe<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let poll = self.inner.poll_ready(cx);
        if matches!(poll, Poll::Ready(Ok(()))) {
            self.ready = true;
        }
        poll
    }

    fn call(&mut self, req: R) -> S::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "Service::call on an instance that was not polled ready (a clone of the inner service used without poll_ready?)"
        );
        self.inner.call(req)
    }
}

// ---------------------------------------------------------------------------------------------
// hyper

/// Serves `svc` with hyper 1 on a loopback port (HTTP/1), inserting each connection's peer
/// `SocketAddr` into the request extensions. Returns the address; the server runs until the
/// runtime ends.
pub async fn serve_hyper<S, B>(svc: S) -> SocketAddr
where
    S: Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let svc =
                tower::util::MapRequest::new(svc.clone(), move |mut req: http::Request<_>| {
                    req.extensions_mut().insert(peer);
                    req
                });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    addr
}

/// Sends one HTTP/1 request over a fresh loopback connection; returns status, headers, body.
pub async fn send(
    addr: SocketAddr,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

// ---------------------------------------------------------------------------------------------
// Misc

/// A handler answering 200 with `body`, counting its calls.
#[derive(Clone, Default)]
pub struct Counter(pub Arc<std::sync::atomic::AtomicUsize>);

impl Counter {
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn hit(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A boxed future, for small test services.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The `Infallible` error type test handlers use.
pub type NoError = Infallible;

// ---------------------------------------------------------------------------------------------
// Tracing capture

/// Captured events (each its target, level and fields as `name -> value` text) and spans.
#[derive(Clone, Default)]
pub struct Captured(
    pub Arc<Mutex<Vec<CapturedEvent>>>,
    pub Arc<Mutex<Vec<CapturedEvent>>>,
);

#[derive(Clone, Debug)]
pub struct CapturedEvent {
    pub target: String,
    pub level: tracing::Level,
    pub fields: std::collections::BTreeMap<String, String>,
}

impl CapturedEvent {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The process's global subscriber in tests: enables nothing, but answers "ask again" for every
/// callsite. Tests run on parallel threads, each with its own capturing subscriber or none;
/// without this, a callsite first reached on a thread without one could have its interest
/// cached as "never" while another thread's capture is being installed, and that thread would
/// then miss the event.
struct AskEveryTime;

impl tracing::Subscriber for AskEveryTime {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Captured {
    /// Installs a capturing subscriber for the current thread until the guard drops.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        use tracing_subscriber::layer::SubscriberExt;
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(AskEveryTime);
        });
        let captured = Self::default();
        let subscriber = tracing_subscriber::registry().with(CaptureLayer(captured.clone()));
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        (captured, guard)
    }

    pub fn events(&self) -> Vec<CapturedEvent> {
        self.0.lock().unwrap().clone()
    }

    /// Spans as they were opened; `target` holds the span's name.
    pub fn spans(&self) -> Vec<CapturedEvent> {
        self.1.lock().unwrap().clone()
    }

    pub fn with_target(&self, target: &str) -> Vec<CapturedEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.target == target)
            .collect()
    }

    /// Everything captured, as one string, to check that a secret never appears.
    pub fn all_text(&self) -> String {
        format!("{:?} {:?}", self.events(), self.spans())
    }
}

struct CaptureLayer(Captured);

struct FieldVisitor<'a>(&'a mut std::collections::BTreeMap<String, String>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = std::collections::BTreeMap::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        self.0.1.lock().unwrap().push(CapturedEvent {
            target: attrs.metadata().name().to_owned(),
            level: *attrs.metadata().level(),
            fields,
        });
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = std::collections::BTreeMap::new();
        event.record(&mut FieldVisitor(&mut fields));
        self.0.0.lock().unwrap().push(CapturedEvent {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// What a debugging `metrics` recorder saw while `test` ran on a fresh current-thread runtime
/// (its clock paused when `paused`), recording for this thread only, so tests running in
/// parallel never see each other's metrics.
pub fn recorded(
    paused: bool,
    test: impl Future<Output = ()>,
) -> Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    metrics_util::debugging::DebugValue,
)> {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut runtime = tokio::runtime::Builder::new_current_thread();
        runtime.enable_all().start_paused(paused);
        runtime.build().unwrap().block_on(test);
    });
    snapshotter.snapshot().into_vec()
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// Cases per property test: `default`, or `PROPTEST_CASES` when set (long runs, e.g.
/// `PROPTEST_CASES=10000 cargo test --test model_rate_limit`).
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A current-thread runtime with its clock paused (time moves only by `tokio::time::advance`),
/// for property tests that run one case per runtime.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}
