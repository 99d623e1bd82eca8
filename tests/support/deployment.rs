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
            Backend::Cluster => Self::start_cluster(),
        }
    }

    /// One deployment of `backend` per test binary, shared while any test holds it.
    pub fn shared(backend: Backend) -> Option<Arc<Self>> {
        static SHARED: Mutex<[Weak<Deployment>; 3]> =
            Mutex::new([Weak::new(), Weak::new(), Weak::new()]);
        let i = backend as usize;
        let mut slots = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slots[i].upgrade() {
            return Some(d);
        }
        let d = Arc::new(Self::start(backend)?);
        slots[i] = Arc::downgrade(&d);
        Some(d)
    }

    fn start_tls() -> Option<Self> {
        let dir = scratch("tls");
        certificates(&dir).unwrap_or_else(|e| panic!("test certificates: {e}"));
        let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let args = vec![
            "--tls-cert-file".to_owned(),
            file("server.pem"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let server = RedisServer::start_with(&args, true, free_port)?;
        let ca = std::fs::read(dir.join("ca.pem")).expect("the CA certificate");
        Some(Self {
            backend: Backend::Tls,
            servers: vec![server],
            ca: Some(ca),
            dir: Some(dir),
        })
    }

    fn start_cluster() -> Option<Self> {
        let dir = scratch("cluster");
        let mut servers = Vec::new();
        for i in 0..6 {
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).expect("a node directory");
            let args = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-node-timeout".to_owned(),
                "2000".to_owned(),
                "--dir".to_owned(),
                node_dir.to_string_lossy().into_owned(),
            ];
            servers.push(RedisServer::start_with(&args, false, cluster_port)?);
        }
        let nodes: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend_from_slice(&["--cluster-replicas", "1", "--cluster-yes"]);
        run("redis-cli", &args).unwrap_or_else(|e| panic!("cluster create: {e}"));
        let d = Self {
            backend: Backend::Cluster,
            servers,
            ca: None,
            dir: Some(dir),
        };
        d.wait_until_healthy(Duration::from_secs(30));
        Some(d)
    }

    /// Waits until every live node reports `cluster_state:ok` and every replica's link to its
    /// primary is up (a replica that never synced is never promoted).
    pub fn wait_until_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let healthy = self.servers.iter().filter(|s| s.is_running()).all(|s| {
                let ok = cli(s.port(), &["cluster", "info"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"));
                let synced = cli(s.port(), &["info", "replication"]).is_ok_and(|i| {
                    !i.contains("role:slave") || i.contains("master_link_status:up")
                });
                ok && synced
            });
            if healthy {
                return;
            }
            assert!(Instant::now() < deadline, "the test cluster is not healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A handle on this deployment with bulwark's defaults (prefix and timeout are the
    /// test's to set).
    pub fn redis(&self) -> Redis {
        match self.backend {
            Backend::Node => Redis::open(&self.servers[0].url()).unwrap(),
            Backend::Tls => self.tls_redis(),
            Backend::Cluster => Redis::cluster(self.servers.iter().map(|s| s.url())).unwrap(),
        }
    }

    #[cfg(feature = "redis-tls")]
    fn tls_redis(&self) -> Redis {
        let ca = self.ca.clone().expect("a TLS deployment has its CA");
        Redis::open(&self.servers[0].url())
            .unwrap()
            .tls(bulwark::redis::TlsConfig::new().root_certificates(ca))
            .unwrap()
    }

    #[cfg(not(feature = "redis-tls"))]
    #[allow(clippy::unused_self)]
    fn tls_redis(&self) -> Redis {
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
        if self.backend == Backend::Tls {
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
        let port = self.servers.iter().find(|s| s.is_running()).unwrap().port();
        let slot = cli(port, &["cluster", "keyslot", key]).unwrap();
        let slot: u16 = slot.trim().parse().unwrap();
        let shards = cli(port, &["cluster", "slots"]).unwrap();
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

/// Runs one async test body on every backend, as tests `NAME::node`, `NAME::tls` (feature
/// `redis-tls`) and `NAME::cluster`, each with the backend's shared [`Deployment`].
#[macro_export]
macro_rules! every_backend {
    ($(#[$meta:meta])* async fn $name:ident($d:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($d: &$crate::support::Deployment) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn node() {
                if let Some(d) = $crate::support::Deployment::shared($crate::support::Backend::Node) {
                    body(&d).await;
                }
            }

            #[cfg(feature = "redis-tls")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls() {
                if let Some(d) = $crate::support::Deployment::shared($crate::support::Backend::Tls) {
                    body(&d).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                if let Some(d) = $crate::support::Deployment::shared($crate::support::Backend::Cluster) {
                    body(&d).await;
                }
            }
        }
    };
}
