//! Soak and chaos: the shop, N instances sharing one Redis, under a mixed load for minutes,
//! while Redis is killed, paused and emptied, shops crash and upstreams fail on a seeded
//! schedule. Invariants are checked all the time and tabled at the end; the exit code is 1 if
//! any failed.
//!
//! ```text
//! cargo run --release --example soak -- --duration 10m --instances 2 --seed 7
//! ```
//!
//! It builds the shop (`cargo build --release --example shop`), starts its own `redis-server`
//! on a free loopback port (no persistence) and the shops on free ports, and stops them all
//! when it ends, Ctrl-C included. Everything it sends goes to loopback. What each invariant
//! means and the record of a 10-minute run are in RELIABILITY.md.
//!
//! | file | what |
//! | --- | --- |
//! | `main.rs` | arguments, the run: processes, workload tasks, the fault schedule, the end |
//! | `procs.rs` | `redis-server` and shop processes: start, signal, kill, restart; their logs and memory |
//! | `client.rs` | the HTTP client and what an answer holds |
//! | `faults.rs` | the seeded schedule, the timeline of what happened |
//! | `workload.rs` | payments, logins, reads, flag flips, recovery probes; the contract check |
//! | `report.rs` | the invariants, computed from the records, the timeline and the logs |

// Report arithmetic on a few thousand numbers: plain `a * b + c` reads better than `mul_add`.
#![allow(clippy::suboptimal_flops)]

mod client;
mod faults;
mod procs;
mod report;
mod workload;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use faults::{Fault, Planned, Timeline, Window};
use procs::{RedisProc, ShopProc};
use workload::Ctx;

const USAGE: &str = "\
Usage: soak [--duration 60s] [--instances 2] [--seed N]

  --duration D    how long the load and the faults run: 90s, 10m [default: 60s; at least 30s]
  --instances N   shop instances sharing one Redis [default: 2; 1 to 8]
  --seed N        the fault schedule and workload choices [default: 1]";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Args {
    duration: Duration,
    instances: usize,
    seed: u64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: expected e.g. 90s or 10m"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration `{text}`: the unit is s or m")),
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        duration: Duration::from_secs(60),
        instances: 2,
        seed: 1,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (flag, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("`{flag}` needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--duration" => parsed.duration = parse_duration(&value()?)?,
            "--instances" => {
                parsed.instances = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=8).contains(n))
                    .ok_or("`--instances` takes a number from 1 to 8")?;
            }
            "--seed" => {
                parsed.seed = value()?
                    .parse()
                    .map_err(|_| "`--seed` takes a whole number")?;
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if parsed.duration < Duration::from_secs(30) {
        return Err("`--duration` is at least 30s (warm-up and a quiet end take 13 s)".into());
    }
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("soak: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tokio::select! {
        code = run(args) => code,
        _ = tokio::signal::ctrl_c() => {
            // Dropping `run` drops every child handle, and each child is killed on drop.
            eprintln!("soak: interrupted; stopping the shops and Redis");
            ExitCode::from(130)
        }
    }
}

/// Builds the shop next to this binary (same profile) and returns its path.
fn build_shop() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = exe.parent().ok_or("this program has no folder")?;
    let release = dir.parent().is_some_and(|p| p.ends_with("release"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", "shop"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --example shop failed ({status})"));
    }
    let shop = dir.join("shop");
    if !shop.exists() {
        return Err(format!("no shop binary at {}", shop.display()));
    }
    Ok(shop)
}

async fn run(args: Args) -> ExitCode {
    let shop_bin = match build_shop() {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut redis = match RedisProc::start().await {
        Ok(redis) => redis,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = vec![
        ("REDIS_URL".to_owned(), redis.url()),
        (
            "SHOP_ADMIN_TOKEN".to_owned(),
            workload::ADMIN_TOKEN.to_owned(),
        ),
        // The soak is the trusted proxy: its `X-Forwarded-For` names the client.
        ("SHOP_TRUSTED_PROXIES".to_owned(), "127.0.0.1/32".to_owned()),
        ("SHOP_GLOBAL_RPS".to_owned(), "1000".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ];
    let mut shops: Vec<ShopProc> = (0..args.instances)
        .map(|i| ShopProc::new(i, shop_bin.clone(), env.clone()))
        .collect();
    for shop in &mut shops {
        if let Err(e) = shop.start().await {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    }

    let schedule = faults::plan(args.seed, args.duration, args.instances);
    println!(
        "soak: {} s, {} shop instances, seed {}, redis {}",
        args.duration.as_secs(),
        args.instances,
        args.seed,
        redis.url()
    );
    println!("fault schedule ({} faults):", schedule.len());
    for p in &schedule {
        println!("  {:>6.1} s  {}", p.at.as_secs_f64(), p.fault);
    }

    let start = Instant::now();
    let timeline = Arc::new(Timeline::default());
    let ctx = Arc::new(Ctx {
        http: client::Http::new(),
        shops: shops.iter().map(|s| s.addr.clone()).collect(),
        timeline: timeline.clone(),
        records: Mutex::new(workload::Records::default()),
        until: start + args.duration,
    });
    let mut tasks = Vec::new();
    for w in 0..4 {
        tasks.push(tokio::spawn(workload::payments(ctx.clone(), w, args.seed)));
    }
    for w in 0..2 {
        tasks.push(tokio::spawn(workload::logins(ctx.clone(), w, args.seed)));
    }
    for w in 0..3 {
        tasks.push(tokio::spawn(workload::readers(ctx.clone(), w, args.seed)));
    }
    tasks.push(tokio::spawn(workload::flag_flips(ctx.clone(), args.seed)));
    tasks.push(tokio::spawn(workload::late_retries(ctx.clone(), args.seed)));

    let probes = apply(&schedule, start, &mut redis, &mut shops, &ctx).await;
    tokio::time::sleep_until((start + args.duration).into()).await;
    for task in tasks.into_iter().chain(probes) {
        let _ = task.await;
    }
    let ended = Instant::now();

    let metrics = report::scrape_store_errors(&ctx, &shops).await;
    for shop in &mut shops {
        shop.stop().await;
    }
    redis.kill().await;
    let ok = report::report(&args, start, ended, &ctx, &timeline, &shops, &metrics);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Applies the schedule; returns the recovery probes it started.
async fn apply(
    schedule: &[Planned],
    start: Instant,
    redis: &mut RedisProc,
    shops: &mut [ShopProc],
    ctx: &Arc<Ctx>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut probes = Vec::new();
    for (n, planned) in schedule.iter().enumerate() {
        tokio::time::sleep_until((start + planned.at).into()).await;
        let began = Instant::now();
        let mut back_on_store = None;
        match &planned.fault {
            Fault::RedisKill(down) => {
                redis.kill().await;
                ctx.timeline.record(|e| e.data_losses.push(began));
                tokio::time::sleep(*down).await;
                if let Err(e) = redis.restart().await {
                    eprintln!("soak: {e}");
                }
                back_on_store = Some(Instant::now());
            }
            Fault::RedisPause(lasts) => {
                redis.pause();
                tokio::time::sleep(*lasts).await;
                redis.resume();
                back_on_store = Some(Instant::now());
            }
            Fault::RedisEmpty => {
                ctx.timeline.record(|e| e.data_losses.push(began));
                if let Err(e) = redis.restart().await {
                    eprintln!("soak: {e}");
                }
                back_on_store = Some(Instant::now());
            }
            Fault::ShopKill { instance, down } => {
                let shop = &mut shops[*instance];
                shop.kill().await;
                tokio::time::sleep(*down).await;
                if let Err(e) = shop.start().await {
                    eprintln!("soak: {e}");
                }
                let end = Instant::now();
                ctx.timeline
                    .record(|e| e.shop_down.push((*instance, Window { start: began, end })));
            }
            Fault::Upstream {
                target,
                failure_rate,
                latency_ms,
                lasts,
            } => {
                set_chaos(ctx, target, *failure_rate, *latency_ms).await;
                tokio::time::sleep(*lasts).await;
                set_chaos(ctx, target, 0.0, 0).await;
                let end = Instant::now();
                ctx.timeline
                    .record(|e| e.upstream.push(Window { start: began, end }));
            }
        }
        if let Some(back) = back_on_store {
            ctx.timeline.record(|e| {
                e.store.push(Window {
                    start: began,
                    end: back,
                })
            });
            probes.push(tokio::spawn(workload::measure_recovery(
                ctx.clone(),
                back,
                n as u64,
            )));
        }
    }
    probes
}

/// Sets an upstream's injected faults on every running shop.
async fn set_chaos(ctx: &Ctx, target: &str, failure_rate: f32, latency_ms: u64) {
    let body = format!(
        r#"{{"target":"{target}","failure_rate":{failure_rate},"latency_ms":{latency_ms}}}"#
    );
    let auth = format!("Bearer {}", workload::ADMIN_TOKEN);
    for i in 0..ctx.shops.len() {
        ctx.call(
            "POST /admin/chaos",
            i,
            "/admin/chaos",
            &[("authorization", &auth)],
            Some(body.clone()),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments() {
        let defaults = parse(&[]).unwrap().unwrap();
        assert_eq!(
            defaults,
            Args {
                duration: Duration::from_secs(60),
                instances: 2,
                seed: 1
            }
        );
        let args = parse(&["--duration", "10m", "--instances=3", "--seed", "42"])
            .unwrap()
            .unwrap();
        assert_eq!(
            args,
            Args {
                duration: Duration::from_secs(600),
                instances: 3,
                seed: 42
            }
        );
        assert_eq!(parse(&["--help"]).unwrap(), None);
        for bad in [
            &["--duration", "10"][..],
            &["--duration", "10h"],
            &["--duration", "20s"],
            &["--instances", "0"],
            &["--instances", "9"],
            &["--seed", "x"],
            &["--seed"],
            &["--what"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
