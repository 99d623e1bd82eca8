//! The closed-loop workload: payments, logins, reads, flag flips and recovery probes, each
//! answer checked against the contract as it comes and kept for the invariants.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::Method;

use crate::{
    client::{Answer, Failure, Http},
    faults::{Rng, Timeline},
};

/// The shop's admin token in the soak.
pub(crate) const ADMIN_TOKEN: &str = "soak-admin-token-0123456789";
/// Client IPs that log in (through the trusted proxy header): the limiter's keys.
pub(crate) const LOGIN_IPS: usize = 4;

/// One request and what came of it.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) route: &'static str,
    pub(crate) instance: usize,
    pub(crate) start: Instant,
    pub(crate) latency: Duration,
    pub(crate) outcome: Result<u16, Failure>,
    /// Why the answer is outside the contract, if it is.
    pub(crate) breach: Option<String>,
}

/// A flag change and how long another instance took to see it.
#[derive(Debug)]
pub(crate) struct FlagSeen {
    pub(crate) changed: Instant,
    /// `None`: not seen within the 5 s the flipper waits.
    pub(crate) after: Option<Duration>,
    pub(crate) instance: usize,
}

/// How long after Redis answered again each layer used it.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) back: Instant,
    /// A fresh payment key was charged (idempotency claims in Redis again).
    pub(crate) idempotency: Option<Duration>,
    /// An answer stored by one shop was a hit on another (the cache is shared again).
    pub(crate) cache: Option<Duration>,
}

/// Everything the workload saw.
#[derive(Debug, Default)]
pub(crate) struct Records {
    pub(crate) samples: Vec<Sample>,
    /// `(client IP index, when)` of each login attempt the limiter let through.
    pub(crate) logins_admitted: Vec<(usize, Instant)>,
    pub(crate) login_attempts: u64,
    pub(crate) flags: Vec<FlagSeen>,
    pub(crate) recoveries: Vec<Recovery>,
    /// `(key, payment id, when)` of every 201 for a payment.
    pub(crate) payments: Vec<(String, String, Instant)>,
    /// Payments given up on (no 201 after the retries), `(key, body, when)`: retried again
    /// once their lease is surely over, as a client's job queue would.
    pub(crate) unfinished: Vec<(String, String, Instant)>,
    /// Late retries made, and how many of them were charged anew.
    pub(crate) late_retries: u64,
}

/// A claim's lease in the shop (bulwark's default), and the wait before a late retry.
const LEASE: Duration = Duration::from_secs(60);

/// What every task shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) http: Http,
    pub(crate) shops: Vec<Arc<Mutex<Option<SocketAddr>>>>,
    pub(crate) timeline: Arc<Timeline>,
    pub(crate) records: Mutex<Records>,
    pub(crate) until: Instant,
}

impl Ctx {
    pub(crate) fn running(&self) -> bool {
        Instant::now() < self.until
    }

    fn addr(&self, instance: usize) -> Option<SocketAddr> {
        *self.shops[instance].lock().unwrap()
    }

    /// A random instance that is up, if any.
    fn pick(&self, rng: &mut Rng) -> Option<usize> {
        let n = self.shops.len();
        let first = rng.below(n as u64) as usize;
        (0..n)
            .map(|i| (first + i) % n)
            .find(|&i| self.addr(i).is_some())
    }

    /// Sends one request to `instance` and checks the answer against the route's contract;
    /// `None` when the instance is down (nothing sent) or no answer came.
    pub(crate) async fn call(
        &self,
        route: &'static str,
        instance: usize,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Option<Answer> {
        let addr = self.addr(instance)?;
        let method = match route.split_once(' ').map_or("GET", |(m, _)| m) {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            _ => Method::GET,
        };
        let (result, latency) = self.http.send(addr, method, path, headers, body).await;
        let start = Instant::now() - latency;
        let breach = match &result {
            Ok(answer) => contract(route, answer).err(),
            Err(_) => None, // judged at the end, against the shops' down times
        };
        self.records.lock().unwrap().samples.push(Sample {
            route,
            instance,
            start,
            latency,
            outcome: result.as_ref().map(|a| a.status).map_err(|f| *f),
            breach,
        });
        result.ok()
    }
}

/// Whether `answer` is one the contract allows on `route`: the route's statuses; every error
/// a problem document; no 5xx but a fallback's answer and bulwark's documented 503s.
pub(crate) fn contract(route: &str, answer: &Answer) -> Result<(), String> {
    let status = answer.status;
    let allowed: &[u16] = match route {
        "POST /payments" => &[201, 409, 422, 429, 503],
        "POST /login" => &[200, 401, 429],
        "GET /ai/summary" => &[200, 404, 429],
        // The admin API answers 503 itself when the flag store is away (documented there).
        "PUT /admin/flags" => &[200, 429, 503],
        _ => &[200, 429],
    };
    if !allowed.contains(&status) && !answer.fallback {
        return Err(format!("{route}: status {status}"));
    }
    if status >= 400 && !answer.content_type.starts_with("application/problem+json") {
        return Err(format!(
            "{route}: {status} without a problem document ({})",
            answer.content_type
        ));
    }
    let documented_503 =
        answer.problem_is("BackendUnavailable") || answer.problem_is("CircuitOpen");
    if status >= 500 && !answer.fallback && !documented_503 && route != "PUT /admin/flags" {
        return Err(format!(
            "{route}: {status} that is neither a fallback nor a documented 503"
        ));
    }
    if status == 429 && !answer.problem_is("RateLimited") {
        return Err(format!("{route}: 429 that is not bulwark's RateLimited"));
    }
    Ok(())
}

async fn pause(rng: &mut Rng, lo: u64, hi: u64) {
    tokio::time::sleep(rng.millis(lo, hi)).await;
}

/// Payments: fresh keys with sequential retries, concurrent duplicates on every instance,
/// replays, and a key reused with another body.
pub(crate) async fn payments(ctx: Arc<Ctx>, worker: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ (0x5eed_0000 + worker as u64));
    let mut n = 0u64;
    while ctx.running() {
        n += 1;
        let key = format!("soak-{seed}-{worker}-{n}");
        let body = format!(r#"{{"amount":{},"currency":"EUR"}}"#, 100 + n);
        let scenario = rng.below(10);
        if (5..=6).contains(&scenario) {
            // A double click that reaches every instance at once.
            let sends = (0..ctx.shops.len()).map(|i| pay(&ctx, i, &key, &body));
            futures_join(sends).await;
        }
        // Retries until the payment is made (or the run ends): 409 in flight, 503 store away,
        // 429, no answer.
        let mut made = false;
        for _ in 0..20 {
            let Some(i) = ctx.pick(&mut rng) else { break };
            if let Some(answer) = pay(&ctx, i, &key, &body).await {
                if answer.status == 201 {
                    made = true;
                    break;
                }
            }
            if !ctx.running() {
                break;
            }
            pause(&mut rng, 100, 400).await;
        }
        if !made {
            ctx.records.lock().unwrap().unfinished.push((
                key.clone(),
                body.clone(),
                Instant::now(),
            ));
        }
        if made && scenario >= 7 {
            pause(&mut rng, 0, 200).await;
            if let Some(i) = ctx.pick(&mut rng) {
                if scenario == 7 {
                    // A late retry: the same answer again.
                    pay(&ctx, i, &key, &body).await;
                } else {
                    // The key reused for another payment: refused, never charged.
                    let other = format!(r#"{{"amount":{},"currency":"USD"}}"#, 100 + n);
                    pay(&ctx, i, &key, &other).await;
                }
            }
        }
        pause(&mut rng, 10, 50).await;
    }
}

async fn pay(ctx: &Ctx, instance: usize, key: &str, body: &str) -> Option<Answer> {
    let headers = [("idempotency-key", key), ("x-forwarded-for", "10.66.0.1")];
    let answer = ctx
        .call(
            "POST /payments",
            instance,
            "/payments",
            &headers,
            Some(body.to_owned()),
        )
        .await?;
    if answer.status == 201 {
        let id = answer
            .json()
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        ctx.records
            .lock()
            .unwrap()
            .payments
            .push((key.to_owned(), id, Instant::now()));
    }
    Some(answer)
}

/// Runs the futures concurrently (the soak has no `futures` crate: spawned tasks).
async fn futures_join<F, T>(futures: impl Iterator<Item = F>)
where
    F: std::future::Future<Output = T>,
{
    // `join_all` by hand: poll them all in one task.
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
}

/// Retries the payments given up on once their lease is over (a minute and a second later),
/// until each is answered 201 or refused for good.
pub(crate) async fn late_retries(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x1a7e);
    while ctx.running() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let due: Vec<(String, String, Instant)> = {
            let mut records = ctx.records.lock().unwrap();
            let (due, wait) = records
                .unfinished
                .drain(..)
                .partition(|(_, _, at)| at.elapsed() > LEASE + Duration::from_secs(1));
            records.unfinished = wait;
            due
        };
        for (key, body, _) in due {
            let Some(i) = ctx.pick(&mut rng) else {
                continue;
            };
            ctx.records.lock().unwrap().late_retries += 1;
            let answer = pay(&ctx, i, &key, &body).await;
            if answer.is_none_or(|a| a.status != 201) {
                // Still not made (Redis away again): later once more.
                ctx.records
                    .lock()
                    .unwrap()
                    .unfinished
                    .push((key, body, Instant::now()));
            }
        }
    }
}

/// Logins from a few client IPs, far past the limit of 5 a minute each.
pub(crate) async fn logins(ctx: Arc<Ctx>, worker: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ (0x1091_0000 + worker as u64));
    while ctx.running() {
        let ip = rng.below(LOGIN_IPS as u64) as usize;
        let Some(i) = ctx.pick(&mut rng) else {
            pause(&mut rng, 50, 100).await;
            continue;
        };
        let xff = format!("10.77.0.{}", ip + 1);
        let password = if rng.below(2) == 0 { "demo" } else { "wrong" };
        let body = format!(r#"{{"user":"demo","password":"{password}"}}"#);
        let start = Instant::now();
        let answer = ctx
            .call(
                "POST /login",
                i,
                "/login",
                &[("x-forwarded-for", &xff)],
                Some(body),
            )
            .await;
        if let Some(answer) = answer {
            let mut records = ctx.records.lock().unwrap();
            records.login_attempts += 1;
            if answer.status != 429 {
                records.logins_admitted.push((ip, start));
            }
        }
        pause(&mut rng, 20, 60).await;
    }
}

/// Product reads, recommendations, dashboards and AI summaries from many client IPs.
pub(crate) async fn readers(ctx: Arc<Ctx>, worker: usize, seed: u64) {
    let mut rng = Rng::new(seed ^ (0x2ead_0000 + worker as u64));
    while ctx.running() {
        let Some(i) = ctx.pick(&mut rng) else {
            pause(&mut rng, 50, 100).await;
            continue;
        };
        let xff = format!("10.88.{}.{}", rng.below(4), 1 + rng.below(250));
        let xff = ("x-forwarded-for", xff.as_str());
        match rng.below(4) {
            0 => {
                ctx.call("GET /products", i, "/products", &[xff], None)
                    .await
            }
            1 => {
                ctx.call("GET /recommendations", i, "/recommendations", &[xff], None)
                    .await
            }
            2 => {
                ctx.call("GET /dashboard", i, "/dashboard", &[xff], None)
                    .await
            }
            _ => {
                let tier = if rng.below(2) == 0 { "premium" } else { "free" };
                ctx.call(
                    "GET /ai/summary",
                    i,
                    "/ai/summary",
                    &[xff, ("x-user-tier", tier)],
                    None,
                )
                .await
            }
        };
        pause(&mut rng, 5, 25).await;
    }
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// Flips `ai-summary` on one instance every 2 to 3 s and times how long each other instance
/// takes to see it.
pub(crate) async fn flag_flips(ctx: Arc<Ctx>, seed: u64) {
    let mut rng = Rng::new(seed ^ 0xf1a9);
    let mut enabled = false;
    let auth = bearer();
    while ctx.running() {
        pause(&mut rng, 2_000, 3_000).await;
        let Some(a) = ctx.pick(&mut rng) else {
            continue;
        };
        enabled = !enabled;
        let body = format!(r#"{{"enabled":{enabled}}}"#);
        let headers = [("authorization", auth.as_str())];
        let put = ctx
            .call(
                "PUT /admin/flags",
                a,
                "/admin/flags/ai-summary",
                &headers,
                Some(body),
            )
            .await;
        if put.is_none_or(|p| p.status != 200) {
            enabled = !enabled; // not changed; flip the same way next time
            continue;
        }
        let changed = Instant::now();
        let others: Vec<usize> = (0..ctx.shops.len()).filter(|&b| b != a).collect();
        let waits = others.into_iter().map(|b| {
            let ctx = &ctx;
            let headers = &headers;
            async move {
                let deadline = changed + Duration::from_secs(5);
                let mut after = None;
                while Instant::now() < deadline && ctx.running() {
                    if let Some(list) = ctx
                        .call("GET /admin/flags", b, "/admin/flags", headers, None)
                        .await
                    {
                        let seen = list
                            .json()
                            .and_then(|v| v.get("ai-summary")?.get("enabled")?.as_bool());
                        if seen == Some(enabled) {
                            after = Some(changed.elapsed());
                            break;
                        }
                    } else if ctx.addr(b).is_none() {
                        return; // down: nothing to see
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if ctx.running() {
                    ctx.records.lock().unwrap().flags.push(FlagSeen {
                        changed,
                        after,
                        instance: b,
                    });
                }
            }
        });
        futures_join(waits).await;
    }
}

/// After Redis answers again: how long until a fresh payment is charged through it, and an
/// answer stored by one shop is a hit on another.
pub(crate) async fn measure_recovery(ctx: Arc<Ctx>, back: Instant, probe: u64) {
    let mut idempotency = None;
    let mut cache = None;
    let mut n = 0;
    let deadline = back + Duration::from_secs(10);
    while (idempotency.is_none() || cache.is_none()) && Instant::now() < deadline && ctx.running() {
        n += 1;
        let (a, b) = (0, ctx.shops.len() - 1);
        if idempotency.is_none() {
            let key = format!("soak-recovery-{probe}-{n}");
            if let Some(answer) = pay(&ctx, a, &key, r#"{"amount":1,"currency":"EUR"}"#).await {
                if answer.status == 201 && !answer.replayed {
                    idempotency = Some(back.elapsed());
                }
            }
        }
        if cache.is_none() {
            let path = format!("/products?probe={probe}-{n}");
            let xff = [("x-forwarded-for", "10.99.0.1")];
            let first = ctx.call("GET /products", a, &path, &xff, None).await;
            if first.is_some_and(|f| f.cache_status.contains("stored")) {
                let second = ctx.call("GET /products", b, &path, &xff, None).await;
                if second.is_some_and(|s| s.cache_status.contains("hit")) {
                    cache = Some(back.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.records.lock().unwrap().recoveries.push(Recovery {
        back,
        idempotency,
        cache,
    });
}
