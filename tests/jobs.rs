//! The durable job queue, worked by real servers against a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use companion::Application;
use companion::platform::db::DbError;
use companion::platform::jobs::{self, JobRecord, JobRegistry, NewJob};
use diesel::RunQueryDsl;
use serde_json::json;
use support::{TestApp, TestDb, eventually};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(20);

/// Calls seen by a test handler, in order.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(Instant, i32, serde_json::Value)>>>);

impl Calls {
    fn record(&self, attempt: i32, payload: &serde_json::Value) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), attempt, payload.clone()));
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn all(&self) -> Vec<(Instant, i32, serde_json::Value)> {
        self.0.lock().unwrap().clone()
    }
}

/// A server on a fresh database with the job handlers `register` adds.
async fn app_with_jobs(register: impl FnOnce(&mut JobRegistry) + Send + 'static) -> TestApp {
    TestApp::spawn_with(move |db| Application::builder(db.settings()).jobs(register)).await
}

async fn enqueue(app: &TestApp, job: NewJob) -> Uuid {
    app.platform
        .jobs
        .enqueue(job)
        .await
        .unwrap()
        .expect("a new job")
}

async fn job_state(app: &TestApp, id: Uuid) -> Option<JobRecord> {
    app.platform.jobs.find(id).await.unwrap()
}

async fn execute(app: &TestApp, sql: &'static str, id: Uuid) {
    app.platform
        .db
        .run(move |c| {
            diesel::sql_query(sql)
                .bind::<diesel::sql_types::Uuid, _>(id)
                .execute(c)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
}

/// Jobs of `kind` in the queue (the modules' own recurring jobs share it).
async fn count_jobs(app: &TestApp, kind: &'static str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    app.platform
        .db
        .run(move |c| {
            diesel::sql_query("SELECT count(*) AS n FROM platform.jobs WHERE kind = $1")
                .bind::<diesel::sql_types::Text, _>(kind)
                .get_result::<Count>(c)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
        .n
}

#[tokio::test]
async fn failures_are_retried_with_exponential_backoff_then_the_job_is_dead() {
    let calls = Calls::default();
    let app = {
        let calls = calls.clone();
        app_with_jobs(move |registry| {
            registry.register("always-fails", move |job| {
                calls.record(job.attempt, &job.payload);
                let attempt = job.attempt;
                async move { anyhow::bail!("upstream refused (attempt {attempt})") }
            });
        })
        .await
    };

    let id = enqueue(
        &app,
        NewJob::new("always-fails", json!({"n": 1})).max_attempts(4),
    )
    .await;
    let dead = eventually(PATIENCE, || async {
        job_state(&app, id).await.filter(|j| j.state == "dead")
    })
    .await;

    assert_eq!(dead.attempts, 4);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("upstream refused (attempt 4)")
    );
    let seen = calls.all();
    assert_eq!(seen.iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // test.toml: retry_base_ms = 100, so the waits are at least 100, 200 and 400 ms.
    for (i, pair) in seen.windows(2).enumerate() {
        let waited = pair[1].0 - pair[0].0;
        let backoff = Duration::from_millis(100 * 2u64.pow(i as u32));
        assert!(
            waited >= backoff,
            "retry {} came after {waited:?}, before {backoff:?}",
            i + 1
        );
    }
    // A dead job stays dead: nothing runs it again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.len(), 4);
}

#[tokio::test]
async fn a_job_that_recovers_is_done_and_leaves_the_queue() {
    let calls = Calls::default();
    let app = {
        let calls = calls.clone();
        app_with_jobs(move |registry| {
            registry.register("flaky", move |job| {
                calls.record(job.attempt, &job.payload);
                let attempt = job.attempt;
                async move {
                    anyhow::ensure!(attempt >= 3, "not yet");
                    Ok(())
                }
            });
        })
        .await
    };
    let id = enqueue(&app, NewJob::new("flaky", json!({}))).await;
    eventually(PATIENCE, || async {
        job_state(&app, id).await.is_none().then_some(())
    })
    .await;
    assert_eq!(calls.len(), 3);
}

#[tokio::test]
async fn a_job_whose_worker_vanished_runs_again_after_its_lease_expires() {
    let calls = Calls::default();
    let app = {
        let calls = calls.clone();
        app_with_jobs(move |registry| {
            registry.register("report", move |job| {
                calls.record(job.attempt, &job.payload);
                async { Ok(()) }
            });
        })
        .await
    };
    // Leave the row exactly as a worker killed mid-job leaves it: running, leased to a worker
    // that will never renew or finish it. (Enqueued for later so no live worker races us.)
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let id = enqueue(&app, NewJob::new("report", json!({})).run_at(later)).await;
    execute(
        &app,
        "UPDATE platform.jobs SET state = 'running', attempts = 1, locked_by = gen_random_uuid(), \
         locked_until = now() + interval '1 second', run_at = now() WHERE id = $1",
        id,
    )
    .await;
    let leased_at = Instant::now();

    eventually(PATIENCE, || async {
        job_state(&app, id).await.is_none().then_some(())
    })
    .await;
    let seen = calls.all();
    assert_eq!(seen.len(), 1, "run exactly once more");
    assert_eq!(seen[0].1, 2, "the lost run counts as an attempt");
    assert!(
        seen[0].0 - leased_at >= Duration::from_millis(900),
        "taken before the lease expired: {:?}",
        seen[0].0 - leased_at
    );
}

#[tokio::test]
async fn a_recurring_job_runs_once_per_period_across_instances() {
    let calls = Calls::default();
    let db = TestDb::fresh().await;
    let builder = |calls: Calls| {
        Application::builder(db.settings()).jobs(move |registry| {
            registry
                .register("tick", move |job| {
                    calls.record(job.attempt, &job.payload);
                    async { Ok(()) }
                })
                .schedule("every-half-second", "tick", Duration::from_millis(500));
        })
    };
    let mut a = TestApp::start(builder(calls.clone()), None).await;
    let mut b = TestApp::start(builder(calls.clone()), None).await;

    eventually(PATIENCE, || async { (calls.len() >= 5).then_some(()) }).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    let mut periods: Vec<i64> = calls
        .all()
        .iter()
        .map(|(_, _, payload)| {
            assert_eq!(payload["schedule"], "every-half-second");
            payload["period"].as_i64().unwrap()
        })
        .collect();
    let runs = periods.len();
    periods.sort();
    periods.dedup();
    assert_eq!(periods.len(), runs, "a period ran twice: {periods:?}");
    for pair in periods.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a period was skipped: {periods:?}");
    }
    drop(db);
}

#[tokio::test]
async fn an_enqueue_rolled_back_with_its_transaction_leaves_no_job() {
    let app = TestApp::spawn().await;
    let db = app.platform.db.clone();

    let rolled_back: Result<(), DbError> = db
        .transaction(|conn| {
            jobs::enqueue(conn, &NewJob::new("unhandled", json!({"n": 1})))?;
            // The write the job belonged to failed: the whole transaction goes.
            Err(diesel::result::Error::RollbackTransaction.into())
        })
        .await;
    assert!(rolled_back.is_err());
    assert_eq!(count_jobs(&app, "unhandled").await, 0);

    let committed = db
        .transaction(|conn| {
            jobs::enqueue(conn, &NewJob::new("unhandled", json!({"n": 2}))).map_err(DbError::from)
        })
        .await
        .unwrap();
    assert!(committed.is_some());
    assert_eq!(count_jobs(&app, "unhandled").await, 1);
}

#[tokio::test]
async fn a_dedup_key_keeps_one_live_job() {
    let app = TestApp::spawn().await;
    let job = NewJob::new("unhandled", json!({})).dedup_key("export:ann");
    let first = app.platform.jobs.enqueue(job.clone()).await.unwrap();
    let second = app.platform.jobs.enqueue(job).await.unwrap();
    assert!(first.is_some());
    assert_eq!(second, None);
    assert_eq!(count_jobs(&app, "unhandled").await, 1);
}

#[tokio::test]
async fn shutdown_lets_a_running_job_finish() {
    let calls = Calls::default();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let app = {
        let calls = calls.clone();
        app_with_jobs(move |registry| {
            registry.register("slow", move |job| {
                let calls = calls.clone();
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                async move {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    calls.record(job.attempt, &job.payload);
                    Ok(())
                }
            });
        })
        .await
    };
    let id = enqueue(&app, NewJob::new("slow", json!({}))).await;
    started_rx.await.unwrap();
    let mut app = app;
    app.stop().await.unwrap();

    assert_eq!(calls.len(), 1, "the job finished before the server stopped");
    assert!(
        app.platform.jobs.find(id).await.unwrap().is_none(),
        "and was recorded as done"
    );
}

#[tokio::test]
async fn shutdown_releases_a_job_that_outlives_the_grace_period() {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let app = TestApp::spawn_with(move |db| {
        let settings = support::test_settings(
            &db.url,
            &[("COMPANION__SERVER__SHUTDOWN_TIMEOUT_SECS", "1")],
        );
        Application::builder(settings).jobs(move |registry| {
            registry.register("endless", move |_job| {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
            });
        })
    })
    .await;
    let id = enqueue(&app, NewJob::new("endless", json!({}))).await;
    started_rx.await.unwrap();
    let mut app = app;
    let stopping = Instant::now();
    app.stop().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "bounded by the grace period"
    );

    let job = app
        .platform
        .jobs
        .find(id)
        .await
        .unwrap()
        .expect("the job is kept");
    assert_eq!(job.state, "queued");
    assert_eq!(
        job.attempts, 0,
        "a released run is not counted as an attempt"
    );
}
