//! A small closed-loop HTTP/1.1 load generator for the benchmarks' HTTP load run.
//!
//! ```sh
//! cargo run --release --example load -- --url http://127.0.0.1:3000/healthz \
//!     --connections 32 --duration 10s
//! ```
//!
//! Each connection is one keep-alive HTTP/1.1 connection sending one request at a time; the
//! run reports requests per second, the status classes seen, and latency percentiles. Several
//! `--url`s are sent round-robin on every connection. `--header 'name: value'` adds a header.
//! Output is one JSON object on stdout, so runs can be compared by a script.

use std::{
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    urls: Vec<Uri>,
    connections: usize,
    duration: Duration,
    warm_up: Duration,
    headers: Vec<(String, String)>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("bad duration unit in {s:?} (use s or ms)")),
    }
}

/// The arguments, or `None` when `--help` was asked for (and printed).
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        urls: Vec::new(),
        connections: 32,
        duration: Duration::from_secs(10),
        warm_up: Duration::from_secs(1),
        headers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => {
                let uri: Uri = value()?.parse().map_err(|e| format!("bad --url: {e}"))?;
                if uri.scheme_str() != Some("http") {
                    return Err("only http:// URLs are supported".into());
                }
                args.urls.push(uri);
            }
            "--connections" | "-c" => {
                args.connections = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--connections must be a positive integer")?;
            }
            "--duration" | "-d" => args.duration = parse_duration(&value()?)?,
            "--warm-up" => args.warm_up = parse_duration(&value()?)?,
            "--header" | "-H" => {
                let h = value()?;
                let (name, val) = h.split_once(':').ok_or("--header wants 'name: value'")?;
                args.headers
                    .push((name.trim().to_owned(), val.trim().to_owned()));
            }
            "--help" | "-h" => {
                println!(
                    "usage: load --url URL [--url URL ...] [--connections N] [--duration 10s] \
                     [--warm-up 1s] [--header 'name: value' ...]"
                );
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.urls.is_empty() {
        return Err("at least one --url is needed".into());
    }
    Ok(Some(args))
}

#[derive(Default)]
struct Tally {
    /// Latencies in microseconds of the requests completed in the measured window.
    latencies: Vec<u32>,
    by_class: [u64; 6],
    errors: u64,
}

async fn connection(
    addr: SocketAddr,
    args: &Args,
    warm_until: Instant,
    stop_at: Instant,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut i = 0;
    while Instant::now() < stop_at {
        let uri = &args.urls[i % args.urls.len()];
        i += 1;
        let mut req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header("host", uri.authority().map_or("localhost", |a| a.as_str()));
        for (name, value) in &args.headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let start = Instant::now();
        if sender.ready().await.is_err() {
            tally.errors += 1;
            break;
        }
        match sender.send_request(req).await {
            Ok(res) => {
                let status = res.status().as_u16();
                if res.into_body().collect().await.is_err() {
                    tally.errors += 1;
                    break;
                }
                if start >= warm_until {
                    let micros = start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    tally.latencies.push(micros);
                    tally.by_class[usize::from(status / 100).min(5)] += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                break;
            }
        }
    }
    Ok(tally)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let authority = args.urls[0].authority().map(|a| a.as_str().to_owned());
    let addr: SocketAddr = match authority.as_deref().and_then(|a| {
        std::net::ToSocketAddrs::to_socket_addrs(a)
            .ok()
            .and_then(|mut it| it.next())
    }) {
        Some(addr) => addr,
        None => {
            eprintln!("load: cannot resolve {authority:?}");
            return ExitCode::from(2);
        }
    };
    let args: &'static Args = Box::leak(Box::new(args));
    let warm_until = Instant::now() + args.warm_up;
    let stop_at = warm_until + args.duration;
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(connection(addr, args, warm_until, stop_at)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        match task.await {
            Ok(Ok(t)) => {
                all.latencies.extend(t.latencies);
                for (a, b) in all.by_class.iter_mut().zip(t.by_class) {
                    *a += b;
                }
                all.errors += t.errors;
            }
            Ok(Err(e)) => {
                eprintln!("load: {e}");
                all.errors += 1;
            }
            Err(e) => {
                eprintln!("load: connection task failed: {e}");
                all.errors += 1;
            }
        }
    }
    all.latencies.sort_unstable();
    let n = all.latencies.len();
    let rps = n as f64 / args.duration.as_secs_f64();
    println!(
        "{{\"requests\":{n},\"requests_per_second\":{rps:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{},\"errors\":{},\"connections\":{},\"duration_s\":{}}}",
        percentile(&all.latencies, 50.0),
        percentile(&all.latencies, 90.0),
        percentile(&all.latencies, 99.0),
        all.latencies.last().copied().unwrap_or(0),
        all.by_class[2],
        all.by_class[3],
        all.by_class[4],
        all.by_class[5],
        all.errors,
        args.connections,
        args.duration.as_secs_f64(),
    );
    if n == 0 {
        eprintln!("load: no request completed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
