//! The read cache for characters anyone may open (public or unlisted, not hidden): their
//! detail answer, already serialized, so a popular character is served without PostgreSQL.
//!
//! - Two levels. Each instance keeps answers in memory (moka, bounded). With Redis
//!   configured, answers are also shared there (`companion:catalog:character:<id>`, 60 s),
//!   so a cold instance fills from Redis rather than from the database.
//! - Every change to a character (edit, delete, hide, a rating, a new conversation) drops
//!   its entry here and in Redis after the change is committed.
//! - Without Redis the server is one instance and its memory is exact: entries live 5
//!   minutes. With Redis other instances may hold an entry in memory, so memory entries live
//!   1 second: another instance's change shows here within a second, and on this instance at
//!   once. Redis entries live 60 s, which bounds how long a read that raced a change (read
//!   before the commit, stored after the invalidation) can survive.
//! - If Redis does not answer in time, the cache is skipped, never waited on.

use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::future::Cache;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::platform::redis::RedisPool;

const KEY_PREFIX: &str = "companion:catalog:character:";
const REDIS_TTL_SECS: u64 = 60;
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
const LOCAL_TTL_ALONE: Duration = Duration::from_secs(300);
const LOCAL_TTL_SHARED: Duration = Duration::from_secs(1);
const LOCAL_CAPACITY: u64 = 20_000;

#[derive(Clone)]
pub struct ReadCache {
    local: Cache<Uuid, Bytes>,
    /// When each character was last invalidated here, so that a read which started before
    /// a change cannot store its stale answer after the change's invalidation.
    invalidated: Cache<Uuid, Instant>,
    redis: Option<RedisPool>,
}

impl ReadCache {
    pub fn new(redis: Option<RedisPool>) -> Self {
        let ttl = if redis.is_some() {
            LOCAL_TTL_SHARED
        } else {
            LOCAL_TTL_ALONE
        };
        Self {
            local: Cache::builder()
                .max_capacity(LOCAL_CAPACITY)
                .time_to_live(ttl)
                .build(),
            invalidated: Cache::builder()
                .max_capacity(LOCAL_CAPACITY)
                .time_to_live(LOCAL_TTL_ALONE)
                .build(),
            redis,
        }
    }

    fn key(id: Uuid) -> String {
        format!("{KEY_PREFIX}{id}")
    }

    pub async fn get(&self, id: Uuid) -> Option<Bytes> {
        if let Some(body) = self.local.get(&id).await {
            return Some(body);
        }
        let pool = self.redis.as_ref()?;
        let read = async {
            let mut conn = pool.get().await.ok()?;
            conn.get::<_, Option<Vec<u8>>>(Self::key(id)).await.ok()?
        };
        let body = Bytes::from(tokio::time::timeout(REDIS_TIMEOUT, read).await.ok()??);
        self.local.insert(id, body.clone()).await;
        Some(body)
    }

    /// Stores the answer of a read that began at `read_at`, unless the character changed
    /// since.
    pub async fn put(&self, id: Uuid, body: Bytes, read_at: Instant) {
        if self
            .invalidated
            .get(&id)
            .await
            .is_some_and(|at| at >= read_at)
        {
            return;
        }
        self.local.insert(id, body.clone()).await;
        let Some(pool) = &self.redis else { return };
        let write = async {
            let mut conn = pool.get().await.ok()?;
            conn.set_ex::<_, _, ()>(Self::key(id), body.as_ref(), REDIS_TTL_SECS)
                .await
                .ok()
        };
        if tokio::time::timeout(REDIS_TIMEOUT, write)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::debug!(%id, "could not share a character in the read cache");
        }
    }

    /// Call after the change is committed.
    pub async fn invalidate(&self, id: Uuid) {
        self.invalidated.insert(id, Instant::now()).await;
        self.local.invalidate(&id).await;
        let Some(pool) = &self.redis else { return };
        let delete = async {
            let mut conn = pool.get().await.ok()?;
            conn.del::<_, ()>(Self::key(id)).await.ok()
        };
        if tokio::time::timeout(REDIS_TIMEOUT, delete)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::error!(%id, "could not drop a character from the shared read cache");
        }
    }
}
