//! The Redis store: the same GCRA decision, made in one Lua script on the server.
//!
//! # The script
//!
//! One `EVALSHA` per request (the `redis` crate's [`Script`] falls back to loading the script
//! when the server does not know it, e.g. after a restart). `KEYS` holds one key per quota,
//! `ARGV` the request's cost and each quota's emission interval `T` and tolerance `tau`, in
//! microseconds. The script reads the server's clock with `TIME`, so instances whose clocks
//! disagree still agree on every decision. It checks every quota before it writes any: a
//! request refused by one quota takes nothing from the others (the script runs atomically, so
//! this is exact). Each key holds its quota's "theoretical arrival time" and expires
//! (`SET .. PX`) when that time has passed, that is, when the key's bucket is full again and
//! the key says nothing a missing one would not.
//!
//! # Keys
//!
//! `<prefix>:ratelimit:{<limiter>:<client>}:<quota>`, where `<prefix>` is the [`Redis`]
//! handle's prefix, `<limiter>` the layer's name and `<quota>` the quota's. The braces are a
//! Redis Cluster hash tag: one client's quotas live in one slot, as a script needs. `<client>`
//! is `ip:<address>` for IP keys (IPv6 already grouped by prefix), `global` for
//! [`GlobalKey`](crate::key::GlobalKey), `unkeyed` for the shared bucket of requests without a
//! key, and `h:<sha1 hex>` for every other key type (header values, strings, your own types,
//! through their `Debug` text), so API keys and tokens never appear in Redis.

use std::{
    any::Any,
    fmt,
    future::Future,
    net::IpAddr,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::HeaderValue;
use redis::Script;

use crate::rate_limit::limiter::{Limiter, QuotaSet, Verdict, too_costly};
use crate::{Rejection, StoreError, redis::Redis};

pub use crate::FailurePolicy;

/// Counts kept in Redis, shared by every instance that uses the same Redis, key prefix and
/// limiter name. Made by [`RateLimitLayer::redis`](crate::rate_limit::RateLimitLayer::redis).
#[derive(Clone)]
pub struct RedisStore {
    redis: Redis,
    script: Arc<Script>,
    policy: FailurePolicy,
    /// Whether the last call failed, to log transitions rather than every request.
    down: Arc<AtomicBool>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.redis)
            .field("policy", &self.policy)
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish()
    }
}

/// GCRA over every quota at once; see the module docs. Times are microseconds of Redis `TIME`.
/// Returns `{1, quota, remaining, reset}` when allowed (the quota with the fewest requests
/// left) and `{0, quota, wait, reset}` when refused (the quota with the longest wait).
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local next_tat = {}
local worst, worst_wait, worst_reset = 0, -1, 0
for i = 1, #KEYS do
  local T = tonumber(ARGV[2 * i])
  local tau = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  local earliest = tat + T * (cost - 1) - tau
  if now < earliest then
    local wait = earliest - now
    if wait > worst_wait then
      worst, worst_wait, worst_reset = i, wait, tat - now
    end
  end
  next_tat[i] = math.max(tat, now) + T * cost
end
if worst > 0 then
  return {0, worst, worst_wait, worst_reset}
end
local best, best_left, best_reset = 0, -1, 0
for i = 1, #KEYS do
  local T = tonumber(ARGV[2 * i])
  local tau = tonumber(ARGV[2 * i + 1])
  local ttl = next_tat[i] - now
  redis.call('SET', KEYS[i], string.format('%.0f', next_tat[i]), 'PX', math.ceil(ttl / 1000) + 1)
  local left = math.floor((tau + T - ttl) / T)
  if best == 0 or left < best_left then
    best, best_left, best_reset = i, left, ttl
  end
end
return {1, best, best_left, best_reset}
";

/// The decision of one request, under way.
pub(crate) type Decision = Pin<Box<dyn Future<Output = Verdict> + Send>>;

impl RedisStore {
    pub(crate) fn new(redis: Redis) -> Self {
        Self {
            redis,
            script: Arc::new(Script::new(GCRA_LUA)),
            policy: FailurePolicy::default(),
            down: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn set_policy(&mut self, policy: FailurePolicy) {
        self.policy = policy;
    }

    /// Decides a request of `cost` for `client` (its Redis key part); `local` is its key in
    /// the in-memory limiter, for [`FailurePolicy::Local`].
    pub(crate) fn decide(
        &self,
        limiter: Arc<Limiter>,
        client: String,
        local: u64,
        cost: NonZeroU32,
        want_info: bool,
    ) -> Decision {
        let store = self.clone();
        Box::pin(async move {
            let set = limiter.current.load_full();
            let n = cost.get();
            if let Some(q) = set.quotas.iter().find(|q| n > q.burst) {
                return Verdict::Rejected(too_costly(&set, q, n));
            }
            let tag = format!("{{{}:{client}}}", set.name);
            let mut call = store.script.prepare_invoke();
            call.arg(n);
            for q in set.quotas.iter() {
                let t = micros(q.emission);
                call.key(store.redis.key(&["ratelimit", &tag, q.quota.name()]))
                    .arg(t)
                    .arg(t.saturating_mul(u64::from(q.burst - 1)));
            }
            let mut conn = store.redis.connection();
            let reply = store
                .redis
                .run("rate_limit", call.invoke_async::<Vec<i64>>(&mut conn))
                .await
                .and_then(|r| parse(&r));
            match reply {
                Ok(reply) => {
                    if store.down.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            target: "bulwark::rate_limit",
                            limiter = %set.name,
                            "rate limit store reachable again: deciding in Redis"
                        );
                    }
                    verdict(&set, reply, n, want_info)
                }
                Err(error) => store.fall_back(&set, &error, local, cost, want_info),
            }
        })
    }

    fn fall_back(
        &self,
        set: &QuotaSet,
        error: &StoreError,
        local: u64,
        cost: NonZeroU32,
        want_info: bool,
    ) -> Verdict {
        let policy = self.policy.as_str();
        if self.down.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                target: "bulwark::rate_limit",
                limiter = %set.name,
                policy,
                error = %error,
                "rate limit store unavailable"
            );
        } else {
            let source = std::error::Error::source(error).map(ToString::to_string);
            tracing::warn!(
                target: "bulwark::rate_limit",
                limiter = %set.name,
                policy,
                error = %error,
                source = source.as_deref().unwrap_or(""),
                "rate limit store unavailable: deciding without Redis until it answers again"
            );
        }
        match self.policy {
            FailurePolicy::Local => {
                set.metrics.store_fallback(FailurePolicy::Local);
                set.check(local, cost, want_info)
            }
            // Decisions all the same: counted as allowed or rejected, as `Local`'s are.
            FailurePolicy::FailOpen => {
                set.metrics.store_fallback(FailurePolicy::FailOpen);
                set.metrics.allowed();
                Verdict::Allowed(None)
            }
            FailurePolicy::FailClosed => {
                set.metrics.store_fallback(FailurePolicy::FailClosed);
                set.metrics.rejected();
                Verdict::Rejected(Rejection::backend_unavailable(Duration::from_secs(1)))
            }
        }
    }
}

/// Nanoseconds to whole microseconds, rounded, at least 1.
fn micros(nanos: u64) -> u64 {
    (nanos.saturating_add(500) / 1_000).max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    allowed: bool,
    /// 0-based quota index.
    quota: usize,
    /// Remaining requests when allowed, wait in µs when refused.
    value: u64,
    /// µs until the quota's bucket is full.
    reset: u64,
}

fn parse(r: &[i64]) -> Result<Reply, StoreError> {
    let malformed = || StoreError::Malformed {
        operation: "rate_limit",
        detail: format!("unexpected script reply {r:?}"),
    };
    let &[allowed, quota, value, reset] = r else {
        return Err(malformed());
    };
    let quota = usize::try_from(quota)
        .ok()
        .and_then(|q| q.checked_sub(1))
        .ok_or_else(malformed)?;
    if !(allowed == 0 || allowed == 1) {
        return Err(malformed());
    }
    Ok(Reply {
        allowed: allowed == 1,
        quota,
        value: u64::try_from(value).unwrap_or(0),
        reset: u64::try_from(reset).unwrap_or(0),
    })
}

/// A script reply read as the store reads it: checked, then decided (for the fuzz targets).
#[cfg(fuzzing)]
pub(crate) fn read_reply(
    set: &QuotaSet,
    reply: &[i64],
    cost: u32,
    want_info: bool,
) -> Result<Verdict, StoreError> {
    parse(reply).map(|r| verdict(set, r, cost, want_info))
}

fn verdict(set: &QuotaSet, reply: Reply, cost: u32, want_info: bool) -> Verdict {
    let Some(q) = set.quotas.get(reply.quota) else {
        // The quotas changed between the call and the reply: decide by the answer alone.
        return if reply.allowed {
            set.metrics.allowed();
            Verdict::Allowed(None)
        } else {
            set.metrics.rejected();
            Verdict::Rejected(Rejection::rate_limited(
                Duration::from_micros(reply.value),
                None,
            ))
        };
    };
    let reset = Duration::from_micros(reply.reset);
    if reply.allowed {
        set.metrics.allowed();
        Verdict::Allowed(want_info.then(|| q.info(reply.value, reset)))
    } else {
        set.metrics.rejected();
        let wait = Duration::from_micros(reply.value);
        tracing::debug!(
            target: "bulwark::rate_limit",
            limiter = %set.name,
            quota = %q.quota.name(),
            cost,
            retry_after_ms = wait.as_millis() as u64,
            "rate limited"
        );
        Verdict::Rejected(Rejection::rate_limited(wait, Some(q.info(0, reset))))
    }
}

/// The Redis key part of a request key: IPs as text, `()` as `global`, anything else hashed.
pub(crate) fn client_part<Q: Any + fmt::Debug>(key: &Q) -> String {
    let any: &dyn Any = key;
    if let Some(ip) = any.downcast_ref::<IpAddr>() {
        return format!("ip:{ip}");
    }
    if any.is::<()>() {
        return "global".to_owned();
    }
    let digest = if let Some(v) = any.downcast_ref::<HeaderValue>() {
        crate::digest::sha1_hex(v.as_bytes())
    } else if let Some(s) = any.downcast_ref::<String>() {
        crate::digest::sha1_hex(s.as_bytes())
    } else if let Some(s) = any.downcast_ref::<&'static str>() {
        crate::digest::sha1_hex(s.as_bytes())
    } else if let Some(s) = any.downcast_ref::<Arc<str>>() {
        crate::digest::sha1_hex(s.as_bytes())
    } else {
        crate::digest::sha1_hex(format!("{key:?}").as_bytes())
    };
    format!("h:{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_parts_hide_secrets_but_not_ips() {
        assert_eq!(
            client_part(&"2001:db8::".parse::<IpAddr>().unwrap()),
            "ip:2001:db8::"
        );
        assert_eq!(client_part(&()), "global");
        let secret = HeaderValue::from_static("sk_live_123");
        let part = client_part(&secret);
        assert!(
            part.starts_with("h:") && !part.contains("sk_live"),
            "{part}"
        );
        assert_eq!(part.len(), 2 + 40);
        assert_eq!(
            part,
            client_part(&"sk_live_123".to_owned()),
            "same bytes, same key"
        );
        assert_ne!(client_part(&7u64), client_part(&8u64));
    }

    #[test]
    fn replies_are_checked() {
        assert_eq!(
            parse(&[1, 2, 3, 4]).unwrap(),
            Reply {
                allowed: true,
                quota: 1,
                value: 3,
                reset: 4
            }
        );
        assert!(parse(&[1, 0, 3, 4]).is_err());
        assert!(parse(&[2, 1, 3, 4]).is_err());
        assert!(parse(&[1, 1, 3]).is_err());
    }

    #[test]
    fn microseconds_round_and_never_reach_zero() {
        assert_eq!(micros(1), 1);
        assert_eq!(micros(333_333_333), 333_333);
        assert_eq!(micros(1_500), 2);
    }
}
