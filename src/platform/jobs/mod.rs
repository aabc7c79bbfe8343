//! A durable job queue in PostgreSQL, worked by tasks inside the server process.
//!
//! - **Enqueue in the caller's transaction**: [`enqueue`] takes the caller's connection, so a
//!   job exists exactly when the write that needs it committed.
//! - **Claim** with `FOR UPDATE SKIP LOCKED`; the claim is a **lease** (`locked_until`) the
//!   worker renews while the handler runs, not a row lock held for the whole job. A job whose
//!   worker vanished (crash, `kill -9`) is claimed again once its lease expires.
//! - **Retries** with exponential backoff (`retry_base * 2^(attempt-1)`, capped); after
//!   `max_attempts` the job stays in the table as `dead` with its last error.
//! - **Recurring jobs**: a schedule row per recurring job; the instance that advances it
//!   enqueues that period's job, so each period runs once across all instances.
//! - **Graceful shutdown**: a running job gets the shutdown grace period to finish, then is
//!   released (due again, the attempt not counted).
//!
//! Delivery is at-least-once: handlers must be idempotent.

mod store;
mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{PgConnection, QueryResult};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use store::{Depth, JobRecord};
pub use worker::JobRunner;

use crate::platform::db::{Db, DbError};

/// Attempts before a job is declared dead, unless the job says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 10;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    kind: String,
    payload: serde_json::Value,
    run_at: Option<DateTime<Utc>>,
    max_attempts: i32,
    dedup_key: Option<String>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            dedup_key: None,
        }
    }

    /// Not before this time.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_attempts(mut self, attempts: i32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// While a job with this key is queued or running, enqueueing another is a no-op.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }
}

/// Enqueues `job` on the caller's connection — inside the caller's transaction when there is
/// one. Returns the new job's id, or `None` when the dedup key matched a live job.
pub fn enqueue(conn: &mut PgConnection, job: &NewJob) -> QueryResult<Option<Uuid>> {
    store::enqueue(conn, job)
}

/// What a handler receives.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    /// 1 on the first run.
    pub attempt: i32,
    /// Cancelled when the server shuts down or the lease was lost; long handlers should
    /// check it between steps.
    pub cancel: CancellationToken,
}

impl Job {
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.payload.clone())
    }
}

type Handler = Arc<dyn Fn(Job) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

#[derive(Debug, Clone)]
struct Schedule {
    name: String,
    kind: String,
    every: Duration,
}

/// Job handlers by kind, and recurring schedules. Modules register theirs in `app.rs`.
#[derive(Default, Clone)]
pub struct JobRegistry {
    handlers: HashMap<String, Handler>,
    schedules: Vec<Schedule>,
}

impl JobRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler for `kind` (a later registration replaces an earlier one).
    pub fn register<F, Fut>(&mut self, kind: &str, handler: F) -> &mut Self
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |job| handler(job).boxed());
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    /// Runs a job of `kind` once per `every` across all instances. The job's payload is
    /// `{"schedule": name, "period": n}` where `n` numbers the period since the epoch.
    pub fn schedule(&mut self, name: &str, kind: &str, every: Duration) -> &mut Self {
        self.schedules.retain(|s| s.name != name);
        self.schedules.push(Schedule {
            name: name.to_owned(),
            kind: kind.to_owned(),
            every,
        });
        self
    }

    fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }
}

/// Async access to the queue for code that is not already inside a transaction.
#[derive(Clone)]
pub struct JobQueue {
    db: Db,
}

impl JobQueue {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn enqueue(&self, job: NewJob) -> Result<Option<Uuid>, DbError> {
        self.db
            .run(move |conn| store::enqueue(conn, &job).map_err(DbError::from))
            .await
    }

    /// Jobs due and waiting, running, and dead.
    pub async fn depth(&self) -> Result<Depth, DbError> {
        self.db
            .run(|conn| store::depth(conn).map_err(DbError::from))
            .await
    }

    /// A job's stored state; `None` once it has completed (completed jobs leave the table).
    pub async fn find(&self, id: Uuid) -> Result<Option<JobRecord>, DbError> {
        self.db
            .run(move |conn| store::find(conn, id).map_err(DbError::from))
            .await
    }
}
