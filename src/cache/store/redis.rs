use std::fmt;

use super::{Entry, Store, StoreFuture};
use crate::redis::{Redis, Scan};

/// Cache entries shared in Redis (feature `redis`): one string per entry under
/// `<prefix>:cache:<key>`, in [`Entry::to_bytes`] form, expiring after [`Entry::time_to_keep`].
/// Works the same on one node and on a cluster (a purge by prefix scans every primary).
/// Every call runs under the [`Redis`] handle's timeout; a failure is a
/// [`StoreError`](crate::StoreError), on which the layer bypasses the cache.
#[derive(Clone)]
pub struct RedisStore {
    redis: Redis,
    namespace: String,
}

impl RedisStore {
    /// A store on `redis`.
    #[must_use]
    pub fn new(redis: Redis) -> Self {
        let namespace = redis.key(&["cache", ""]);
        Self { redis, namespace }
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.namespace.len() + key.len());
        k.push_str(&self.namespace);
        k.push_str(key);
        k
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Escapes Redis glob characters so a prefix matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>> {
        Box::pin(async move {
            let mut conn = self.redis.connection();
            let key = self.key(key);
            let raw: Option<Vec<u8>> = self
                .redis
                .run("cache_get", async move {
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await
                })
                .await?;
            raw.map(|b| Entry::from_bytes(&b)).transpose()
        })
    }

    fn put<'a>(&'a self, key: &'a str, entry: Entry) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let millis = u64::try_from(entry.time_to_keep().as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let bytes = entry.to_bytes();
            let mut conn = self.redis.connection();
            let key = self.key(key);
            self.redis
                .run("cache_put", async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(millis)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.redis.connection();
            let key = self.key(key);
            self.redis
                .run("cache_remove", async move {
                    redis::cmd("DEL")
                        .arg(&key)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await
        })
    }

    fn remove_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let pattern = format!("{}*", glob_escape(&self.key(prefix)));
            let mut scan = Scan::new();
            let mut removed = 0u64;
            while let Some(keys) = self.redis.scan("cache_purge", &pattern, &mut scan).await? {
                if keys.is_empty() {
                    continue;
                }
                // On a cluster the client splits the keys by slot and sums the counts.
                let mut conn = self.redis.connection();
                let n: u64 = self
                    .redis
                    .run("cache_purge", async move {
                        redis::cmd("UNLINK").arg(keys).query_async(&mut conn).await
                    })
                    .await?;
                removed += n;
            }
            Ok(removed)
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_are_escaped() {
        assert_eq!(
            super::glob_escape("GET a*b?[c]\\"),
            "GET a\\*b\\?\\[c\\]\\\\"
        );
    }
}
