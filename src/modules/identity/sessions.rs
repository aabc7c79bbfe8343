//! Is this session still active? Asked on every authenticated request, so it must be cheap,
//! and a logout must take effect on the very next request, on every instance.
//!
//! - The truth is `identity.sessions` (revoked, or account disabled).
//! - Each instance caches answers in memory (moka, bounded). With Redis, an "active" answer
//!   is trusted for 5 minutes (the Redis marker below catches revocations meanwhile); without
//!   Redis for 1 second, so a revocation made by another process (the `admin` CLI) lands
//!   within a second. A "revoked" answer is final.
//! - A revocation updates this instance's cache at once and, with Redis configured, writes a
//!   marker (`companion:session-revoked:<sid>`, kept for the access-token lifetime) that every
//!   instance checks first — one `EXISTS`, sub-millisecond. If Redis cannot answer, the check
//!   goes to the database instead of trusting the cache.
//! - Without Redis the server is a single instance by design, and its cache is the only one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use moka::sync::Cache;
use redis::AsyncCommands;
use uuid::Uuid;

use super::store;
use crate::platform::db::Db;
use crate::platform::http::{AppError, SessionCheck};
use crate::platform::redis::RedisPool;

const MARKER_PREFIX: &str = "companion:session-revoked:";
const CACHE_TTL: Duration = Duration::from_secs(300);
const ACTIVE_TTL_WITHOUT_REDIS: Duration = Duration::from_secs(1);
const CACHE_CAPACITY: u64 = 200_000;
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Sessions {
    db: Db,
    redis: Option<RedisPool>,
    /// Session id → (active for this user, when it was learned). A revocation stores
    /// `None`: revoked whoever asks.
    cache: Cache<Uuid, (Option<Uuid>, Instant)>,
    /// How long an "active" answer is trusted.
    active_ttl: Duration,
    /// How long a revocation marker must outlive the revocation: the access-token lifetime.
    marker_ttl: Duration,
}

impl Sessions {
    pub fn new(db: Db, redis: Option<RedisPool>, access_ttl: Duration) -> Arc<Self> {
        let active_ttl = if redis.is_some() {
            CACHE_TTL
        } else {
            ACTIVE_TTL_WITHOUT_REDIS
        };
        Arc::new(Self {
            db,
            redis,
            active_ttl,
            cache: Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(CACHE_TTL)
                .build(),
            marker_ttl: access_ttl + Duration::from_secs(60),
        })
    }

    /// Call after the revocation is committed in the database.
    pub async fn revoked(&self, session_ids: &[Uuid]) {
        for id in session_ids {
            self.cache.insert(*id, (None, Instant::now()));
        }
        let Some(pool) = &self.redis else { return };
        if session_ids.is_empty() {
            return;
        }
        let write = async {
            let mut conn = pool.get().await?;
            let mut pipe = redis::pipe();
            for id in session_ids {
                pipe.set_ex(format!("{MARKER_PREFIX}{id}"), 1, self.marker_ttl.as_secs())
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
            Ok::<_, crate::platform::redis::RedisError>(())
        };
        match tokio::time::timeout(REDIS_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "could not publish a session revocation"),
            Err(_) => tracing::error!("timed out publishing a session revocation"),
        }
    }

    /// Removes the revocation markers of sessions that no longer exist (an erased account's:
    /// without a session row the database answers "revoked" anyway).
    pub async fn forget(
        &self,
        session_ids: &[Uuid],
    ) -> Result<(), crate::platform::redis::RedisError> {
        let Some(pool) = &self.redis else {
            return Ok(());
        };
        if session_ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = session_ids
            .iter()
            .map(|id| format!("{MARKER_PREFIX}{id}"))
            .collect();
        let mut conn = pool.get().await?;
        conn.unlink::<_, ()>(keys).await?;
        Ok(())
    }

    /// `Some(true)` when Redis holds a revocation marker, `None` when it could not answer.
    async fn marked_revoked(&self, pool: &RedisPool, session_id: Uuid) -> Option<bool> {
        let check = async {
            let mut conn = pool.get().await.ok()?;
            conn.exists::<_, bool>(format!("{MARKER_PREFIX}{session_id}"))
                .await
                .ok()
        };
        tokio::time::timeout(REDIS_TIMEOUT, check)
            .await
            .ok()
            .flatten()
    }

    async fn ask_database(&self, user_id: Uuid, session_id: Uuid) -> Result<bool, AppError> {
        let active = store::session_active(&self.db, user_id, session_id).await?;
        let owner = active.then_some(user_id);
        self.cache.insert(session_id, (owner, Instant::now()));
        Ok(active)
    }
}

impl SessionCheck for Sessions {
    fn is_active(&self, user_id: Uuid, session_id: Uuid) -> BoxFuture<'_, Result<bool, AppError>> {
        Box::pin(async move {
            let cached = match self.cache.get(&session_id) {
                Some((None, _)) => return Ok(false),
                Some((Some(owner), at)) if owner == user_id => Some(at),
                // Unknown here, or known for another user: the database decides.
                _ => None,
            };
            if let Some(pool) = &self.redis {
                match self.marked_revoked(pool, session_id).await {
                    Some(true) => {
                        self.cache.insert(session_id, (None, Instant::now()));
                        return Ok(false);
                    }
                    Some(false) => {}
                    // Redis is not answering: only the database can say.
                    None => return self.ask_database(user_id, session_id).await,
                }
            }
            match cached {
                Some(at) if at.elapsed() < self.active_ttl => Ok(true),
                _ => self.ask_database(user_id, session_id).await,
            }
        })
    }
}
