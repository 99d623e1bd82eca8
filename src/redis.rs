//! The shared Redis connection every Redis-backed store uses (feature `redis`).
//!
//! One [`Redis`] handle is a multiplexed, auto-reconnecting connection plus two policies that
//! every store follows: a **call timeout** (default 250 ms; a store call that takes longer is a
//! [`StoreError::Timeout`] and the layer applies its failure policy) and a **key prefix**
//! (default `bulwark`), so bulwark's keys never collide with your application's.
//!
//! The connection is made lazily: [`Redis::open`] never blocks and succeeds while Redis is down,
//! so an instance can start (and serve, following each layer's failure policy) before Redis is
//! back.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use bulwark::redis::Redis;
//!
//! let redis = Redis::open("redis://127.0.0.1:6379/")?
//!     .prefix("shop")
//!     .timeout(Duration::from_millis(100));
//! redis.ping().await?;
//! # Ok(()) }
//! ```

use std::{fmt, future::Future, sync::Arc, time::Duration};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{ConfigError, StoreError};

/// A connection to `client`'s server, made on first use, with `timeout` for connecting and for
/// each answer.
fn connect_lazily(
    client: &redis::Client,
    timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

/// A shared Redis connection with a call timeout and a key prefix. Cheap to clone; clones share
/// the connection.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A lazily connected handle to the server at `url` (`redis://host:port/db`).
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if the URL does not parse.
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        let timeout = Duration::from_millis(250);
        let client = redis::Client::open(url)
            .map_err(|e| ConfigError::invalid("redis url", e.to_string()))?;
        let conn = connect_lazily(&client, timeout)
            .map_err(|e| ConfigError::invalid("redis url", e.to_string()))?;
        Ok(Self {
            client,
            conn,
            prefix: Arc::from("bulwark"),
            timeout,
        })
    }

    /// Prefixes every key with `prefix` and a colon (default `bulwark`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest a store call may take (default 250 ms), connecting included.
    ///
    /// The handle gets a connection of its own made with this timeout (clones made before
    /// keep theirs). Call it inside a tokio runtime, like [`open`](Self::open).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        // The connection applies its own connect and response timeouts too: made with the
        // default, it would fail any call slower than 250 ms whatever this timeout says.
        // Remaking it cannot fail: the client's URL was checked by `open`.
        if let Ok(conn) = connect_lazily(&self.client, timeout) {
            self.conn = conn;
        }
        self.timeout = timeout;
        self
    }

    /// The key prefix.
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks that the server answers within the call timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.run("ping", async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(drop)
    }

    /// `prefix:part1:part2...`
    #[allow(dead_code)]
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let len = self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// A clone of the connection, for a store's commands.
    #[allow(dead_code)]
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs one store call under the call timeout, mapping failures to [`StoreError`] and
    /// counting them.
    pub(crate) async fn run<T, F>(&self, operation: &'static str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => StoreError::backend(operation, e),
            Err(_) => StoreError::Timeout {
                operation,
                timeout: self.timeout,
            },
        };
        crate::metrics::store_error("redis", operation);
        Err(result)
    }
}
