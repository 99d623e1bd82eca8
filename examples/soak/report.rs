//! The invariants, computed at the end from the workload's records, the fault timeline and
//! the shops' logs, and printed as two tables: latency per route, and one line per invariant.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    time::{Duration, Instant},
};

use crate::{
    Args,
    client::Failure,
    faults::{Events, Timeline},
    procs::{Incarnation, ShopProc},
    workload::{Ctx, LOGIN_IPS},
};

/// The shops' Redis call timeout (bulwark's default).
const STORE_TIMEOUT: Duration = Duration::from_millis(250);
/// Added to every latency bound for the machine itself: two shops, Redis and the load
/// generator share its cores.
const SCHEDULING_SLACK: Duration = Duration::from_millis(250);
/// A flag changed on one instance is seen by the others within this, while Redis answers.
const FLAG_BOUND: Duration = Duration::from_secs(1);
/// After Redis answers again, every layer uses it again within this.
pub(crate) const RECOVERY_BOUND: Duration = Duration::from_secs(2);
/// The login limit: 5 a minute, bursts of 5 (`examples/shop/login.rs`).
const LOGIN_BURST: f64 = 5.0;
const LOGIN_PER_SECOND: f64 = 5.0 / 60.0;
/// Memory samples before this (after a process started) are warm-up.
const RSS_WARM_UP: Duration = Duration::from_secs(10);
/// The resident memory's fitted growth over the run after warm-up must stay under this many
/// MiB, or this share of the memory at the end of warm-up if that is more. The shop's bounded
/// structures (a 10,000-payment ledger, 32 MiB of cache that lives in Redis here, the
/// limiters' key tables) fill within the first minutes; anything that grows without bound
/// crosses it in a long run.
const RSS_GROWTH_BOUND_MIB: f64 = 4.0;
const RSS_GROWTH_BOUND_SHARE: f64 = 0.10;

/// The longest a request on `route` may take: the store calls on its path at the store
/// timeout each, plus the handler's own time.
pub(crate) fn bound(route: &str) -> Duration {
    let t = STORE_TIMEOUT;
    let own = match route {
        // Global limit, claim, completion.
        "POST /payments" => 3 * t,
        // Global and login limits.
        "POST /login" => 2 * t,
        // Global limit, cache lookup, the 80 ms query, storing the answer.
        "GET /products" => 3 * t + Duration::from_millis(80),
        // Global limit and the upstream's added latency (no timeout on this route).
        "GET /recommendations" => t + Duration::from_millis(crate::faults::MAX_UPSTREAM_LATENCY_MS),
        // Global limit and the sections' 500 ms timeout.
        "GET /dashboard" => t + Duration::from_millis(500),
        // Global limit and the flag store write.
        "PUT /admin/flags" => 2 * t,
        _ => t,
    };
    own + SCHEDULING_SLACK
}

/// `bulwark_store_errors_total` by operation, per instance still running at the end (read
/// twice a second apart, so the logs have caught up and nothing moved).
pub(crate) async fn scrape_store_errors(
    ctx: &Ctx,
    shops: &[ShopProc],
) -> Vec<Option<BTreeMap<String, u64>>> {
    let mut out = Vec::new();
    for shop in shops {
        let mut reads = Vec::new();
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let text = ctx
                .call("GET /metrics", shop.index, "/metrics", &[], None)
                .await;
            reads.push(text.map(|a| parse_store_errors(&String::from_utf8_lossy(&a.body))));
        }
        out.push(match (reads.pop().flatten(), reads.pop().flatten()) {
            (Some(last), Some(first)) if last == first => Some(last),
            _ => None,
        });
    }
    out
}

fn parse_store_errors(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("bulwark_store_errors_total{"))
    {
        let op = line
            .split("operation=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?");
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *counts.entry(op.to_owned()).or_default() += value as u64;
    }
    counts
}

/// One line of the invariant table.
struct Line {
    name: String,
    checked: u64,
    failed: u64,
    worst: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn secs(start: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(start).as_secs_f64()
}

/// Least-squares slope of `(seconds, bytes)` in MiB per minute.
pub(crate) fn slope_mib_per_min(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 5 {
        return None;
    }
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den * 60.0 / (1024.0 * 1024.0))
}

/// The login admissions one client IP may get in a run: the shared quota over the run, a
/// fresh burst after each loss of Redis' data and each shop restart, and, for every stretch
/// Redis was away (widened by a second each side), each instance's local limiter with the
/// same quota (`FailurePolicy::Local`: with N instances, up to N times the limit).
pub(crate) fn login_bound(run: Duration, events: &Events, instances: usize) -> f64 {
    let shared =
        LOGIN_BURST * (1 + events.data_losses.len()) as f64 + LOGIN_PER_SECOND * run.as_secs_f64();
    let local: f64 = events
        .store
        .iter()
        .map(|w| LOGIN_BURST + LOGIN_PER_SECOND * ((w.end - w.start).as_secs_f64() + 2.0))
        .sum::<f64>()
        * instances as f64;
    shared + local + LOGIN_BURST * events.shop_down.len() as f64
}

#[allow(clippy::too_many_lines)]
pub(crate) fn report(
    args: &Args,
    start: Instant,
    ended: Instant,
    ctx: &Ctx,
    timeline: &Timeline,
    shops: &[ShopProc],
    metrics: &[Option<BTreeMap<String, u64>>],
) -> bool {
    let events = timeline.events();
    let records = ctx.records.lock().unwrap();
    let incarnations: Vec<&Incarnation> = shops.iter().flat_map(|s| &s.incarnations).collect();
    let margin = Duration::from_secs(1);
    let faulty = |from: Instant, to: Instant| {
        events
            .store
            .iter()
            .chain(&events.upstream)
            .chain(events.shop_down.iter().map(|(_, w)| w))
            .any(|w| w.meets(from, to, margin))
    };
    let shop_was_down = |instance: usize, from: Instant, to: Instant| {
        events
            .shop_down
            .iter()
            .any(|(i, w)| *i == instance && w.meets(from, to, Duration::from_millis(500)))
    };
    let mut lines = Vec::new();

    // Latency per route, in calm and during faults.
    let mut by_route: BTreeMap<&str, (Vec<Duration>, Vec<Duration>)> = BTreeMap::new();
    for s in &records.samples {
        if s.outcome == Err(Failure::Refused) {
            continue;
        }
        let entry = by_route.entry(s.route).or_default();
        if faulty(s.start, s.start + s.latency) {
            entry.1.push(s.latency);
        } else {
            entry.0.push(s.latency);
        }
    }
    println!("\nlatency by route (calm | during faults):");
    println!(
        "  {:<22} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8}",
        "route", "calm n", "p99.9", "max", "fault n", "p99.9", "max", "bound"
    );
    let mut over_bound = 0;
    let mut worst_over = String::new();
    let mut checked_latency = 0;
    for (route, (calm, fault)) in &mut by_route {
        calm.sort();
        fault.sort();
        let bound = bound(route);
        let max = calm.last().max(fault.last()).copied().unwrap_or_default();
        checked_latency += (calm.len() + fault.len()) as u64;
        let over = calm
            .iter()
            .chain(fault.iter())
            .filter(|l| **l > bound)
            .count();
        if over > 0 {
            over_bound += over as u64;
            let _ = write!(worst_over, "{route} {} > {}; ", ms(max), ms(bound));
        }
        println!(
            "  {:<22} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8}",
            route,
            calm.len(),
            ms(percentile(calm, 0.999)),
            ms(calm.last().copied().unwrap_or_default()),
            fault.len(),
            ms(percentile(fault, 0.999)),
            ms(fault.last().copied().unwrap_or_default()),
            ms(bound)
        );
    }
    lines.push(Line {
        name: "requests within their route's bound".into(),
        checked: checked_latency,
        failed: over_bound,
        worst: worst_over,
    });

    // Answers inside the contract; no connection broken by a running shop.
    let breaches: Vec<&str> = records
        .samples
        .iter()
        .filter_map(|s| s.breach.as_deref())
        .collect();
    lines.push(Line {
        name: "answers the contract allows".into(),
        checked: records.samples.iter().filter(|s| s.outcome.is_ok()).count() as u64,
        failed: breaches.len() as u64,
        worst: breaches
            .first()
            .map(|b| (*b).to_owned())
            .unwrap_or_default(),
    });
    let mut broken = 0;
    let mut worst_broken = String::new();
    for s in &records.samples {
        if let Err(f) = s.outcome {
            if f == Failure::TimedOut || !shop_was_down(s.instance, s.start, s.start + s.latency) {
                broken += 1;
                if worst_broken.is_empty() {
                    worst_broken = format!(
                        "{f:?} on {} (shop {}) at {:.1} s",
                        s.route,
                        s.instance,
                        secs(start, s.start)
                    );
                }
            }
        }
    }
    lines.push(Line {
        name: "no connection broken or refused by a running shop".into(),
        checked: records.samples.len() as u64,
        failed: broken,
        worst: worst_broken,
    });

    // Payments: charged at most once per key while Redis kept its data.
    // The ledger: every instance's `payment charged` lines, by key.
    let mut ledger: HashMap<String, Vec<(Instant, usize)>> = HashMap::new();
    for inc in &incarnations {
        for (key, at) in &inc.log.lock().unwrap().charges {
            ledger
                .entry(key.clone())
                .or_default()
                .push((*at, inc.instance));
        }
    }
    let mut ids: HashMap<&str, Vec<(&str, Instant)>> = HashMap::new();
    for (key, id, at) in &records.payments {
        let v = ids.entry(key).or_default();
        if !v.iter().any(|(seen, _)| *seen == id) {
            v.push((id, *at));
        }
    }
    let (mut doubled, mut excused, mut unlogged) = (0u64, 0u64, 0u64);
    let mut worst_double = String::new();
    for (key, answers) in &ids {
        let mut times: Vec<Instant> = ledger
            .get(*key)
            .map(|v| v.iter().map(|(t, _)| *t).collect())
            .unwrap_or_default();
        if times.is_empty() {
            unlogged += 1;
            continue;
        }
        times.extend(answers.iter().map(|(_, t)| *t));
        let charged = ledger[*key].len().max(answers.len());
        if charged < 2 {
            continue;
        }
        times.sort();
        let (first, last) = (times[0], times[times.len() - 1]);
        let lost = events.data_losses.iter().any(|t| *t >= first && *t <= last)
            || events
                .shop_down
                .iter()
                .any(|(_, w)| w.start >= first && w.start <= last);
        if lost {
            excused += 1;
        } else {
            doubled += 1;
            if worst_double.is_empty() {
                worst_double = format!(
                    "{key}: {charged} charges from {:.1} s to {:.1} s",
                    secs(start, first),
                    secs(start, last)
                );
            }
        }
    }
    lines.push(Line {
        name: "payment keys charged once while Redis kept its data".into(),
        checked: ledger.len() as u64,
        failed: doubled,
        worst: worst_double,
    });
    lines.push(Line {
        name: "payments answered 201 with a charge in a ledger".into(),
        checked: ids.len() as u64,
        failed: unlogged,
        worst: String::new(),
    });

    // The shared login limit.
    let run = ended - start;
    let allowed = login_bound(run, &events, args.instances);
    let mut per_ip = vec![0u64; LOGIN_IPS];
    for (ip, _) in &records.logins_admitted {
        per_ip[*ip] += 1;
    }
    let worst_ip = per_ip.iter().copied().max().unwrap_or(0);
    lines.push(Line {
        name: "login admissions per client within quota + local allowance".into(),
        checked: records.login_attempts,
        failed: per_ip.iter().filter(|n| **n as f64 > allowed).count() as u64,
        worst: format!("{worst_ip} admitted of at most {allowed:.0} (IPs: {per_ip:?})"),
    });

    // Flags.
    let mut flag_checked = 0;
    let mut flag_failed = 0;
    let mut flag_worst = Duration::ZERO;
    for seen in &records.flags {
        let to = seen.changed + seen.after.unwrap_or(Duration::from_secs(5));
        if timeline.store_fault_meets(seen.changed, to, Duration::from_millis(500))
            || shop_was_down(seen.instance, seen.changed, to)
        {
            continue;
        }
        flag_checked += 1;
        let after = seen.after.unwrap_or(Duration::MAX);
        flag_worst = flag_worst.max(after);
        if after > FLAG_BOUND {
            flag_failed += 1;
        }
    }
    lines.push(Line {
        name: format!(
            "flag changes seen by every other instance within {}",
            ms(FLAG_BOUND)
        ),
        checked: flag_checked,
        failed: flag_failed,
        worst: if flag_worst == Duration::MAX {
            "not seen within 5 s".into()
        } else {
            ms(flag_worst)
        },
    });

    // Recovery after Redis answers again.
    let mut recovery_rows: BTreeMap<&str, (u64, u64, Duration)> = BTreeMap::new();
    let mut note = |layer: &'static str, d: Option<Duration>| {
        let row = recovery_rows.entry(layer).or_default();
        row.0 += 1;
        match d {
            Some(d) if d <= RECOVERY_BOUND => row.2 = row.2.max(d),
            Some(d) => {
                row.1 += 1;
                row.2 = row.2.max(d);
            }
            None => {
                row.1 += 1;
                row.2 = Duration::MAX;
            }
        }
    };
    for r in &records.recoveries {
        if r.back + Duration::from_secs(10) > ended {
            continue;
        }
        note("idempotency", r.idempotency);
        if args.instances > 1 {
            note("cache", r.cache);
        }
    }
    for w in &events.store {
        let back = w.end;
        for inc in &incarnations {
            let alive_to = inc.ended.unwrap_or(ended);
            if inc.started > w.start || alive_to < back + Duration::from_secs(10) {
                continue;
            }
            let log = inc.log.lock().unwrap();
            for (layer, down, up) in [
                ("rate limit", &log.limiter_down, &log.limiter_back),
                ("flags", &log.flags_down, &log.flags_back),
            ] {
                let went_down = down
                    .iter()
                    .any(|t| *t >= w.start && *t <= back + Duration::from_millis(500));
                if !went_down {
                    continue;
                }
                let again = up
                    .iter()
                    .find(|t| **t >= w.start)
                    .map(|t| t.saturating_duration_since(back));
                note(layer, again);
            }
        }
    }
    for (layer, (checked, failed, worst)) in recovery_rows {
        lines.push(Line {
            name: format!(
                "{layer} back on Redis within {} of it answering",
                ms(RECOVERY_BOUND)
            ),
            checked,
            failed,
            worst: if worst == Duration::MAX {
                "never".into()
            } else {
                ms(worst)
            },
        });
    }

    // Memory, panics, store errors.
    for shop in shops {
        let longest = shop
            .incarnations
            .iter()
            .max_by_key(|i| i.ended.unwrap_or(ended) - i.started);
        let Some(inc) = longest else { continue };
        let samples = inc.rss.lock().unwrap();
        let after: Vec<(f64, f64)> = samples
            .iter()
            .filter(|(t, _)| *t >= inc.started + RSS_WARM_UP)
            .map(|(t, b)| (secs(inc.started, *t), *b as f64))
            .collect();
        let slope = slope_mib_per_min(&after);
        let (first, last) = (
            after.first().map_or(0.0, |p| p.1),
            after.last().map_or(0.0, |p| p.1),
        );
        let span_s = after.last().map_or(0.0, |p| p.0) - after.first().map_or(0.0, |p| p.0);
        let growth = slope.map(|s| s * span_s / 60.0);
        let allowed = RSS_GROWTH_BOUND_MIB.max(RSS_GROWTH_BOUND_SHARE * first / 1048576.0);
        lines.push(Line {
            name: format!("shop {} resident memory flat after warm-up", shop.index),
            checked: after.len() as u64,
            failed: u64::from(growth.is_none_or(|g| g > allowed)),
            worst: format!(
                "{:+.2} MiB/min, fitted growth {:+.1} MiB of at most {allowed:.1} ({:.1} to {:.1} MiB)",
                slope.unwrap_or(f64::NAN),
                growth.unwrap_or(f64::NAN),
                first / 1048576.0,
                last / 1048576.0
            ),
        });
    }
    let panics: Vec<String> = incarnations
        .iter()
        .flat_map(|i| i.log.lock().unwrap().panics.clone())
        .collect();
    let lines_read: u64 = incarnations
        .iter()
        .map(|i| i.log.lock().unwrap().lines)
        .sum();
    lines.push(Line {
        name: "log lines without a panic".into(),
        checked: lines_read,
        failed: panics.len() as u64,
        worst: panics.first().cloned().unwrap_or_default(),
    });
    let mut store_checked = 0;
    let mut store_failed = 0;
    let mut store_worst = String::new();
    for (shop, scraped) in shops.iter().zip(metrics) {
        let Some(inc) = shop.incarnations.last() else {
            continue;
        };
        let logged = inc.log.lock().unwrap().store_errors.clone();
        store_checked += logged.values().sum::<u64>();
        match scraped {
            Some(counted) if *counted == logged => {
                let _ = write!(store_worst, "shop {}: {:?}; ", shop.index, counted);
            }
            other => {
                store_failed += 1;
                let _ = write!(
                    store_worst,
                    "shop {}: metrics {other:?} != logs {logged:?}; ",
                    shop.index
                );
            }
        }
    }
    lines.push(Line {
        name: "store errors in /metrics = store errors logged".into(),
        checked: store_checked,
        failed: store_failed,
        worst: store_worst,
    });

    println!("\ninvariants:");
    println!(
        "  {:<64} {:>8} {:>6}  worst / detail",
        "invariant", "checked", "failed"
    );
    let mut ok = true;
    for line in &lines {
        ok &= line.failed == 0;
        println!(
            "  {} {:<62} {:>8} {:>6}  {}",
            if line.failed == 0 { "ok " } else { "BAD" },
            line.name,
            line.checked,
            line.failed,
            line.worst
        );
    }
    let payments_new = records.payments.len();
    println!(
        "\n{} requests, {payments_new} payment answers of 201, {} late retries ({excused} keys charged again after Redis lost its data or a shop crashed, as documented), {} faults applied; {}",
        records.samples.len(),
        records.late_retries,
        events.store.len() + events.shop_down.len() + events.upstream.len(),
        if ok {
            "every invariant held"
        } else {
            "INVARIANTS FAILED"
        }
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Window;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let mib = 1024.0 * 1024.0;
        let line: Vec<(f64, f64)> = (0..60)
            .map(|s| (f64::from(s), 50.0 * mib + f64::from(s) * mib / 60.0))
            .collect();
        assert!((slope_mib_per_min(&line).unwrap() - 1.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..60)
            .map(|s| {
                (
                    f64::from(s),
                    50.0 * mib + if s % 2 == 0 { mib } else { 0.0 },
                )
            })
            .collect();
        assert!(slope_mib_per_min(&flat).unwrap().abs() < 0.1);
        assert_eq!(slope_mib_per_min(&line[..3]), None);
    }

    #[test]
    fn store_errors_are_read_from_the_exposition() {
        let text = "# TYPE bulwark_store_errors_total counter\n\
            bulwark_store_errors_total{store=\"redis\",operation=\"rate_limit\"} 12\n\
            bulwark_store_errors_total{store=\"redis\",operation=\"idempotency_claim\"} 3\n\
            bulwark_other_total 9\n";
        let counts = parse_store_errors(text);
        assert_eq!(counts["rate_limit"], 12);
        assert_eq!(counts["idempotency_claim"], 3);
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn the_login_bound_grows_with_each_outage() {
        let t = Instant::now();
        let calm = Events::default();
        let minute = Duration::from_secs(60);
        assert!(
            (login_bound(minute, &calm, 2) - 10.0).abs() < 1e-9,
            "burst + a minute's rate"
        );
        let mut outage = Events::default();
        outage.store.push(Window {
            start: t,
            end: t + Duration::from_secs(4),
        });
        outage.data_losses.push(t);
        let bound = login_bound(minute, &outage, 2);
        // 5 more for the lost data, and two local limiters' burst and 6 s of rate each.
        assert!(
            (bound - (10.0 + 5.0 + 2.0 * (5.0 + 0.5))).abs() < 1e-9,
            "{bound}"
        );
    }
}
