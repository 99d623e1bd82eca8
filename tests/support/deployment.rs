//! Redis deployments for the tests: one node, one node over TLS, and a cluster of three
//! primaries with a replica each, all on loopback, started by the test and stopped on drop.
//!
//! One test body runs on each with [`every_backend!`](crate::every_backend): the body gets a
//! [`Deployment`] and makes its handles with [`Deployment::redis`], so it never knows which one
//! it has, as the stores do not.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use bulwark::redis::Redis;

use super::{RedisServer, free_port};

/// Which deployment a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One node, plain TCP.
    Node,
    /// One node over TLS, with a certificate authority made for the run.
    Tls,
    /// Three primaries and three replicas (`cluster-node-timeout 2000`).
    Cluster,
    /// The same cluster over TLS (clients, replication and the cluster bus).
    TlsCluster,
}

/// A running deployment of one [`Backend`].
pub struct Deployment {
    backend: Backend,
    /// The nodes; on a cluster, the first three were created as primaries.
    pub servers: Vec<RedisServer>,
    ca: Option<Vec<u8>>,
    dir: Option<PathBuf>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fresh directory for one deployment's files.
fn scratch(what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bulwark-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A free port below 55536 whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        if p < 55536 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} did not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `redis-cli -p PORT args...`
pub fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let port = port.to_string();
    let mut all = vec!["-p", port.as_str()];
    all.extend_from_slice(args);
    run("redis-cli", &all)
}

/// A CA and a server certificate for 127.0.0.1 and localhost, made with openssl.
fn certificates(dir: &std::path::Path) -> Result<(), String> {
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .map_err(|e| e.to_string())?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=bulwark test CA",
    ];
    ca.extend_from_slice(&ec);
    let (ca_key, ca_pem) = (path("ca.key"), path("ca.pem"));
    ca.extend_from_slice(&["-keyout", &ca_key, "-out", &ca_pem]);
    run("openssl", &ca)?;
    let (key, csr, pem, ext) = (
        path("server.key"),
        path("server.csr"),
        path("server.pem"),
        path("ext.cnf"),
    );
    let mut req = vec!["req", "-nodes", "-subj", "/CN=localhost"];
    req.extend_from_slice(&ec);
    req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
    run("openssl", &req)?;
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ],
    )?;
    Ok(())
}

impl Deployment {
    /// Starts a deployment of `backend`, or skips (`None`) where `redis-server` is missing
    /// outside CI; anything else that keeps it from starting fails the test.
    pub fn start(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Node => Some(Self {
                backend,
                servers: vec![RedisServer::start()?],
                ca: None,
                dir: None,
            }),
            Backend::Tls => Self::start_tls(),
            Backend::Cluster => Self::start_cluster(false),
            Backend::TlsCluster => Self::start_cluster(true),
        }
    }

    /// One deployment of `backend` per test binary, shared while any test holds it.
    pub fn shared(backend: Backend) -> Option<Arc<Self>> {
        static SHARED: Mutex<[Weak<Deployment>; 4]> =
            Mutex::new([Weak::new(), Weak::new(), Weak::new(), Weak::new()]);
        let i = backend as usize;
        let mut slots = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slots[i].upgrade() {
            return Some(d);
        }
        let d = Arc::new(Self::start(backend)?);
        slots[i] = Arc::downgrade(&d);
        Some(d)
    }

    /// Whether clients speak TLS to this deployment.
    pub fn is_tls(&self) -> bool {
        matches!(self.backend, Backend::Tls | Backend::TlsCluster)
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster | Backend::TlsCluster)
    }

    /// The server arguments for TLS with the certificates in `dir`.
    fn tls_args(dir: &std::path::Path) -> Vec<String> {
        certificates(dir).unwrap_or_else(|e| panic!("test certificates: {e}"));
        let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
        [
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn start_tls() -> Option<Self> {
        let dir = scratch("tls");
        let args = Self::tls_args(&dir);
        let server = RedisServer::start_with(&args, true, free_port)?;
        let ca = std::fs::read(dir.join("ca.pem")).expect("the CA certificate");
        Some(Self {
            backend: Backend::Tls,
            servers: vec![server],
            ca: Some(ca),
            dir: Some(dir),
        })
    }

    fn start_cluster(tls: bool) -> Option<Self> {
        let dir = scratch(if tls { "tls-cluster" } else { "cluster" });
        let mut common = vec![
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-node-timeout".to_owned(),
            "2000".to_owned(),
        ];
        if tls {
            common.extend(Self::tls_args(&dir));
            common.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned));
        }
        let mut servers = Vec::new();
        for i in 0..6 {
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).expect("a node directory");
            let mut args = common.clone();
            args.extend(["--dir".to_owned(), node_dir.to_string_lossy().into_owned()]);
            servers.push(RedisServer::start_with(&args, tls, cluster_port)?);
        }
        let ca = tls.then(|| std::fs::read(dir.join("ca.pem")).expect("the CA certificate"));
        let d = Self {
            backend: if tls {
                Backend::TlsCluster
            } else {
                Backend::Cluster
            },
            servers,
            ca,
            dir: Some(dir),
        };
        let nodes: Vec<String> = d
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend_from_slice(&["--cluster-replicas", "1", "--cluster-yes"]);
        d.cli_on(0, &args)
            .unwrap_or_else(|e| panic!("cluster create: {e}"));
        d.wait_until_healthy(Duration::from_secs(30));
        Some(d)
    }

    /// Waits until every live node reports `cluster_state:ok` and every replica's link to its
    /// primary is up (a replica that never synced is never promoted). A single node is
    /// healthy when it answers.
    pub fn wait_until_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let healthy = (0..self.servers.len())
                .filter(|&i| self.servers[i].is_running())
                .all(|i| {
                    if !self.is_cluster() {
                        return self.cli_on(i, &["ping"]).is_ok_and(|r| r.contains("PONG"));
                    }
                    let ok = self
                        .cli_on(i, &["cluster", "info"])
                        .is_ok_and(|i| i.contains("cluster_state:ok"));
                    let synced = self.cli_on(i, &["info", "replication"]).is_ok_and(|i| {
                        !i.contains("role:slave") || i.contains("master_link_status:up")
                    });
                    ok && synced
                });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test deployment is not healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes every server stop answering clients for `ms` milliseconds (`CLIENT PAUSE`).
    pub fn pause_all(&self, ms: u64) {
        let ms = ms.to_string();
        for i in 0..self.servers.len() {
            if self.servers[i].is_running() {
                self.cli_on(i, &["CLIENT", "PAUSE", &ms, "ALL"]).unwrap();
            }
        }
    }

    /// Stops every server: Redis is gone.
    pub fn stop_all(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
    }

    /// Starts every server again, empty (a cluster keeps its topology in its nodes' files),
    /// and waits until the deployment serves.
    pub fn restart_all(&mut self) {
        for s in &mut self.servers {
            s.restart();
        }
        self.wait_until_healthy(Duration::from_secs(30));
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A handle on this deployment with bulwark's defaults (prefix and timeout are the
    /// test's to set).
    pub fn redis(&self) -> Redis {
        let redis = if self.is_cluster() {
            Redis::cluster(self.servers.iter().map(|s| s.url())).unwrap()
        } else {
            Redis::open(&self.servers[0].url()).unwrap()
        };
        if self.is_tls() {
            self.trusting_the_ca(redis)
        } else {
            redis
        }
    }

    #[cfg(feature = "redis-tls")]
    fn trusting_the_ca(&self, redis: Redis) -> Redis {
        let ca = self.ca.clone().expect("a TLS deployment has its CA");
        redis
            .tls(bulwark::redis::TlsConfig::new().root_certificates(ca))
            .unwrap()
    }

    #[cfg(not(feature = "redis-tls"))]
    #[allow(clippy::unused_self)]
    fn trusting_the_ca(&self, _: Redis) -> Redis {
        panic!("TLS tests need the `redis-tls` feature")
    }

    /// `redis-cli` on node `i`, over TLS where the deployment speaks it, following redirects.
    pub fn cli_on(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let port = self.servers[i].port().to_string();
        let ca = self
            .dir
            .as_ref()
            .map(|d| d.join("ca.pem").to_string_lossy().into_owned());
        let mut all = vec!["-c", "-p", port.as_str()];
        if self.is_tls() {
            all.extend_from_slice(&["--tls", "--cacert", ca.as_deref().unwrap()]);
        }
        all.extend_from_slice(args);
        run("redis-cli", &all)
    }

    /// Every key matching `pattern` on every node, sorted, each once.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = (0..self.servers.len())
            .filter(|&i| self.servers[i].is_running())
            .flat_map(|i| {
                let out = self.cli_on(i, &["--scan", "--pattern", pattern]).unwrap();
                out.lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The CA certificate (PEM) of a TLS deployment.
    pub fn ca(&self) -> Option<&[u8]> {
        self.ca.as_deref()
    }

    /// The port of the node that serves `key`'s slot as primary (cluster only).
    pub fn primary_for(&self, key: &str) -> u16 {
        let i = self
            .servers
            .iter()
            .position(RedisServer::is_running)
            .unwrap();
        let slot = self.cli_on(i, &["cluster", "keyslot", key]).unwrap();
        let slot: u16 = slot.trim().parse().unwrap();
        let shards = self.cli_on(i, &["cluster", "slots"]).unwrap();
        // Lines: start, end, ip, port, id, (replica ip, port, id)...
        let lines: Vec<&str> = shards.lines().map(str::trim).collect();
        let mut i = 0;
        while i + 3 < lines.len() {
            if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>()) {
                if (start..=end).contains(&slot) && lines[i + 2].contains('.') {
                    return lines[i + 3].parse().unwrap();
                }
            }
            i += 1;
        }
        panic!("no primary for slot {slot}: {shards}");
    }
}

/// Runs one async test body on every backend, as tests `NAME::node`, `NAME::tls`,
/// `NAME::cluster` and `NAME::tls_cluster` (the TLS ones with feature `redis-tls`). The body
/// gets `&Deployment`, the backend's shared one; with `own` before `async fn`, it gets
/// `&mut Deployment`, started for this test alone (to stop and restart it).
#[macro_export]
macro_rules! every_backend {
    ($(#[$meta:meta])* async fn $name:ident($d:ident) $body:block) => {
        $crate::every_backend!(@each $(#[$meta])* $name, |backend| {
            if let Some(d) = $crate::support::Deployment::shared(backend) {
                body(&d).await;
            }
        }, async fn body($d: &$crate::support::Deployment) $body);
    };
    ($(#[$meta:meta])* own async fn $name:ident($d:ident) $body:block) => {
        $crate::every_backend!(@each $(#[$meta])* $name, |backend| {
            if let Some(mut d) = $crate::support::Deployment::start(backend) {
                body(&mut d).await;
            }
        }, async fn body($d: &mut $crate::support::Deployment) $body);
    };
    (@each $(#[$meta:meta])* $name:ident, |$backend:ident| $run:block, $($body:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $($body)*

            async fn on($backend: $crate::support::Backend) $run

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn node() {
                on($crate::support::Backend::Node).await;
            }

            #[cfg(feature = "redis-tls")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls() {
                on($crate::support::Backend::Tls).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                on($crate::support::Backend::Cluster).await;
            }

            #[cfg(feature = "redis-tls")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls_cluster() {
                on($crate::support::Backend::TlsCluster).await;
            }
        }
    };
}
