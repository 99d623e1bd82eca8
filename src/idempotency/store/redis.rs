//! The Redis store: one hash per key, changed only by Lua scripts (atomic on the server).

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use redis::Script;

use super::{Claim, Completion, LeaseToken, Store, StoredResponse};
use crate::{
    StoreError,
    idempotency::{Fingerprint, StoreKey},
    redis::Redis,
};

/// Claims the key unless a live entry exists; describes the entry otherwise.
/// Returns {code, fingerprint, data}: 1 acquired, 2 leased (data: ms left), 3 done (data: the
/// response), 4 too large.
const CLAIM: &str = r"
local v = redis.call('HMGET', KEYS[1], 'state', 'fp', 'resp')
if not v[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'lease', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, '', ''}
end
if v[1] == 'lease' then
  return {2, v[2], tostring(redis.call('PTTL', KEYS[1]))}
end
if v[1] == 'done' then
  return {3, v[2], v[3] or ''}
end
return {4, v[2], ''}
";

/// Completes the lease if ARGV[1] still owns it: state ARGV[2], response ARGV[3], retention
/// ARGV[4] ms.
const COMPLETE: &str = r"
local v = redis.call('HMGET', KEYS[1], 'state', 'token')
if v[1] ~= 'lease' or v[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'resp', ARGV[3])
redis.call('HDEL', KEYS[1], 'token')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// Deletes the lease if ARGV[1] still owns it.
const RELEASE: &str = r"
local v = redis.call('HMGET', KEYS[1], 'state', 'token')
if v[1] ~= 'lease' or v[2] ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
";

/// Claims and responses in Redis, shared by every instance using the same server and prefix
/// (feature `redis`).
///
/// Keys are `<prefix>:idempotency:<sha256 of scope and key>`, one hash each. A claim sets the
/// key's expiry to the lease; completion (only by the lease's owner, checked in a script) sets it
/// to the retention period. Every call is bounded by the [`Redis`] handle's timeout; a failure is
/// a [`StoreError`], which the layer answers following its policy (503 by default).
#[derive(Clone)]
pub struct RedisStore {
    redis: Redis,
    scripts: Arc<[Script; 3]>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// A store on `redis`'s connection.
    #[must_use]
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            scripts: Arc::new([
                Script::new(CLAIM),
                Script::new(COMPLETE),
                Script::new(RELEASE),
            ]),
        }
    }

    /// Releases a claim whose answer never came, on a task of its own, trying until one
    /// release is answered (pauses from 50 ms doubling to 1 s) or the lease is over. A
    /// release sent after the claim runs after it, so the first answered one frees the key if
    /// the claim ran, and finds nothing of its own (the token is this claim's) if it did not.
    /// Retried rather than sent once: the first may be the one that finds its script not
    /// loaded yet (NOSCRIPT) after the caller stopped waiting, and then never runs.
    fn release_stalled_claim(&self, key: StoreKey, token: LeaseToken, lease: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.clone();
        rt.spawn(async move {
            let until = tokio::time::Instant::now() + lease;
            let mut pause = Duration::from_millis(50);
            while tokio::time::Instant::now() + pause < until {
                tokio::time::sleep(pause).await;
                let r = store.release(key, token).await;
                if let Ok(freed) = r {
                    tracing::debug!(
                        target: "bulwark::idempotency",
                        key = %key.short(),
                        freed,
                        "claim whose answer never came released",
                    );
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        });
    }

    fn key(&self, key: &StoreKey) -> String {
        self.redis.key(&["idempotency", &key.to_hex()])
    }
}

fn fingerprint(bytes: &[u8], operation: &'static str) -> Result<Fingerprint, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(Fingerprint::from_bytes)
        .map_err(|_| StoreError::Malformed {
            operation,
            detail: "fingerprint is not 32 bytes".to_owned(),
        })
}

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn claim(
        &self,
        key: StoreKey,
        fp: Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let token = LeaseToken::generate();
        let mut conn = self.redis.connection();
        let mut call = self.scripts[0].prepare_invoke();
        call.key(self.key(&key))
            .arg(&fp.as_bytes()[..])
            .arg(&token.as_bytes()[..])
            .arg(millis(lease));
        let reply: Result<(i64, Vec<u8>, Vec<u8>), StoreError> = self
            .redis
            .run("claim", async move { call.invoke_async(&mut conn).await })
            .await;
        let (code, stored_fp, data) = match reply {
            Ok(reply) => reply,
            Err(error) => {
                if matches!(error, StoreError::Timeout { .. }) {
                    // The claim was sent and Redis may still run it (a server that stalled,
                    // not one that is gone): nobody would complete that claim, and it would
                    // refuse the key's retries for the whole lease.
                    self.release_stalled_claim(key, token, lease);
                }
                return Err(error);
            }
        };
        match code {
            1 => Ok(Claim::Acquired(token)),
            2 => Ok(Claim::InFlight {
                fingerprint: fingerprint(&stored_fp, "claim")?,
                lease_left: std::str::from_utf8(&data)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_millis),
            }),
            3 => Ok(Claim::Completed {
                fingerprint: fingerprint(&stored_fp, "claim")?,
                response: Arc::new(StoredResponse::decode(&Bytes::from(data))?),
            }),
            4 => Ok(Claim::NotReplayable {
                fingerprint: fingerprint(&stored_fp, "claim")?,
            }),
            _ => Err(StoreError::Malformed {
                operation: "claim",
                detail: format!("unknown claim answer {code}"),
            }),
        }
    }

    async fn complete(
        &self,
        key: StoreKey,
        token: LeaseToken,
        completion: Completion,
        retention: Duration,
    ) -> Result<bool, StoreError> {
        let (state, resp) = match completion {
            Completion::Response(res) => ("done", res.encode()),
            Completion::TooLarge => ("too_large", Vec::new()),
        };
        let mut conn = self.redis.connection();
        let mut call = self.scripts[1].prepare_invoke();
        call.key(self.key(&key))
            .arg(&token.as_bytes()[..])
            .arg(state)
            .arg(resp)
            .arg(millis(retention));
        let n: i64 = self
            .redis
            .run(
                "complete",
                async move { call.invoke_async(&mut conn).await },
            )
            .await?;
        Ok(n == 1)
    }

    async fn release(&self, key: StoreKey, token: LeaseToken) -> Result<bool, StoreError> {
        let mut conn = self.redis.connection();
        let mut call = self.scripts[2].prepare_invoke();
        call.key(self.key(&key)).arg(&token.as_bytes()[..]);
        let n: i64 = self
            .redis
            .run("release", async move { call.invoke_async(&mut conn).await })
            .await?;
        Ok(n == 1)
    }

    fn release_detached(&self, key: StoreKey, token: LeaseToken) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (the future was dropped outside one): the lease ends on its own.
            return;
        };
        let store = self.clone();
        rt.spawn(async move {
            if let Err(e) = store.release(key, token).await {
                tracing::warn!(
                    target: "bulwark::idempotency",
                    key = %key.short(),
                    error = %e,
                    "claim of a cancelled request not released; it ends with its lease",
                );
            }
        });
    }
}
