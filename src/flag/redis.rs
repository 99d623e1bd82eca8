use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{FlagDefinition, Flags, SourceError, source::error_chain};
use crate::{StoreError, redis::Redis};

/// "No version seen yet" (tokens are never 0).
const UNSEEN: u64 = 0;

/// A fresh version token: random, so a Redis that restarted empty and was written to again
/// never repeats the token an instance saw before the restart (a counter would start over).
fn token() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    RandomState::new().hash_one((n, t)) | 1
}

/// Flag definitions shared by every instance through Redis (feature `redis`).
///
/// Definitions live in one Redis hash (`<prefix>:{flags}:defs`, flag name → definition JSON)
/// beside a version key (`<prefix>:{flags}:version`, the same hash slot on a cluster) that every change sets to a new random token
/// in the same transaction (random rather than a counter, so a Redis that restarted empty never
/// repeats a version an instance already saw). Each instance polls the version, a single `GET`, every 250 to 500 ms (a random
/// pause each time, so instances do not poll in lock-step) and reloads the hash when it moved,
/// so a change made on one instance is seen by every instance within a second.
///
/// When Redis is unreachable, or holds a definition this instance cannot read, the flags keep
/// their last good snapshot: requests are evaluated as before, and the problem is logged (once
/// per outage) and counted (`bulwark_flag_reload_errors_total{source="redis"}`,
/// `bulwark_store_errors_total`). When Redis is back, changes flow again. A Redis that comes
/// back empty (no version key) changes nothing until the next write.
///
/// [`set`](Self::set) and [`remove`](Self::remove) write to Redis and apply the change to the
/// local [`Flags`] at once; the other instances see it at their next poll.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use bulwark::{flag::{FlagDefinition, Flags, RedisFlags}, redis::Redis};
///
/// let flags = Flags::new();
/// let shared = RedisFlags::new(Redis::open("redis://127.0.0.1/")?, flags.clone());
/// // Defaults for flags nobody has defined yet; an existing kill switch is kept.
/// shared.seed([("ai-summary", FlagDefinition::on())]).await?;
/// let _sync = shared.clone().spawn();
/// shared.set("ai-summary", FlagDefinition::off()).await?; // every instance, within a second
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisFlags {
    shared: Arc<Shared>,
}

struct Shared {
    redis: Redis,
    flags: Flags,
    defs_key: String,
    version_key: String,
    interval: Duration,
    last_version: AtomicU64,
    down: AtomicBool,
    /// Local writes ([`RedisFlags::set`], [`RedisFlags::remove`]) so far. A poll that began
    /// before one may carry definitions read before it; it must not swap them in over the
    /// write (the count moved), and leaves its version unseen so the next poll loads again.
    /// Held only around applying a change locally, never across an `.await`.
    local_writes: std::sync::Mutex<u64>,
}

impl Shared {
    fn local_writes(&self) -> std::sync::MutexGuard<'_, u64> {
        self.local_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a write that Redis took to the local flags.
    fn write_locally(&self, write: impl FnOnce(&Flags)) {
        let mut writes = self.local_writes();
        *writes += 1;
        write(&self.flags);
    }

    /// Swaps in `defs`, read by a poll that began after `writes_before` local writes, and
    /// remembers `version` as seen, unless a local write came in between (the poll then
    /// changes nothing and the next one loads again). Returns whether the flags changed.
    fn apply_poll(
        &self,
        writes_before: u64,
        version: u64,
        defs: BTreeMap<String, FlagDefinition>,
    ) -> bool {
        let writes = self.local_writes();
        if *writes != writes_before {
            return false;
        }
        self.last_version.store(version, Ordering::Relaxed);
        if defs == self.flags.snapshot() {
            return false;
        }
        self.flags.replace(defs);
        true
    }
}

impl fmt::Debug for RedisFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFlags")
            .field("defs_key", &self.shared.defs_key)
            .field("interval", &self.shared.interval)
            .finish_non_exhaustive()
    }
}

impl RedisFlags {
    /// Keeps `flags` in step with the definitions in `redis`, polling every 250 to 500 ms.
    #[must_use]
    pub fn new(redis: Redis, flags: Flags) -> Self {
        Self::with_poll_interval(redis, flags, Duration::from_millis(500))
    }

    /// Like [`new`](Self::new), polling after a random pause between half of `interval` and
    /// `interval` (at least 10 ms).
    #[must_use]
    pub fn with_poll_interval(redis: Redis, flags: Flags, interval: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                // One hash tag: a change writes both in one transaction, which a cluster
                // allows only within one slot.
                defs_key: redis.key(&["{flags}", "defs"]),
                version_key: redis.key(&["{flags}", "version"]),
                redis,
                flags,
                interval: interval.max(Duration::from_millis(10)),
                last_version: AtomicU64::new(UNSEEN),
                down: AtomicBool::new(false),
                local_writes: std::sync::Mutex::new(0),
            }),
        }
    }

    /// The local flags this source feeds.
    #[must_use]
    pub fn flags(&self) -> &Flags {
        &self.shared.flags
    }

    /// Defines flag `name` for every instance (and locally at once).
    ///
    /// # Errors
    ///
    /// [`StoreError`] if Redis did not take it; nothing changes then, locally either.
    pub async fn set(
        &self,
        name: impl Into<Arc<str>>,
        definition: FlagDefinition,
    ) -> Result<(), StoreError> {
        let name = name.into();
        let s = &*self.shared;
        let json = definition.to_json();
        let mut conn = s.redis.connection();
        let pipe = redis::pipe()
            .atomic()
            .hset(&s.defs_key, &*name, json)
            .ignore()
            .set(&s.version_key, token())
            .ignore()
            .clone();
        s.redis
            .run("flag_set", async move {
                pipe.query_async::<()>(&mut conn).await
            })
            .await?;
        s.write_locally(|flags| flags.set(name, definition));
        Ok(())
    }

    /// Removes flag `name` for every instance (and locally at once); returns whether it was
    /// defined in Redis.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if Redis did not take it.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let s = &*self.shared;
        let mut conn = s.redis.connection();
        let pipe = redis::pipe()
            .atomic()
            .hdel(&s.defs_key, name)
            .set(&s.version_key, token())
            .ignore()
            .clone();
        let (removed,): (i64,) = s
            .redis
            .run(
                "flag_remove",
                async move { pipe.query_async(&mut conn).await },
            )
            .await?;
        s.write_locally(|flags| {
            flags.remove(name);
        });
        Ok(removed > 0)
    }

    /// Defines in Redis each of `definitions` that is not defined there yet (existing ones,
    /// such as a kill switch another instance set, are kept), then loads the shared flags;
    /// returns how many were added.
    ///
    /// # Errors
    ///
    /// [`SourceError`] if Redis failed or holds an invalid definition.
    pub async fn seed<I, N>(&self, definitions: I) -> Result<usize, SourceError>
    where
        I: IntoIterator<Item = (N, FlagDefinition)>,
        N: AsRef<str>,
    {
        let s = &*self.shared;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut n = 0;
        for (name, def) in definitions {
            pipe.hset_nx(&s.defs_key, name.as_ref(), def.to_json());
            n += 1;
        }
        let added = if n == 0 {
            0
        } else {
            let mut conn = s.redis.connection();
            let added: Vec<i64> = s
                .redis
                .run(
                    "flag_seed",
                    async move { pipe.query_async(&mut conn).await },
                )
                .await?;
            let added = added.iter().filter(|&&a| a > 0).count();
            if added > 0 {
                let mut conn = s.redis.connection();
                let key = s.version_key.clone();
                s.redis
                    .run("flag_seed", async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(token())
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await?;
            }
            added
        };
        self.sync().await?;
        Ok(added)
    }

    /// Polls once: when the shared version moved since the last poll, loads every definition
    /// and, if all are valid, swaps them in. Returns whether the flags changed.
    ///
    /// # Errors
    ///
    /// [`SourceError`] if Redis failed or holds an invalid definition; the flags keep their
    /// last good snapshot, and the problem is logged and counted.
    pub async fn sync(&self) -> Result<bool, SourceError> {
        let result = self.try_sync().await;
        let s = &*self.shared;
        match &result {
            Ok(changed) => {
                if s.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        target: "bulwark::flag",
                        source = "redis",
                        "feature flags: reloading from Redis works again"
                    );
                }
                if *changed {
                    super::metrics::flag_reload("redis", true);
                }
            }
            Err(e) => {
                super::metrics::flag_reload("redis", false);
                if !s.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        target: "bulwark::flag",
                        source = "redis",
                        error = %error_chain(e),
                        "feature flag reload failed; keeping the last good flags"
                    );
                }
            }
        }
        result
    }

    async fn try_sync(&self) -> Result<bool, SourceError> {
        let s = &*self.shared;
        let writes_before = *s.local_writes();
        let mut conn = s.redis.connection();
        let key = s.version_key.clone();
        let version: Option<String> = s
            .redis
            .run("flag_version", async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        let Some(version) = version else {
            return Ok(false);
        };
        // Tokens are numbers; anything else (written by hand) still marks a change.
        let version = version
            .parse::<u64>()
            .unwrap_or_else(|_| RandomState::new().hash_one(&version))
            .max(1);
        if s.last_version.load(Ordering::Relaxed) == version {
            return Ok(false);
        }
        let mut conn = s.redis.connection();
        let key = s.defs_key.clone();
        let raw: HashMap<String, String> = s
            .redis
            .run("flag_load", async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut conn).await
            })
            .await?;
        let mut defs = BTreeMap::new();
        for (name, json) in raw {
            let def = FlagDefinition::from_json(&json).map_err(|e| SourceError::Invalid {
                path: format!("redis {}[{name}]", s.defs_key).into(),
                reason: e.to_string(),
            })?;
            defs.insert(name, def);
        }
        // The version is remembered only once it is loaded (and applied), so a failure is
        // retried next poll.
        let n = defs.len();
        if s.apply_poll(writes_before, version, defs) {
            tracing::info!(
                target: "bulwark::flag",
                source = "redis",
                flags = n,
                version,
                "feature flags reloaded"
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// Polls forever on a tokio task (abort the handle to stop).
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let random = RandomState::new();
            let mut n: u64 = 0;
            loop {
                n = n.wrapping_add(1);
                tokio::time::sleep(pause(self.shared.interval, &random, n)).await;
                let _ = self.sync().await;
            }
        })
    }
}

/// The pause before poll `n`: between half the interval and the whole interval, so instances
/// do not poll in lock-step. With the default 500 ms interval and the Redis call timeout
/// (250 ms by default), a change is seen within 750 ms: inside the one second promised.
fn pause(interval: Duration, random: &RandomState, n: u64) -> Duration {
    let half = interval / 2;
    half + half.mul_f64((random.hash_one(n) % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod pause_tests {
    use super::*;

    #[test]
    fn pauses_stay_between_half_the_interval_and_the_interval() {
        let random = RandomState::new();
        let interval = Duration::from_millis(500);
        let pauses: Vec<_> = (0..10_000).map(|n| pause(interval, &random, n)).collect();
        assert!(pauses.iter().all(|p| *p >= interval / 2 && *p <= interval));
        // Jittered: not one fixed pause.
        let distinct: std::collections::BTreeSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 100, "{} distinct pauses", distinct.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A poll that read Redis before a local `set` must not swap its older definitions in over
    /// it; its version stays unseen, so the next poll loads again.
    #[tokio::test]
    async fn a_poll_begun_before_a_local_write_does_not_undo_it() {
        let redis = Redis::open("redis://127.0.0.1:1/").unwrap();
        let source = RedisFlags::new(redis, Flags::new());
        let s = &*source.shared;
        let before = *s.local_writes();
        // The poll read `on`; meanwhile the kill switch was set and applied locally.
        let read = BTreeMap::from([("f".to_owned(), FlagDefinition::on())]);
        s.write_locally(|flags| flags.set("f", FlagDefinition::off()));
        assert!(!s.apply_poll(before, 7, read.clone()));
        assert_eq!(s.flags.get("f"), Some(FlagDefinition::off()));
        assert_eq!(s.last_version.load(Ordering::Relaxed), UNSEEN);
        // A poll begun after the write applies what it read.
        let after = *s.local_writes();
        assert!(s.apply_poll(after, 8, read));
        assert_eq!(s.flags.get("f"), Some(FlagDefinition::on()));
        assert_eq!(s.last_version.load(Ordering::Relaxed), 8);
    }
}
