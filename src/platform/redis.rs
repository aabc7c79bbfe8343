//! Optional Redis connection pool. Without `REDIS_URL` the server runs on in-process
//! substitutes (rate limits, realtime fan-out); with it, instances share that state.

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
