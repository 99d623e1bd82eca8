//! The bulwark shop: a small web shop in which every route shows one production lesson.
//!
//! ```text
//! cargo run --example shop                          # serve on 127.0.0.1:3000, JSON logs on stdout
//! cargo run --example shop -- --addr 0.0.0.0:8080   # or SHOP_ADDR=...
//! cargo run --example shop -- --redis redis://127.0.0.1:6379/   # or REDIS_URL=...; shared state
//! cargo run --example shop -- --redis-cluster redis://10.0.0.1:7000,redis://10.0.0.2:7000
//! cargo run --example shop -- --demo                # walk through every scenario, print a table
//! ```
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `main.rs` | arguments and environment, `AppState`, `app` (the one router), serving, logging |
//! | `routes.rs` | the public routes and the shop's problem+json helper |
//! | `admin.rs` | `/admin/*`: bearer-token check, admin token, admin routes |
//! | `payments.rs` | `POST /payments` behind the idempotency layer, `GET /payments/{id}` |
//! | `login.rs` | `POST /login` and the rate limiters (login, global per client IP) |
//! | `demo.rs` | `--demo`: the scenario list, an HTTP client over loopback, the result table |
//! | `flags.rs` | feature flags: `/ai/summary` behind `ai-summary`, `GET`/`PUT /admin/flags`, Redis sync |
//! | `fleet.rs` | tests: two shops sharing one Redis Cluster |
//!
//! Adding a route: write the handler in `routes.rs` (or `admin.rs` for an admin route, which is
//! then behind the token check without further work), add one `.route(..)` line to that file's
//! `router()`, put any shared state in `Shared`, append a `demo::Scenario` to
//! `demo::SCENARIOS` that shows the route's lesson, and add a `oneshot` test. `main`, the demo
//! and the tests all build the app through `app`, so the new route is everywhere at once.

mod admin;
mod catalog;
mod degrade;
mod demo;
mod flags;
#[cfg(test)]
mod fleet;
mod login;
mod payments;
mod routes;
mod sim;
mod telemetry;
// The tests' own Redis deployments (node, TLS, cluster), for `fleet.rs`.
#[cfg(test)]
#[path = "../../tests/support/mod.rs"]
mod servers;

use std::{
    ffi::OsString,
    future::Future,
    net::SocketAddr,
    ops::Deref,
    process::ExitCode,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use axum::Router;
use bulwark::{
    StoreError,
    circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitBreakerLayer},
    fallback::LastGood,
    key::IpNet,
    log::RequestLogLayer,
    redis::Redis,
};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::admin::AdminToken;

const USAGE: &str = "\
Usage: shop [OPTIONS]

A sample shop built on bulwark's resilience middleware.

Options:
  --addr ADDR    listen on ADDR (IP:PORT) [env: SHOP_ADDR] [default: 127.0.0.1:3000]
  --redis URL    keep shared state in Redis at URL, e.g. redis://127.0.0.1:6379/, or
                 rediss://host:6380/ for TLS [env: REDIS_URL] [default: in memory]
  --redis-cluster URL[,URL...]
                 keep shared state in the Redis Cluster these seed nodes belong to
                 [env: REDIS_CLUSTER_URLS]
  --demo         start the shop on a free loopback port, run every demo scenario against it,
                 print a table and exit 0 only if all passed (ignores --addr)
  --bare         serve the GET routes (/healthz, /products, /recommendations, /ai/summary)
                 with the same handlers and no bulwark layer: the baseline of the HTTP load
                 run (benches/http-load.sh)
  -h, --help     print this help

Environment:
  SHOP_ADMIN_TOKEN   bearer token for /admin/* (at least 16 visible ASCII characters);
                     without it a random token is generated and printed once to stderr
  SHOP_TRUSTED_PROXIES
                     comma-separated networks of your reverse proxies, e.g. 10.0.0.0/8;
                     their X-Forwarded-For tells the client IP for rate limits
                     [default: none: the client IP is the connection's peer address]
  RUST_LOG           log filter, e.g. `info` or `bulwark=debug,info` [default: info;
                     with --demo logs go to stderr and default to off]
  SHOP_GLOBAL_RPS    the global per-client-IP limit in requests per second (bursts of at
                     least 200) [default: 50]; the HTTP load run raises it
  BULWARK_FLAG_<NAME>  force feature flag NAME on or off (on|off), e.g.
                     BULWARK_FLAG_AI_SUMMARY=off; wins over definitions and /admin/flags

Flags win over environment variables. Logs are JSON lines on stdout.";

/// Where the shop listens unless told otherwise.
const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3000);

/// Exit code for usage and configuration errors.
const EXIT_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1), env_var) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(config)) => config,
        Err(Invalid::Usage(message)) => {
            eprintln!("shop: {message}\n\n{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(Invalid::Config(message)) => {
            eprintln!("shop: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(message) = init_logging(config.demo) {
        eprintln!("shop: {message}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let store = match &config.redis_cluster {
        Some(seeds) => Store::open_cluster(seeds),
        None => Store::open(config.redis_url.as_deref()),
    };
    let store = match store {
        Ok(store) => store,
        Err(message) => {
            eprintln!("shop: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    if config.demo {
        return demo::main(store).await;
    }

    let admin_token = config.admin_token.unwrap_or_else(|| {
        let token = AdminToken::generate();
        // stderr, not stdout: stdout carries only JSON log lines.
        eprintln!(
            "shop: admin token (set SHOP_ADMIN_TOKEN to choose one): {}",
            token.reveal()
        );
        token
    });
    let listener = match TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("shop: cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(config.addr);
    tracing::info!(%addr, store = store.kind(), "shop listening");

    let state = AppState::with_settings(
        store,
        admin_token,
        &config.trusted_proxies,
        config.global_rps,
    );
    // `BULWARK_FLAG_<NAME>=on|off` forces a flag, for emergencies.
    match bulwark::flag::EnvOverrides::new().apply(&state.flags.flags) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(overrides = n, "feature flags forced by the environment"),
        Err(e) => {
            eprintln!("shop: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let served = if config.bare {
        tracing::warn!("--bare: serving the GET routes without any bulwark layer");
        serve_app(listener, app_bare(state), shutdown_signal()).await
    } else {
        serve(listener, state, shutdown_signal()).await
    };
    match served {
        Ok(()) => {
            tracing::info!("shop stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            eprintln!("shop: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Run(Config),
}

/// The shop's configuration, from flags and environment (flags win).
#[derive(Debug, PartialEq)]
struct Config {
    addr: SocketAddr,
    redis_url: Option<String>,
    /// Seed URLs of a Redis Cluster (`--redis-cluster`, `REDIS_CLUSTER_URLS`).
    redis_cluster: Option<Vec<String>>,
    admin_token: Option<AdminToken>,
    /// Proxies whose `X-Forwarded-For` is believed (`SHOP_TRUSTED_PROXIES`); none by default.
    trusted_proxies: Vec<IpNet>,
    /// The global per-client-IP limit (`SHOP_GLOBAL_RPS`), if not the default.
    global_rps: Option<std::num::NonZeroU32>,
    demo: bool,
    bare: bool,
}

/// Why the configuration was refused: a bad command line (answered with the usage text) or a
/// bad environment variable.
#[derive(Debug, PartialEq)]
enum Invalid {
    Usage(String),
    Config(String),
}

impl Invalid {
    #[cfg(test)]
    fn message(&self) -> &str {
        match self {
            Self::Usage(message) | Self::Config(message) => message,
        }
    }
}

/// An environment variable, treating an empty value as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Parses the arguments (without the program name); `env` looks up environment variables.
///
/// Accepts `--flag VALUE` and `--flag=VALUE`. Errors carry a one-line message for stderr.
fn parse_args<I, E>(args: I, env: E) -> Result<Command, Invalid>
where
    I: IntoIterator<Item = OsString>,
    E: Fn(&str) -> Option<String>,
{
    let mut addr = None;
    let mut redis_url = None;
    let mut redis_cluster = None;
    let mut demo = false;
    let mut bare = false;

    let args = args
        .into_iter()
        .map(|arg| {
            arg.into_string().map_err(|arg| {
                let arg = arg.to_string_lossy();
                Invalid::Usage(format!("argument `{arg}` is not valid UTF-8"))
            })
        })
        .collect::<Result<Vec<String>, Invalid>>()?;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| Invalid::Usage(format!("`{flag}` needs a value")))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "--demo" if inline.is_none() => demo = true,
            "--bare" if inline.is_none() => bare = true,
            "--addr" => addr = Some(parse_addr(&value()?, "--addr").map_err(Invalid::Usage)?),
            "--redis" => redis_url = Some(value()?),
            "--redis-cluster" => redis_cluster = Some(value()?),
            _ => return Err(Invalid::Usage(format!("unexpected argument `{arg}`"))),
        }
    }

    let addr = match addr {
        Some(addr) => addr,
        None => match env("SHOP_ADDR") {
            Some(text) => parse_addr(&text, "SHOP_ADDR").map_err(Invalid::Config)?,
            None => DEFAULT_ADDR,
        },
    };
    let admin_token = env("SHOP_ADMIN_TOKEN")
        .map(|t| {
            AdminToken::new(&t)
                .map_err(|e| Invalid::Config(format!("invalid SHOP_ADMIN_TOKEN: {e}")))
        })
        .transpose()?;
    let trusted_proxies = env("SHOP_TRUSTED_PROXIES")
        .map(|list| {
            list.split(',')
                .filter(|net| !net.trim().is_empty())
                .map(|net| {
                    net.parse::<IpNet>().map_err(|e| {
                        Invalid::Config(format!("invalid SHOP_TRUSTED_PROXIES entry `{net}`: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let global_rps = env("SHOP_GLOBAL_RPS")
        .map(|text| {
            text.trim().parse::<std::num::NonZeroU32>().map_err(|_| {
                Invalid::Config(format!(
                    "invalid SHOP_GLOBAL_RPS `{text}`: expected a whole number from 1 to {}",
                    u32::MAX
                ))
            })
        })
        .transpose()?;
    let redis_cluster = redis_cluster
        .or_else(|| env("REDIS_CLUSTER_URLS"))
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
    if redis_cluster.as_ref().is_some_and(Vec::is_empty) {
        return Err(Invalid::Usage(
            "`--redis-cluster` needs at least one URL".into(),
        ));
    }
    let redis_url = redis_url.or_else(|| env("REDIS_URL"));
    if redis_url.is_some() && redis_cluster.is_some() {
        return Err(Invalid::Usage(
            "give `--redis` (one node) or `--redis-cluster` (a cluster), not both".into(),
        ));
    }
    Ok(Command::Run(Config {
        addr,
        redis_url,
        redis_cluster,
        admin_token,
        trusted_proxies,
        global_rps,
        demo,
        bare,
    }))
}

fn parse_addr(text: &str, source: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("invalid {source} `{text}`: expected IP:PORT, e.g. 127.0.0.1:3000 or [::1]:3000")
    })
}

/// Installs the JSON log subscriber: stdout when serving; stderr (and off unless `RUST_LOG` is
/// set) in demo mode, so the demo's table stays readable.
fn init_logging(demo: bool) -> Result<(), String> {
    let filter = match env_var("RUST_LOG") {
        Some(directives) => EnvFilter::try_new(&directives)
            .map_err(|e| format!("invalid RUST_LOG `{directives}`: {e}"))?,
        None => EnvFilter::new(if demo { "off" } else { "info" }),
    };
    if !demo {
        return tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stdout)
            .try_init()
            .map_err(|e| format!("cannot install the log subscriber: {e}"));
    }
    // Demo: `RUST_LOG` lines to stderr, and the request log always into the in-memory tap,
    // where scenarios check what a request's log line says.
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let stderr = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let tap = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_span_list(false)
        .with_writer(telemetry::LogTap::global().clone())
        .with_filter(EnvFilter::new("bulwark=info"));
    tracing_subscriber::registry()
        .with(stderr)
        .with(tap)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// Everything the handlers share. Cheap to clone: clones share one [`Shared`].
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Shared>);

/// The shop's shared state. New features add their handles (stores, breaker handles, flags)
/// here and build them in [`AppState::new`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) stats: Stats,
    pub(crate) admin_token: AdminToken,
    pub(crate) started: Instant,
    /// The simulated upstreams and their injected faults.
    pub(crate) upstreams: Arc<sim::Upstreams>,
    /// One breaker per upstream, each a layer value (so one breaker however often applied).
    pub(crate) breakers: Breakers,
    /// The last good `/recommendations` answers, shared by every app built from this state.
    pub(crate) last_good: LastGood,
    /// The dashboard's sections, each behind a timeout, a breaker and a fallback.
    pub(crate) sections: degrade::Sections,
    /// Feature flags (`ai-summary`), shared through Redis with `--redis`.
    pub(crate) flags: flags::ShopFlags,
    /// The `GET /products` cache (10 s, shared through Redis with `--redis`).
    pub(crate) products_cache: bulwark::cache::CacheLayer,
    /// `POST /payments`'s idempotency layer: one value, so one store however often applied.
    pub(crate) idempotency: bulwark::idempotency::IdempotencyLayer,
    /// The payments made.
    pub(crate) payments: payments::Ledger,
    /// The rate limiters: `POST /login` and the global one around every route.
    pub(crate) limits: login::Limits,
}

/// The shop's circuit breakers, by upstream.
#[derive(Debug)]
pub(crate) struct Breakers {
    pub(crate) recommendations: CircuitBreakerLayer,
    pub(crate) user: CircuitBreakerLayer,
    pub(crate) posts: CircuitBreakerLayer,
    pub(crate) notifications: CircuitBreakerLayer,
}

impl Breakers {
    /// Every breaker: window of the last 10 calls, at least 5 calls, opens at 50 % failures,
    /// stays open 5 s, then lets 2 probes through.
    fn new() -> Self {
        let layer = |name: &'static str| {
            let config = CircuitBreakerConfig::builder()
                .name(name)
                .count_window(10)
                .minimum_calls(5)
                .failure_rate_threshold(50.0)
                .wait_in_open(Duration::from_secs(5))
                .constant_wait_in_open()
                .half_open_probes(2)
                .build()
                .expect("the shop's breaker settings are valid constants");
            CircuitBreakerLayer::new(config)
        };
        Self {
            recommendations: layer("recommendations"),
            user: layer("user"),
            posts: layer("posts"),
            notifications: layer("notifications"),
        }
    }

    /// `(name, handle)` for each breaker, in a fixed order.
    pub(crate) fn handles(&self) -> [(&'static str, CircuitBreakerHandle); 4] {
        [
            ("recommendations", self.recommendations.handle()),
            ("user", self.user.handle()),
            ("posts", self.posts.handle()),
            ("notifications", self.notifications.handle()),
        ]
    }
}

impl AppState {
    /// The state, with no trusted proxy (client IPs are peer addresses).
    pub(crate) fn new(store: Store, admin_token: AdminToken) -> Self {
        Self::with_trusted_proxies(store, admin_token, &[])
    }

    /// The state, reading client IPs through `X-Forwarded-For` as far as `trusted_proxies`
    /// wrote it.
    pub(crate) fn with_trusted_proxies(
        store: Store,
        admin_token: AdminToken,
        trusted_proxies: &[IpNet],
    ) -> Self {
        Self::with_settings(store, admin_token, trusted_proxies, None)
    }

    /// The state, with the global per-client-IP limit at `global_rps` requests per second when
    /// given (default 50).
    pub(crate) fn with_settings(
        store: Store,
        admin_token: AdminToken,
        trusted_proxies: &[IpNet],
        global_rps: Option<std::num::NonZeroU32>,
    ) -> Self {
        // Before any layer exists, so breakers' initial gauges are recorded too.
        telemetry::handle();
        let upstreams = Arc::new(sim::Upstreams::default());
        let breakers = Breakers::new();
        let limits = login::Limits::new(&store, trusted_proxies, global_rps);
        Self(Arc::new(Shared {
            products_cache: catalog::products_cache(&store),
            idempotency: payments::idempotency(&store),
            payments: payments::Ledger::default(),
            limits,
            flags: flags::ShopFlags::new(&store),
            store,
            stats: Stats::default(),
            admin_token,
            started: Instant::now(),
            upstreams: upstreams.clone(),
            // A busy route's answers stream through untouched for a second after one was
            // kept, rather than each being buffered and compared with the kept one.
            last_good: LastGood::builder()
                .capacity(100)
                .refresh_after(Duration::from_secs(1))
                .build()
                .expect("a non-zero capacity"),
            sections: degrade::Sections::new(&upstreams, &breakers),
            breakers,
        }))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Counters reported by `GET /admin/stats`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Executions of the payment charge (not requests: an idempotent replay does not count).
    pub(crate) payments_charged: AtomicU64,
    /// Queries the simulated product database answered (cache misses of `GET /products`).
    pub(crate) products_queries: AtomicU64,
}

/// Where shared state lives.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// In this process only.
    Memory,
    /// In Redis, shared by every instance started with the same URL. Keys start with `shop:`.
    Redis(Redis),
}

impl Store {
    /// Redis at `redis_url` if given (connected lazily: this never blocks), memory otherwise.
    pub(crate) fn open(redis_url: Option<&str>) -> Result<Self, String> {
        match redis_url {
            None => Ok(Self::Memory),
            Some(url) => Redis::open(url)
                .map(|redis| Self::Redis(redis.prefix("shop")))
                .map_err(|e| format!("invalid Redis URL `{url}`: {e}")),
        }
    }

    /// The Redis Cluster that `seeds` belong to (connected lazily: this never blocks).
    pub(crate) fn open_cluster(seeds: &[String]) -> Result<Self, String> {
        Redis::cluster(seeds)
            .map(|redis| Self::Redis(redis.prefix("shop")))
            .map_err(|e| format!("invalid Redis Cluster URLs `{}`: {e}", seeds.join(",")))
    }

    /// `"memory"` or `"redis"`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Whether the store answers (memory always does).
    pub(crate) async fn check(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory => Ok(()),
            Self::Redis(redis) => redis.ping().await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------------------------

/// The shop's router: the one function `main`, the demo and the tests build the app with.
///
/// The request-log layer is outermost, so every response (401s, 404s and 429s included)
/// carries `x-request-id` and gets one log line. Inside it, the global rate limit guards every
/// route.
pub(crate) fn app(state: AppState) -> Router {
    let global = state.limits.global.clone();
    Router::new()
        .merge(routes::router(&state))
        .nest("/admin", admin::router(state.clone()))
        .fallback(routes::not_found)
        .with_state(state)
        // One `layer` call for the router-wide layers (outermost first): each call wraps every
        // route in one more boxed service, which axum clones for every request.
        .layer(
            tower::ServiceBuilder::new()
                .layer(RequestLogLayer::new())
                .layer(global),
        )
}

/// Serves the shop on `listener` until `shutdown` completes, then drains open connections.
///
/// Peer addresses are recorded (`ConnectInfo<SocketAddr>`), so logs and per-client limits see
/// the client IP.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    state: AppState,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_app(listener, app(state), shutdown).await
}

/// Serves `app` on `listener` until `shutdown` completes, with peer addresses recorded.
async fn serve_app<F>(listener: TcpListener, app: Router, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// `--bare`: the GET routes the HTTP load run measures, with the same handlers and no bulwark
/// layer (no request log, no limiter, no cache, no breaker, no fallback, no flag gate), so the
/// run can show what the stack costs per request.
pub(crate) fn app_bare(state: AppState) -> Router {
    Router::new()
        .merge(routes::bare_router())
        .fallback(routes::not_found)
        .with_state(state)
}

/// Completes on Ctrl-C or (on Unix) SIGTERM. If a signal cannot be listened for, that signal is
/// logged and ignored rather than shutting the shop down at once.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received; draining connections");
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::{
        body::{Body, to_bytes},
        http::{Request, Response, StatusCode},
    };
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    pub(crate) const TEST_TOKEN: &str = "test-admin-token-0123456789";

    pub(crate) fn test_state() -> AppState {
        AppState::new(Store::Memory, AdminToken::new(TEST_TOKEN).unwrap())
    }

    /// Sends one request through a fresh app.
    pub(crate) async fn send(state: AppState, req: Request<Body>) -> Response<Body> {
        app(state).oneshot(req).await.unwrap()
    }

    pub(crate) async fn get(uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut req = Request::get(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        send(test_state(), req.body(Body::empty()).unwrap()).await
    }

    pub(crate) async fn json(res: Response<Body>) -> Value {
        let bytes = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn request_id(res: &Response<Body>) -> &str {
        res.headers()["x-request-id"].to_str().unwrap()
    }

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Command, Invalid> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_args(args.iter().map(OsString::from), |name| {
            env.get(name).cloned()
        })
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse(args, env) {
            Ok(Command::Run(config)) => config,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[], &[]);
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert_eq!(c.redis_url, None);
        assert_eq!(c.admin_token, None);
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.global_rps, None);
        assert!(!c.demo);
        assert!(!c.bare);
    }

    #[test]
    fn bare_and_global_rps() {
        let c = config(&["--bare"], &[("SHOP_GLOBAL_RPS", "1000000")]);
        assert!(c.bare);
        assert_eq!(c.global_rps.map(std::num::NonZeroU32::get), Some(1_000_000));
        for bad in ["0", "-1", "many", "4294967296"] {
            match parse(&[], &[("SHOP_GLOBAL_RPS", bad)]) {
                Err(Invalid::Config(message)) => assert!(message.contains("SHOP_GLOBAL_RPS")),
                other => panic!("SHOP_GLOBAL_RPS={bad}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(&["--bare=yes"], &[]),
            Err(Invalid::Usage(_))
        ));
    }

    #[tokio::test]
    async fn the_bare_app_has_no_bulwark_layer() {
        use tower::ServiceExt as _;
        let app = app_bare(test_state());
        let res = app
            .clone()
            .oneshot(
                axum::http::Request::get("/healthz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            !res.headers().contains_key("x-request-id"),
            "no request log"
        );
        // No flag gate: a free-tier request gets the summary.
        let res = app
            .oneshot(
                axum::http::Request::get("/ai/summary")
                    .header("x-user-tier", "free")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    #[test]
    fn flags_win_over_env() {
        let env = [
            ("SHOP_ADDR", "127.0.0.1:4000"),
            ("REDIS_URL", "redis://env/"),
        ];
        let c = config(&["--addr", "0.0.0.0:5000", "--redis=redis://flag/"], &env);
        assert_eq!(c.addr, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(c.redis_url.as_deref(), Some("redis://flag/"));

        let c = config(&["--demo"], &env);
        assert_eq!(c.addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(c.redis_url.as_deref(), Some("redis://env/"));
        assert!(c.demo);
    }

    #[test]
    fn a_cluster_comes_from_seed_urls() {
        let c = config(&["--redis-cluster", "redis://a:7000, redis://b:7000"], &[]);
        assert_eq!(
            c.redis_cluster,
            Some(vec![
                "redis://a:7000".to_owned(),
                "redis://b:7000".to_owned()
            ])
        );
        assert_eq!(c.redis_url, None);
        let c = config(&[], &[("REDIS_CLUSTER_URLS", "redis://c:7000")]);
        assert_eq!(c.redis_cluster, Some(vec!["redis://c:7000".to_owned()]));
        let (message, usage) = refusal(&["--redis-cluster", " , "], &[]);
        assert!(message.contains("at least one URL") && usage, "{message}");
        let (message, usage) = refusal(
            &["--redis", "redis://a/", "--redis-cluster=redis://b:1"],
            &[],
        );
        assert!(message.contains("not both") && usage, "{message}");
    }

    /// The message of a refusal, and whether it comes with the usage text.
    fn refusal(args: &[&str], env: &[(&str, &str)]) -> (String, bool) {
        let invalid = parse(args, env).unwrap_err();
        (
            invalid.message().to_owned(),
            matches!(invalid, Invalid::Usage(_)),
        )
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(parse(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(parse(&["--demo", "-h"], &[]), Ok(Command::Help));

        let (message, usage) = refusal(&["--verbose"], &[]);
        assert!(usage && message.contains("`--verbose`"), "{message}");
        assert!(refusal(&["serve"], &[]).1);
        assert!(refusal(&["--demo=yes"], &[]).1);
        let (message, usage) = refusal(&["--addr"], &[]);
        assert!(usage && message.contains("needs a value"), "{message}");
        let (message, usage) = refusal(&["--addr", "localhost"], &[]);
        assert!(usage && message.contains("--addr"), "{message}");

        let (message, usage) = refusal(&[], &[("SHOP_ADDR", "nope")]);
        assert!(!usage && message.contains("SHOP_ADDR"), "{message}");
        let (message, usage) = refusal(&[], &[("SHOP_ADMIN_TOKEN", "short")]);
        assert!(!usage && message.contains("SHOP_ADMIN_TOKEN"), "{message}");

        let c = config(&[], &[("SHOP_ADMIN_TOKEN", TEST_TOKEN)]);
        assert_eq!(c.admin_token.unwrap().reveal(), TEST_TOKEN);

        let c = config(&[], &[("SHOP_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,")]);
        let nets: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "fd00::/8"]);
        let (message, usage) = refusal(&[], &[("SHOP_TRUSTED_PROXIES", "10.0.0.0/33")]);
        assert!(
            !usage && message.contains("SHOP_TRUSTED_PROXIES"),
            "{message}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_argument_is_a_usage_error() {
        use std::os::unix::ffi::OsStringExt;
        let args = [OsString::from("--redis"), OsString::from_vec(vec![0xff])];
        let invalid = parse_args(args, |_| None).unwrap_err();
        assert!(matches!(invalid, Invalid::Usage(m) if m.contains("UTF-8")));
    }

    #[tokio::test]
    async fn store_open() {
        assert_eq!(Store::open(None).unwrap().kind(), "memory");
        let redis = Store::open(Some("redis://127.0.0.1:6379/")).unwrap();
        assert_eq!(redis.kind(), "redis");
        assert!(Store::open(Some("not a url")).is_err());
    }

    #[tokio::test]
    async fn healthz() {
        let res = get("/healthz", &[]).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(json(res).await, serde_json::json!({"status": "ok"}));
    }

    #[tokio::test]
    async fn readyz_memory() {
        let res = get("/readyz", &[]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = json(res).await;
        assert_eq!(body["status"], "ready");
        assert_eq!(
            body["store"],
            serde_json::json!({"kind": "memory", "reachable": true})
        );
    }

    #[tokio::test]
    async fn readyz_unreachable_redis() {
        // Nothing listens on port 1: the ping fails fast (or times out after 250 ms).
        let store = Store::open(Some("redis://127.0.0.1:1/")).unwrap();
        let state = AppState::new(store, AdminToken::new(TEST_TOKEN).unwrap());
        let res = send(state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = json(res).await;
        assert_eq!(body["status"], "unready");
        assert_eq!(
            body["store"],
            serde_json::json!({"kind": "redis", "reachable": false})
        );
    }

    #[tokio::test]
    async fn unknown_route_is_problem_json_with_request_id() {
        let res = get("/nope", &[]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(request_id(&res).len(), 36);
        let body = json(res).await;
        assert_eq!(body["status"], 404);
        assert_eq!(body["title"], "Not Found");
    }

    #[tokio::test]
    async fn request_id_kept() {
        let res = get("/healthz", &[("x-request-id", "client-id.1:a_b-c")]).await;
        assert_eq!(request_id(&res), "client-id.1:a_b-c");
    }

    #[tokio::test]
    async fn request_id_generated() {
        let res = get("/healthz", &[]).await;
        let id = request_id(&res);
        assert!(demo::is_uuid_v7(id), "{id}");
    }

    #[tokio::test]
    async fn request_id_invalid_replaced() {
        let long = "a".repeat(200);
        for bad in ["has space", "quote\"d", long.as_str()] {
            let res = get("/healthz", &[("x-request-id", bad)]).await;
            let id = request_id(&res);
            assert_ne!(id, bad);
            assert!(demo::is_uuid_v7(id), "{bad} -> {id}");
        }
        // On 401s too: the log layer is outermost.
        let res = get("/admin/stats", &[("x-request-id", "has space")]).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(demo::is_uuid_v7(request_id(&res)));
    }
}
