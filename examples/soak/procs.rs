//! The soak's child processes: one `redis-server` and N shops, each started, signalled, killed
//! and restarted on the fault schedule, and all killed when the soak ends (`kill_on_drop`, so
//! also when it is interrupted).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    sync::oneshot,
};

/// A free loopback port (bound, read, released).
pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, `TERM`) to `pid` with the system's `kill`.
fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The soak's own `redis-server`: no persistence, like a cache node, on one loopback port for
/// its whole life (the shops keep its URL across restarts).
#[derive(Debug)]
pub(crate) struct RedisProc {
    port: u16,
    child: Option<Child>,
}

impl RedisProc {
    /// Starts `redis-server` on a free port and waits until it answers `PING`.
    pub(crate) async fn start() -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let mut redis = Self {
                port: free_port()?,
                child: None,
            };
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = e,
            }
        }
        Err(format!("redis-server did not start: {last}"))
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run redis-server (apt-get install redis-server): {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server exited at once ({status}); port taken?"
                    ));
                }
            }
            if self.ping().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill().await;
        Err(format!(
            "redis-server did not answer on port {} within 5 s",
            self.port
        ))
    }

    /// Whether the server answers `PING` within 200 ms.
    pub(crate) async fn ping(&self) -> bool {
        let ping = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await.ok()?;
            line.starts_with("+PONG").then_some(())
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(200), ping).await,
            Ok(Some(()))
        )
    }

    /// SIGSTOP: the server keeps its connections and answers nothing (slow, not down).
    pub(crate) fn pause(&self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            signal(pid, "STOP");
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub(crate) fn resume(&self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            signal(pid, "CONT");
        }
    }

    /// SIGKILL; its data is gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port, empty.
    pub(crate) async fn restart(&mut self) -> Result<(), String> {
        self.kill().await;
        let mut last = String::new();
        // The port may be held a moment longer by the dead server's sockets.
        for _ in 0..20 {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("redis-server did not restart: {last}"))
    }
}

/// What one shop process wrote to its logs that the invariants need.
#[derive(Debug, Default)]
pub(crate) struct ShopLog {
    /// `(idempotency key, when)` of each `payment charged` line.
    pub(crate) charges: Vec<(String, Instant)>,
    /// `store call failed` lines, by operation.
    pub(crate) store_errors: std::collections::BTreeMap<String, u64>,
    /// Lines (stdout or stderr) that report a panic.
    pub(crate) panics: Vec<String>,
    /// When the global limiter said it decides in Redis again / stopped being able to.
    pub(crate) limiter_back: Vec<Instant>,
    pub(crate) limiter_down: Vec<Instant>,
    /// When the flags said reloading from Redis works again / failed.
    pub(crate) flags_back: Vec<Instant>,
    pub(crate) flags_down: Vec<Instant>,
    /// Lines read, for the report.
    pub(crate) lines: u64,
}

impl ShopLog {
    /// Reads one JSON log line from the shop's stdout. Only lines that matter are parsed.
    fn stdout_line(&mut self, line: &str, listening: &mut Option<oneshot::Sender<SocketAddr>>) {
        self.lines += 1;
        let now = Instant::now();
        let interesting = [
            "payment charged",
            "store call failed",
            "panic",
            "rate limit store",
            "feature flag",
            "shop listening",
        ];
        if !interesting.iter().any(|needle| line.contains(needle)) {
            return;
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let field = |name: &str| event.get(name).and_then(serde_json::Value::as_str);
        let message = field("message").unwrap_or("");
        if message.contains("panic") {
            self.panics.push(line.to_owned());
        }
        match message {
            "shop listening" => {
                let addr = field("addr").and_then(|a| a.parse().ok());
                if let (Some(addr), Some(tx)) = (addr, listening.take()) {
                    let _ = tx.send(addr);
                }
            }
            "payment charged" => {
                let key = field("payment.idempotency_key").unwrap_or("").to_owned();
                self.charges.push((key, now));
            }
            "store call failed" => {
                let op = field("operation").unwrap_or("?").to_owned();
                *self.store_errors.entry(op).or_default() += 1;
            }
            m if m.starts_with("rate limit store reachable again")
                && field("limiter") == Some("global") =>
            {
                self.limiter_back.push(now);
            }
            m if m.starts_with("rate limit store unavailable")
                && field("limiter") == Some("global") =>
            {
                self.limiter_down.push(now);
            }
            m if m.starts_with("feature flags: reloading from Redis works again") => {
                self.flags_back.push(now);
            }
            m if m.starts_with("feature flag reload failed") => self.flags_down.push(now),
            _ => {}
        }
    }

    fn stderr_line(&mut self, line: &str) {
        if line.contains("panicked") {
            self.panics.push(line.to_owned());
        }
    }
}

/// One run of a shop process, from start to kill or exit.
#[derive(Debug)]
pub(crate) struct Incarnation {
    pub(crate) instance: usize,
    pub(crate) started: Instant,
    pub(crate) ended: Option<Instant>,
    /// Whether it was killed (its metrics cannot be read at the end).
    pub(crate) killed: bool,
    pub(crate) log: Arc<Mutex<ShopLog>>,
    /// `(when, resident bytes)`, sampled every second.
    pub(crate) rss: Arc<Mutex<Vec<(Instant, u64)>>>,
}

/// One shop instance: a process, restarted on the schedule, on a new port each time.
#[derive(Debug)]
pub(crate) struct ShopProc {
    pub(crate) index: usize,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Where it listens now; `None` while it is down.
    pub(crate) addr: Arc<Mutex<Option<SocketAddr>>>,
    pub(crate) incarnations: Vec<Incarnation>,
}

impl ShopProc {
    pub(crate) fn new(index: usize, bin: PathBuf, env: Vec<(String, String)>) -> Self {
        Self {
            index,
            bin,
            env,
            child: None,
            addr: Arc::new(Mutex::new(None)),
            incarnations: Vec::new(),
        }
    }

    /// Starts the process on a free port and waits for its `shop listening` line.
    pub(crate) async fn start(&mut self) -> Result<SocketAddr, String> {
        let mut child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SHOP_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let log = Arc::new(Mutex::new(ShopLog::default()));
        let (tx, rx) = oneshot::channel();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        tokio::spawn(read_lines(stdout, log.clone(), Some(tx), false));
        tokio::spawn(read_lines(stderr, log.clone(), None, true));
        let rss = Arc::new(Mutex::new(Vec::new()));
        if let Some(pid) = child.id() {
            tokio::spawn(sample_rss(pid, rss.clone()));
        }
        self.child = Some(child);
        self.incarnations.push(Incarnation {
            instance: self.index,
            started: Instant::now(),
            ended: None,
            killed: false,
            log,
            rss,
        });
        let addr = match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                return Err(format!(
                    "shop {} did not start listening within 10 s",
                    self.index
                ));
            }
        };
        *self.addr.lock().unwrap() = Some(addr);
        Ok(addr)
    }

    /// SIGKILL: a crash. Requests in flight on it are cut.
    pub(crate) async fn kill(&mut self) {
        *self.addr.lock().unwrap() = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        if let Some(inc) = self.incarnations.last_mut() {
            inc.ended = Some(Instant::now());
            inc.killed = true;
        }
    }

    /// SIGTERM and wait (the shop drains its connections), at the end of the run.
    pub(crate) async fn stop(&mut self) {
        *self.addr.lock().unwrap() = None;
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(pid, "TERM");
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some(inc) = self.incarnations.last_mut() {
            inc.ended.get_or_insert_with(Instant::now);
        }
    }
}

async fn read_lines<R: AsyncRead + Unpin>(
    from: R,
    log: Arc<Mutex<ShopLog>>,
    mut listening: Option<oneshot::Sender<SocketAddr>>,
    stderr: bool,
) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut log = log.lock().unwrap();
        if stderr {
            log.stderr_line(&line);
        } else {
            log.stdout_line(&line, &mut listening);
        }
    }
}

/// Samples the process' resident memory (`VmRSS`) every second until it is gone.
async fn sample_rss(pid: u32, into: Arc<Mutex<Vec<(Instant, u64)>>>) {
    let path = format!("/proc/{pid}/status");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(status) = tokio::fs::read_to_string(&path).await else {
            return;
        };
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        match kib {
            Some(kib) => into.lock().unwrap().push((Instant::now(), kib * 1024)),
            // A zombie (killed, not yet reaped) has no VmRSS line.
            None => return,
        }
    }
}
