//! The SQL of the job queue. Plain functions on a connection, so `enqueue` can join the
//! caller's transaction; the worker calls the rest through the blocking gateway.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Double, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use uuid::Uuid;

use super::NewJob;
use crate::platform::db::Prepared;

/// The id of a job a statement inserted or changed. The worker's statements return it so
/// that they run through diesel's `load` and stay prepared (see [`Prepared`]).
#[derive(QueryableByName)]
struct JobId {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// A job a worker has claimed.
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedJob {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Inserts a job; `None` when a live job with the same dedup key already exists.
pub fn enqueue(conn: &mut PgConnection, job: &NewJob) -> QueryResult<Option<Uuid>> {
    let inserted: Option<JobId> = Prepared(
        diesel::sql_query(
            "INSERT INTO platform.jobs (id, kind, payload, max_attempts, run_at, dedup_key) \
         VALUES ($1, $2, $3, $4, coalesce($5, now()), $6) \
         ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND state <> 'dead' DO NOTHING \
         RETURNING id",
        )
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<Text, _>(&job.kind)
        .bind::<Jsonb, _>(&job.payload)
        .bind::<Integer, _>(job.max_attempts)
        .bind::<Nullable<Timestamptz>, _>(job.run_at)
        .bind::<Nullable<Text>, _>(job.dedup_key.as_deref()),
    )
    .get_result(conn)
    .optional()?;
    Ok(inserted.map(|row| row.id))
}

/// Claims the oldest due job of one of `kinds` — queued and due, or running with an expired
/// lease (its worker vanished) — and leases it to `worker` for `lease`.
pub fn claim(
    conn: &mut PgConnection,
    worker: Uuid,
    kinds: &[String],
    lease: Duration,
) -> QueryResult<Option<ClaimedJob>> {
    Prepared(
        diesel::sql_query(
            "UPDATE platform.jobs \
         SET state = 'running', attempts = attempts + 1, locked_by = $1, \
             locked_until = now() + make_interval(secs => $2), updated_at = now() \
         WHERE id = ( \
             SELECT id FROM platform.jobs \
             WHERE kind = ANY($3) \
               AND ((state = 'queued' AND run_at <= now()) \
                 OR (state = 'running' AND locked_until < now())) \
             ORDER BY run_at \
             LIMIT 1 \
             FOR UPDATE SKIP LOCKED) \
         RETURNING id, kind, payload, attempts, max_attempts",
        )
        .bind::<SqlUuid, _>(worker)
        .bind::<Double, _>(secs(lease))
        .bind::<Array<Text>, _>(kinds),
    )
    .get_result(conn)
    .optional()
}

/// Extends the lease; `false` when this worker no longer holds the job.
pub fn renew(
    conn: &mut PgConnection,
    job: Uuid,
    worker: Uuid,
    lease: Duration,
) -> QueryResult<bool> {
    let updated = Prepared(
        diesel::sql_query(
            "UPDATE platform.jobs SET locked_until = now() + make_interval(secs => $3) \
         WHERE id = $1 AND locked_by = $2 AND state = 'running' RETURNING id",
        )
        .bind::<SqlUuid, _>(job)
        .bind::<SqlUuid, _>(worker)
        .bind::<Double, _>(secs(lease)),
    )
    .load::<JobId>(conn)?;
    Ok(updated.len() == 1)
}

/// A finished job leaves the table.
pub fn complete(conn: &mut PgConnection, job: Uuid, worker: Uuid) -> QueryResult<()> {
    Prepared(
        diesel::sql_query(
            "DELETE FROM platform.jobs WHERE id = $1 AND locked_by = $2 RETURNING id",
        )
        .bind::<SqlUuid, _>(job)
        .bind::<SqlUuid, _>(worker),
    )
    .load::<JobId>(conn)
    .map(drop)
}

/// Records a failure: queued again after `retry_in`, or dead when attempts are used up.
pub fn fail(
    conn: &mut PgConnection,
    job: Uuid,
    worker: Uuid,
    error: &str,
    retry_in: Duration,
) -> QueryResult<()> {
    Prepared(
        diesel::sql_query(
            "UPDATE platform.jobs \
         SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
             run_at = now() + make_interval(secs => $4), \
             last_error = $3, locked_by = NULL, locked_until = NULL, updated_at = now() \
         WHERE id = $1 AND locked_by = $2 RETURNING id",
        )
        .bind::<SqlUuid, _>(job)
        .bind::<SqlUuid, _>(worker)
        .bind::<Text, _>(error)
        .bind::<Double, _>(secs(retry_in)),
    )
    .load::<JobId>(conn)
    .map(drop)
}

/// Marks a job dead at once (its worker was lost more times than it may be retried).
pub fn bury(conn: &mut PgConnection, job: Uuid, worker: Uuid, error: &str) -> QueryResult<()> {
    Prepared(
        diesel::sql_query(
            "UPDATE platform.jobs SET state = 'dead', last_error = $3, locked_by = NULL, \
         locked_until = NULL, updated_at = now() WHERE id = $1 AND locked_by = $2 RETURNING id",
        )
        .bind::<SqlUuid, _>(job)
        .bind::<SqlUuid, _>(worker)
        .bind::<Text, _>(error),
    )
    .load::<JobId>(conn)
    .map(drop)
}

/// Gives a job back untouched (shutdown before it finished): due now, the attempt not counted.
pub fn release(conn: &mut PgConnection, job: Uuid, worker: Uuid) -> QueryResult<()> {
    Prepared(
        diesel::sql_query(
            "UPDATE platform.jobs SET state = 'queued', attempts = attempts - 1, run_at = now(), \
         locked_by = NULL, locked_until = NULL, updated_at = now() \
         WHERE id = $1 AND locked_by = $2 RETURNING id",
        )
        .bind::<SqlUuid, _>(job)
        .bind::<SqlUuid, _>(worker),
    )
    .load::<JobId>(conn)
    .map(drop)
}

/// Creates or updates a recurring schedule; a new one is due at once.
pub fn upsert_schedule(
    conn: &mut PgConnection,
    name: &str,
    kind: &str,
    every: Duration,
) -> QueryResult<()> {
    // Once per schedule at start-up: not worth keeping prepared.
    diesel::sql_query(
        "INSERT INTO platform.job_schedules (name, kind, every_ms, next_run_at) \
         VALUES ($1, $2, $3, now()) \
         ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, every_ms = EXCLUDED.every_ms",
    )
    .bind::<Text, _>(name)
    .bind::<Text, _>(kind)
    .bind::<BigInt, _>(every.as_millis() as i64)
    .execute(conn)
    .map(drop)
}

/// If the schedule is due, advances it to the start of the next period and returns the
/// current period's number. The row update is atomic, so across all instances exactly one
/// caller gets each period.
pub fn take_due_period(conn: &mut PgConnection, name: &str) -> QueryResult<Option<i64>> {
    #[derive(QueryableByName)]
    struct Slot {
        #[diesel(sql_type = BigInt)]
        last_slot: i64,
    }
    let slot: Option<Slot> = Prepared(
        diesel::sql_query(
            "WITH t AS (SELECT floor(extract(epoch FROM now()) * 1000)::bigint AS now_ms) \
         UPDATE platform.job_schedules s \
         SET last_slot = t.now_ms / s.every_ms, \
             next_run_at = to_timestamp(((t.now_ms / s.every_ms + 1) * s.every_ms) / 1000.0) \
         FROM t \
         WHERE s.name = $1 AND s.next_run_at <= now() \
         RETURNING s.last_slot",
        )
        .bind::<Text, _>(name),
    )
    .get_result(conn)
    .optional()?;
    Ok(slot.map(|s| s.last_slot))
}

/// A job's stored state, for tests and operators.
#[derive(Debug, Clone, QueryableByName)]
pub struct JobRecord {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub run_at: DateTime<Utc>,
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<JobRecord>> {
    Prepared(
        diesel::sql_query(
            "SELECT id, kind, state, attempts, last_error, run_at FROM platform.jobs WHERE id = $1",
        )
        .bind::<SqlUuid, _>(id),
    )
    .get_result(conn)
    .optional()
}

/// How many jobs wait (due now), run, and are dead (out of attempts).
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Depth {
    #[diesel(sql_type = BigInt)]
    pub queued: i64,
    #[diesel(sql_type = BigInt)]
    pub running: i64,
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
}

pub fn depth(conn: &mut PgConnection) -> QueryResult<Depth> {
    diesel::sql_query(
        "SELECT count(*) FILTER (WHERE state = 'queued' AND run_at <= now()) AS queued, \
                count(*) FILTER (WHERE state = 'running') AS running, \
                count(*) FILTER (WHERE state = 'dead') AS dead \
         FROM platform.jobs",
    )
    .get_result(conn)
}
