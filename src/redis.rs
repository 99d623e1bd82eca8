//! The shared Redis connection every Redis-backed store uses (feature `redis`).
//!
//! One [`Redis`] handle is a connection plus two policies that every store follows: a **call
//! timeout** (default 250 ms; a store call that takes longer is a [`StoreError::Timeout`] and
//! the layer applies its failure policy) and a **key prefix** (default `bulwark`), so bulwark's
//! keys never collide with your application's.
//!
//! The connection is one of three kinds, and no store knows which it has:
//!
//! | deployment | made with | what it is |
//! | --- | --- | --- |
//! | one node | [`Redis::open`]`("redis://host:6379/")` | a multiplexed connection that reconnects by itself |
//! | one node over TLS | [`Redis::open`]`("rediss://host:6380/")` (feature `redis-tls`) | the same, over rustls |
//! | Redis Cluster (or a Valkey cluster) | [`Redis::cluster`]`(["redis://seed1:7000", ...])` | the redis crate's async cluster client: follows `MOVED`/`ASK`, learns topology changes and failovers; TLS with `rediss://` seeds |
//!
//! The connection is made lazily: [`Redis::open`] and [`Redis::cluster`] never block and
//! succeed while Redis is down, so an instance can start (and serve, following each layer's
//! failure policy) before Redis is back.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use bulwark::redis::Redis;
//!
//! let redis = Redis::open("redis://127.0.0.1:6379/")?
//!     .prefix("shop")
//!     .timeout(Duration::from_millis(100));
//! redis.ping().await?;
//!
//! // The same stores on a cluster: any reachable nodes as seeds.
//! let cluster = Redis::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?.prefix("shop");
//! # let _ = cluster;
//! # Ok(()) }
//! ```
//!
//! # Keys on a cluster
//!
//! Every script and transaction touches the keys of one hash slot: the parts that must agree sit
//! inside a hash tag `{...}`, chosen so that load still spreads over the slots.
//!
//! | store | keys | hash tag |
//! | --- | --- | --- |
//! | rate limiter | `<prefix>:ratelimit:{<limiter>:<client>}:<quota>` | one client of one limiter: its quotas are checked in one script, and clients spread over the slots |
//! | idempotency | `<prefix>:idempotency:<sha256>` | none needed: one key per script |
//! | cache | `<prefix>:cache:<key>` | none needed: one key per command; a purge by prefix scans every primary |
//! | flags | `<prefix>:{flags}:defs`, `<prefix>:{flags}:version` | the definitions and their version change in one transaction |
//!
//! A prefix with a hash tag of its own (`{shop}`) puts every bulwark key of that prefix on one
//! slot: possible, and rarely what a fleet wants.
//!
//! # Timeouts, retries and scripts
//!
//! The call timeout bounds each store call as a whole; the connection's own connect and
//! response timeouts are set to it too, and on a cluster so is the overall timeout of a request
//! with its redirects (the cluster client would otherwise retry up to 16 times without one). A
//! script is sent by its SHA-1 and loaded again only on an explicit `NOSCRIPT` reply (a restart
//! or a failover empties the script cache): never after another error, since the script may
//! already have run.
//!
//! # TLS (feature `redis-tls`)
//!
//! `rediss://` URLs connect with rustls and the ring provider (installed as the process
//! default once, unless the application installed one before). Servers are checked against the
//! system's root certificates, or against roots of your own with [`Redis::tls`]. On a cluster,
//! the certificates must name the addresses the nodes announce (`CLUSTER SLOTS` gives IPs unless
//! the nodes announce host names with `cluster-announce-hostname`).

use std::{fmt, future::Future, sync::Arc, time::Duration};

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo},
};

use crate::{ConfigError, StoreError};

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// Roots and a client certificate for TLS to Redis (feature `redis-tls`), for servers whose
/// certificates the system's roots do not vouch for, and for servers that ask clients for a
/// certificate.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use bulwark::redis::{Redis, TlsConfig};
///
/// let ca = std::fs::read("/etc/redis/ca.pem")?;
/// let redis = Redis::open("rediss://redis.internal:6380/")?.tls(TlsConfig::new().root_certificates(ca))?;
/// # let _ = redis; Ok(()) }
/// ```
#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
#[derive(Clone, Default)]
pub struct TlsConfig {
    roots: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

#[cfg(feature = "redis-tls")]
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("own_roots", &self.roots.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

#[cfg(feature = "redis-tls")]
impl TlsConfig {
    /// The system's roots, no client certificate.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the certificates in `pem` (one or more, PEM) instead of the system's roots.
    #[must_use]
    pub fn root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots = Some(pem.into());
        self
    }

    /// Presents `certificate` (PEM chain) with its private `key` (PEM) to servers that ask.
    #[must_use]
    pub fn client_certificate(
        mut self,
        certificate: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.client = Some((certificate.into(), key.into()));
        self
    }

    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.roots.clone(),
        }
    }
}

/// What a handle connects to, kept to make its connection again with other settings.
#[derive(Clone)]
struct Target {
    nodes: Arc<[String]>,
    cluster: bool,
    #[cfg(feature = "redis-tls")]
    tls: Option<TlsConfig>,
}

impl Target {
    fn uses_tls(&self) -> bool {
        self.nodes.iter().any(|n| n.starts_with("rediss://"))
    }

    /// A lazily made connection whose connect and response timeouts are `timeout`.
    fn connect(&self, timeout: Duration) -> Result<Connection, ConfigError> {
        let bad = |e: redis::RedisError| ConfigError::invalid("redis url", e.to_string());
        if self.uses_tls() {
            #[cfg(feature = "redis-tls")]
            install_crypto_provider();
            #[cfg(not(feature = "redis-tls"))]
            return Err(ConfigError::invalid(
                "redis url",
                "rediss:// (TLS) needs bulwark's `redis-tls` feature",
            ));
        }
        if self.cluster {
            #[cfg_attr(not(feature = "redis-tls"), allow(unused_mut))]
            let mut builder = ClusterClient::builder(self.nodes.iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .overall_response_timeout(Some(timeout))
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(100);
            #[cfg(feature = "redis-tls")]
            if let Some(tls) = &self.tls {
                builder = builder.certs(tls.certificates());
            }
            let client = builder.build().map_err(bad)?;
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            return Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(config),
            ));
        }
        let url = self.nodes[0].as_str();
        #[cfg(feature = "redis-tls")]
        let client = match &self.tls {
            Some(tls) => redis::Client::build_with_tls(url, tls.certificates()),
            None => redis::Client::open(url),
        }
        .map_err(bad)?;
        #[cfg(not(feature = "redis-tls"))]
        let client = redis::Client::open(url).map_err(bad)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(client, config)
            .map(Connection::Node)
            .map_err(bad)
    }
}

/// Makes ring the process's rustls provider, unless one was installed before.
#[cfg(feature = "redis-tls")]
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // ring rather than aws-lc-rs: no CMake or assembler toolchain to build it. rustls
            // 0.23.48 marks it deprecated for lacking post-quantum key exchange; an application
            // that wants that installs aws-lc-rs as the default before it opens a handle.
            // Err only if another thread installed one meanwhile: that one serves as well.
            #[allow(deprecated)]
            let provider = rustls::crypto::ring::default_provider();
            let _ = provider.install_default();
        }
    });
}

/// A store's connection: one node or a cluster, used through the redis crate's
/// [`ConnectionLike`], so commands and scripts are written once for both.
#[derive(Clone)]
pub(crate) enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A shared Redis connection with a call timeout and a key prefix. Cheap to clone; clones share
/// the connection.
#[derive(Clone)]
pub struct Redis {
    target: Target,
    conn: Connection,
    prefix: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.target.cluster)
            .field("tls", &self.target.uses_tls())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A lazily connected handle to the server at `url`: `redis://host:port/db`, or
    /// `rediss://host:port/db` for TLS (feature `redis-tls`).
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if the URL does not parse, or asks for TLS without the
    /// `redis-tls` feature.
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        Self::with_target(Target {
            nodes: Arc::from([url.to_owned()]),
            cluster: false,
            #[cfg(feature = "redis-tls")]
            tls: None,
        })
    }

    /// A lazily connected handle to the Redis Cluster that `seeds` belong to (any reachable
    /// nodes: the client learns the rest of the topology from them, and follows its changes).
    /// `rediss://` seeds connect with TLS (feature `redis-tls`).
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if there is no seed, a seed does not parse, or TLS is asked for
    /// without the `redis-tls` feature.
    pub fn cluster<I>(seeds: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Arc<[String]> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        if nodes.is_empty() {
            return Err(ConfigError::invalid(
                "redis cluster",
                "needs at least one seed URL",
            ));
        }
        Self::with_target(Target {
            nodes,
            cluster: true,
            #[cfg(feature = "redis-tls")]
            tls: None,
        })
    }

    fn with_target(target: Target) -> Result<Self, ConfigError> {
        let conn = target.connect(DEFAULT_TIMEOUT)?;
        Ok(Self {
            target,
            conn,
            prefix: Arc::from("bulwark"),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Checks servers against the roots in `tls` and presents its client certificate, if any
    /// (feature `redis-tls`). The handle gets a connection of its own; call it inside a tokio
    /// runtime, like [`open`](Self::open).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if the handle's URLs are not `rediss://`, or a certificate or
    /// key does not parse.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls(mut self, tls: TlsConfig) -> Result<Self, ConfigError> {
        if !self.target.nodes.iter().all(|n| n.starts_with("rediss://")) {
            return Err(ConfigError::invalid(
                "redis tls",
                "TLS settings need rediss:// URLs",
            ));
        }
        self.target.tls = Some(tls);
        self.conn = self.target.connect(self.timeout)?;
        Ok(self)
    }

    /// Prefixes every key with `prefix` and a colon (default `bulwark`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest a store call may take (default 250 ms), connecting included.
    ///
    /// The handle gets a connection of its own made with this timeout (clones made before
    /// keep theirs). Call it inside a tokio runtime, like [`open`](Self::open).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        // The connection applies its own connect and response timeouts too: made with the
        // default, it would fail any call slower than 250 ms whatever this timeout says.
        // Remaking it cannot fail: the target was checked when it was first made.
        if let Ok(conn) = self.target.connect(timeout) {
            self.conn = conn;
        }
        self.timeout = timeout;
        self
    }

    /// The key prefix.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this handle speaks to a Redis Cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.target.cluster
    }

    /// Checks that the server (on a cluster: every primary) answers within the call timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.run("ping", async move {
            match &mut conn {
                Connection::Node(c) => redis::cmd("PING").query_async::<()>(c).await,
                Connection::Cluster(c) => c
                    .route_command(
                        redis::cmd("PING"),
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await
                    .and_then(|v| every_node_answered(&v)),
            }
        })
        .await
    }

    /// `prefix:part1:part2...`
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let len = self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// A clone of the connection, for a store's commands.
    pub(crate) fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Runs one store call under the call timeout, mapping failures to [`StoreError`] and
    /// counting them.
    pub(crate) async fn run<T, F>(&self, operation: &'static str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => return Ok(v),
            // The connection's own response timeout is this call timeout too: the same
            // "no answer in time" (and the command may still run), so the same error.
            Ok(Err(e)) if e.is_timeout() => StoreError::Timeout {
                operation,
                timeout: self.timeout,
            },
            Ok(Err(e)) => StoreError::backend(operation, e),
            Err(_) => StoreError::Timeout {
                operation,
                timeout: self.timeout,
            },
        };
        // The one place a failed store call is counted, so it is also the one place it is
        // logged: `bulwark_store_errors_total` and these events always agree. The layers log
        // what their failure policy made of it, once per outage or per request.
        crate::metrics::store_error("redis", operation);
        tracing::warn!(
            target: "bulwark::store",
            store = "redis",
            operation,
            error = %result,
            "store call failed"
        );
        Err(result)
    }

    /// The next batch of keys matching `pattern` (a Redis glob), or `None` when the scan is
    /// over; on a cluster it walks every primary. Each step is one call under the timeout.
    pub(crate) async fn scan(
        &self,
        operation: &'static str,
        pattern: &str,
        scan: &mut Scan,
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let Some((node, cursor)) = scan.next_node() else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500);
        let mut conn = self.conn.clone();
        let reply = self
            .run(operation, async move {
                match (&mut conn, node) {
                    (Connection::Node(c), _) => cmd.query_async::<Value>(c).await,
                    (Connection::Cluster(c), None) => {
                        c.route_command(
                            cmd,
                            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                        )
                        .await
                    }
                    (Connection::Cluster(c), Some((host, port))) => {
                        c.route_command(
                            cmd,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host,
                                port,
                            }),
                        )
                        .await
                    }
                }
            })
            .await?;
        let malformed = |detail: &str| StoreError::Malformed {
            operation,
            detail: detail.to_owned(),
        };
        let mut keys = Vec::new();
        match (&self.conn, &reply) {
            // The first step on a cluster asked every primary: a map of node to reply.
            (Connection::Cluster(_), Value::Map(replies)) if scan.fresh => {
                scan.fresh = false;
                for (node, reply) in replies {
                    let (next, mut batch) = scan_reply(reply).ok_or_else(|| malformed("scan"))?;
                    keys.append(&mut batch);
                    if next != 0 {
                        let node = node_address(node).ok_or_else(|| malformed("scan node"))?;
                        scan.pending.push((Some(node), next));
                    }
                }
            }
            (_, reply) => {
                scan.fresh = false;
                let (next, batch) = scan_reply(reply).ok_or_else(|| malformed("scan"))?;
                keys = batch;
                if next != 0 {
                    scan.pending.push((scan.current.take(), next));
                }
            }
        }
        Ok(Some(keys))
    }
}

/// Where a [`Redis::scan`] stands: the nodes (on a cluster) and their cursors left to walk.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    fresh: bool,
    pending: Vec<(Option<(String, u16)>, u64)>,
    current: Option<(String, u16)>,
}

impl Scan {
    pub(crate) fn new() -> Self {
        Self {
            fresh: true,
            pending: Vec::new(),
            current: None,
        }
    }

    /// The node and cursor of the next step: the first step goes everywhere (`None`, 0).
    fn next_node(&mut self) -> Option<(Option<(String, u16)>, u64)> {
        if self.fresh {
            return Some((None, 0));
        }
        let (node, cursor) = self.pending.pop()?;
        self.current.clone_from(&node);
        Some((node, cursor))
    }
}

/// A `SCAN` reply: `[cursor, [key...]]`.
fn scan_reply(reply: &Value) -> Option<(u64, Vec<Vec<u8>>)> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let [cursor, keys] = parts.as_slice() else {
        return None;
    };
    let cursor: u64 = redis::from_redis_value_ref(cursor).ok()?;
    let keys: Vec<Vec<u8>> = redis::from_redis_value_ref(keys).ok()?;
    Some((cursor, keys))
}

/// `host:port` as the cluster client names a node.
fn node_address(node: &Value) -> Option<(String, u16)> {
    let name: String = redis::from_redis_value_ref(node).ok()?;
    let (host, port) = name.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// Fails if any node of a multi-node reply answered with an error.
fn every_node_answered(reply: &Value) -> redis::RedisResult<()> {
    if let Value::Map(replies) = reply {
        for (_, reply) in replies {
            if let Value::ServerError(e) = reply {
                return Err(e.clone().into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_replies_and_node_names_parse() {
        let reply = Value::Array(vec![
            Value::BulkString(b"17".to_vec()),
            Value::Array(vec![Value::BulkString(b"a".to_vec())]),
        ]);
        assert_eq!(scan_reply(&reply), Some((17, vec![b"a".to_vec()])));
        assert_eq!(scan_reply(&Value::Nil), None);
        assert_eq!(
            node_address(&Value::BulkString(b"127.0.0.1:7001".to_vec())),
            Some(("127.0.0.1".to_owned(), 7001))
        );
        assert_eq!(
            node_address(&Value::BulkString(b"::1:7001".to_vec())),
            Some(("::1".to_owned(), 7001))
        );
        assert_eq!(node_address(&Value::BulkString(b"nohost".to_vec())), None);
    }

    #[test]
    fn a_scan_starts_everywhere_then_walks_what_is_left() {
        let mut scan = Scan::new();
        assert_eq!(scan.next_node(), Some((None, 0)));
        scan.fresh = false;
        assert_eq!(scan.next_node(), None);
        scan.pending.push((Some(("h".to_owned(), 1)), 5));
        assert_eq!(scan.next_node(), Some((Some(("h".to_owned(), 1)), 5)));
        assert_eq!(scan.current, Some(("h".to_owned(), 1)));
    }

    #[tokio::test]
    async fn urls_are_checked_without_connecting() {
        assert!(Redis::open("redis://127.0.0.1:1/").is_ok());
        assert!(Redis::open("not a url").is_err());
        assert!(Redis::cluster(Vec::<String>::new()).is_err());
        let cluster = Redis::cluster(["redis://127.0.0.1:1"]).unwrap();
        assert!(cluster.is_cluster());
        #[cfg(not(feature = "redis-tls"))]
        assert!(Redis::open("rediss://127.0.0.1:1/").is_err());
        #[cfg(feature = "redis-tls")]
        {
            let tls = Redis::open("rediss://127.0.0.1:1/").unwrap();
            assert!(format!("{tls:?}").contains("tls: true"));
            let plain = Redis::open("redis://127.0.0.1:1/").unwrap();
            assert!(plain.tls(TlsConfig::new()).is_err());
        }
    }
}
