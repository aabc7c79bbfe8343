//! Optional Redis connection pool. Without `REDIS_URL` the server runs on in-process
//! substitutes (rate limits, realtime fan-out); with it, instances share that state.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_redis::{Config, Pool, Runtime};

pub type RedisPool = Pool;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis.url is invalid: {0}")]
    Config(#[from] deadpool_redis::CreatePoolError),
    #[error("redis unavailable: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis command failed: {0}")]
    Command(#[from] deadpool_redis::redis::RedisError),
    #[error("redis did not answer in time")]
    Timeout,
}

/// Logs a failing dependency once per outage, not once per call: during an outage every
/// request would otherwise add a warning (the metrics count each one). The first failure
/// after a success warns, later ones are debug lines, the first success after it says so.
pub struct Outage {
    what: &'static str,
    down: AtomicBool,
}

impl Outage {
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            down: AtomicBool::new(false),
        }
    }

    /// A call failed with `error`; `meanwhile` says what the caller does instead.
    pub fn failed(&self, error: &dyn Display, meanwhile: &str) {
        if self.down.swap(true, Ordering::Relaxed) {
            tracing::debug!(%error, "{} still unavailable; {meanwhile}", self.what);
        } else {
            tracing::warn!(%error, "{} unavailable; {meanwhile} until it is back", self.what);
        }
    }

    pub fn succeeded(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("{} is back", self.what);
        }
    }
}

pub fn pool(url: &str) -> Result<RedisPool, RedisError> {
    let mut config = Config::from_url(url);
    let mut pool_config = deadpool_redis::PoolConfig::new(16);
    pool_config.timeouts.wait = Some(Duration::from_secs(2));
    pool_config.timeouts.create = Some(Duration::from_secs(2));
    config.pool = Some(pool_config);
    Ok(config.create_pool(Some(Runtime::Tokio1))?)
}

pub async fn ping(pool: &RedisPool) -> Result<(), RedisError> {
    let check = async {
        let mut conn = pool.get().await?;
        let _: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut conn)
            .await?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), check)
        .await
        .map_err(|_| RedisError::Timeout)?
}

/// Deletes every key matching the glob `pattern` (SCAN, then UNLINK in batches): for
/// erasing what a person left in Redis. Returns how many keys went.
pub async fn delete_matching(pool: &RedisPool, pattern: &str) -> Result<u64, RedisError> {
    use deadpool_redis::redis::AsyncCommands;
    let mut conn = pool.get().await?;
    let mut deleted = 0;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = deadpool_redis::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += conn.unlink::<_, u64>(&keys).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `text` with Redis's glob characters escaped, to match it literally inside a pattern.
pub fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
