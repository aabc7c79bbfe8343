//! The shared kernel: infrastructure every module uses, and no business rules.
//! `platform` knows nothing of modules; modules depend on it, never the reverse.

pub mod backup;
pub mod db;
pub mod http;
pub mod jobs;
pub mod llm;
pub mod mail;
pub mod metrics;
pub mod migrate;
pub mod ops;
pub mod personal;
pub mod ratelimit;
pub mod realtime;
pub mod redis;
pub mod storage;
pub mod telemetry;

use std::sync::Arc;

use crate::config::Settings;

/// Handles on the shared infrastructure, built once by `app.rs` and handed to modules.
#[derive(Clone)]
pub struct Platform {
    pub settings: Arc<Settings>,
    pub db: db::Db,
    pub redis: Option<redis::RedisPool>,
    pub storage: storage::Storage,
    pub jobs: jobs::JobQueue,
    pub tokens: Arc<http::TokenKeys>,
    pub metrics: Arc<metrics::Metrics>,
    pub limits: ratelimit::Limits,
    /// Live events to users' connections (in process, or shared through Redis).
    pub realtime: realtime::Realtime,
    pub mailer: Arc<dyn mail::Mailer>,
    /// The in-memory outbox when `mail.transport = "memory"` (tests read it).
    pub outbox: Option<Arc<mail::MemoryMailer>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Keys(#[from] http::KeyError),
    #[error("mail: {0}")]
    Mail(#[from] mail::MailError),
    #[error("realtime: {0}")]
    Realtime(#[from] ::redis::RedisError),
}

impl Platform {
    /// Builds every handle from settings. Connects to nothing yet: the database pool, Redis
    /// and cloud stores connect lazily, so the process starts (and reports "not ready") while
    /// a dependency is still coming up.
    pub fn new(settings: Settings) -> Result<Self, PlatformError> {
        use secrecy::ExposeSecret;
        let db = db::Db::new(settings.database_url(), &settings.database);
        let redis = match &settings.redis.url {
            Some(url) => Some(redis::pool(url.expose_secret())?),
            None => None,
        };
        let realtime = match (&settings.redis.url, &redis) {
            (Some(url), Some(pool)) => {
                realtime::Realtime::with_redis(url.expose_secret(), pool.clone())?
            }
            _ => realtime::Realtime::in_process(),
        };
        let metrics = Arc::new(metrics::Metrics::new()?);
        let (mailer, outbox) = mail::from_settings(&settings.mail)?;
        Ok(Self {
            limits: ratelimit::Limits::new(
                redis.clone(),
                &settings.ratelimit.key_prefix,
                metrics.clone(),
            ),
            redis,
            realtime,
            storage: storage::Storage::from_settings(&settings.storage)?,
            jobs: jobs::JobQueue::new(db.clone()),
            tokens: Arc::new(http::TokenKeys::new(&settings.auth)?),
            metrics,
            mailer,
            outbox,
            db,
            settings: Arc::new(settings),
        })
    }
}
