//! The worker tasks and the scheduler task.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use diesel::Connection;
use futures_util::FutureExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::store::{self, ClaimedJob};
use super::{Job, JobRegistry, NewJob};
use crate::config::JobSettings;
use crate::platform::db::{Db, DbError};

struct Shared {
    db: Db,
    registry: JobRegistry,
    kinds: Vec<String>,
    poll: Duration,
    lease: Duration,
    retry_base: Duration,
    retry_max: Duration,
    grace: Duration,
    shutdown: CancellationToken,
}

/// The running workers of one process.
pub struct JobRunner {
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl JobRunner {
    /// Starts `settings.workers` worker tasks and, when there are schedules, the scheduler.
    /// `grace` is how long a running job may take to finish once shutdown begins.
    pub fn start(db: Db, registry: JobRegistry, settings: &JobSettings, grace: Duration) -> Self {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        if settings.workers > 0 {
            let shared = Arc::new(Shared {
                db,
                kinds: registry.kinds(),
                registry,
                poll: Duration::from_millis(settings.poll_interval_ms),
                lease: Duration::from_secs(settings.lease_secs),
                retry_base: Duration::from_millis(settings.retry_base_ms),
                retry_max: Duration::from_millis(settings.retry_max_ms),
                grace,
                shutdown: shutdown.clone(),
            });
            if !shared.kinds.is_empty() {
                for _ in 0..settings.workers {
                    tasks.push(tokio::spawn(work(shared.clone(), Uuid::now_v7())));
                }
            }
            if !shared.registry.schedules.is_empty() {
                tasks.push(tokio::spawn(schedule(shared.clone())));
            }
        }
        Self { tasks, shutdown }
    }

    /// The token that begins shutdown when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops claiming, lets running jobs finish within the grace period (or releases them),
    /// and waits for every task to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn idle(shared: &Shared) {
    tokio::select! {
        _ = tokio::time::sleep(shared.poll) => {}
        _ = shared.shutdown.cancelled() => {}
    }
}

async fn work(shared: Arc<Shared>, worker: Uuid) {
    while !shared.shutdown.is_cancelled() {
        let kinds = shared.kinds.clone();
        let lease = shared.lease;
        let claimed = shared
            .db
            .run(move |c| store::claim(c, worker, &kinds, lease).map_err(DbError::from))
            .await;
        match claimed {
            Ok(Some(job)) => {
                // The span is attached to the future, not entered across awaits, so it
                // follows this job and never leaks onto other tasks of the thread.
                let span = tracing::info_span!(
                    "job", job_id = %job.id, kind = %job.kind, attempt = job.attempts
                );
                run_one(&shared, worker, job).instrument(span).await
            }
            Ok(None) => idle(&shared).await,
            Err(e) => {
                tracing::warn!(error = %e, "job worker could not claim");
                idle(&shared).await;
            }
        }
    }
}

fn backoff(shared: &Shared, attempt: i32) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
    shared
        .retry_base
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(shared.retry_max)
}

enum Outcome {
    Done,
    Failed(String),
    Released,
}

async fn run_one(shared: &Arc<Shared>, worker: Uuid, claimed: ClaimedJob) {
    let id = claimed.id;
    if claimed.attempts > claimed.max_attempts {
        let msg = "its worker was lost more often than the job may be retried";
        tracing::error!("job dead: {msg}");
        let _ = shared
            .db
            .run(move |c| store::bury(c, id, worker, msg).map_err(DbError::from))
            .await;
        return;
    }
    let Some(handler) = shared.registry.handlers.get(&claimed.kind).cloned() else {
        return; // cannot happen: we only claim kinds we handle
    };
    let cancel = CancellationToken::new();
    let job = Job {
        id,
        kind: claimed.kind.clone(),
        payload: claimed.payload,
        attempt: claimed.attempts,
        cancel: cancel.clone(),
    };

    let renewing = CancellationToken::new();
    let renewal = tokio::spawn(renew_lease(
        shared.clone(),
        id,
        worker,
        cancel.clone(),
        renewing.clone(),
    ));

    let handling = AssertUnwindSafe(handler(job)).catch_unwind();
    tokio::pin!(handling);
    let finished = tokio::select! {
        result = &mut handling => Some(result),
        _ = shared.shutdown.cancelled() => None,
    };
    let finished = match finished {
        Some(result) => Some(result),
        None => {
            cancel.cancel();
            tokio::time::timeout(shared.grace, &mut handling).await.ok()
        }
    };
    renewing.cancel();
    let _ = renewal.await;

    let outcome = match finished {
        Some(Ok(Ok(()))) => Outcome::Done,
        // A handler that gave up because we are shutting down has not failed.
        Some(Ok(Err(_))) | None if shared.shutdown.is_cancelled() && cancel.is_cancelled() => {
            Outcome::Released
        }
        Some(Ok(Err(e))) => Outcome::Failed(format!("{e:#}")),
        Some(Err(_panic)) => Outcome::Failed("the handler panicked".to_owned()),
        None => Outcome::Released,
    };
    let retry_in = backoff(shared, claimed.attempts);
    let result = match outcome {
        Outcome::Done => {
            tracing::debug!("job done");
            shared
                .db
                .run(move |c| store::complete(c, id, worker).map_err(DbError::from))
                .await
        }
        Outcome::Failed(error) => {
            tracing::warn!(error = %error, retry_in_ms = retry_in.as_millis() as u64, "job failed");
            shared
                .db
                .run(move |c| store::fail(c, id, worker, &error, retry_in).map_err(DbError::from))
                .await
        }
        Outcome::Released => {
            tracing::info!("job released at shutdown");
            shared
                .db
                .run(move |c| store::release(c, id, worker).map_err(DbError::from))
                .await
        }
    };
    if let Err(e) = result {
        // The lease will expire and another worker will take the job again.
        tracing::error!(error = %e, "could not record the job's outcome");
    }
}

async fn renew_lease(
    shared: Arc<Shared>,
    id: Uuid,
    worker: Uuid,
    cancel_job: CancellationToken,
    stop: CancellationToken,
) {
    let every = shared.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let lease = shared.lease;
        match shared
            .db
            .run(move |c| store::renew(c, id, worker, lease).map_err(DbError::from))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job_id = %id, "job lease lost; cancelling the handler");
                cancel_job.cancel();
                return;
            }
            Err(e) => tracing::warn!(job_id = %id, error = %e, "could not renew the job lease"),
        }
    }
}

async fn schedule(shared: Arc<Shared>) {
    let schedules = shared.registry.schedules.clone();
    // Register the schedules; keep trying while the database is away.
    while !shared.shutdown.is_cancelled() {
        let list = schedules.clone();
        let registered = shared
            .db
            .run(move |c| {
                for s in &list {
                    store::upsert_schedule(c, &s.name, &s.kind, s.every)?;
                }
                Ok::<_, DbError>(())
            })
            .await;
        match registered {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not register job schedules");
                idle(&shared).await;
            }
        }
    }
    while !shared.shutdown.is_cancelled() {
        for s in &schedules {
            let (name, kind) = (s.name.clone(), s.kind.clone());
            let ticked = shared
                .db
                .run(move |c| {
                    c.transaction::<_, diesel::result::Error, _>(|c| {
                        let Some(period) = store::take_due_period(c, &name)? else {
                            return Ok(None);
                        };
                        let job = NewJob::new(kind, json!({ "schedule": name, "period": period }))
                            .dedup_key(format!("schedule:{name}:{period}"));
                        store::enqueue(c, &job)?;
                        Ok(Some(period))
                    })
                    .map_err(DbError::from)
                })
                .await;
            match ticked {
                Ok(Some(period)) => {
                    tracing::debug!(schedule = %s.name, period, "recurring job enqueued")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(schedule = %s.name, error = %e, "schedule tick failed"),
            }
        }
        idle(&shared).await;
    }
}
