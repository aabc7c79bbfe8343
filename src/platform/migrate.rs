//! Embedded SQL migrations (refinery), applied under a PostgreSQL advisory lock so that
//! several instances starting at once against one database apply them exactly once.
//!
//! refinery talks to PostgreSQL through its own `postgres` client; the server's diesel pool
//! is not involved. Migrations live in `migrations/` as `V<n>__<name>.sql`; a migration is
//! never edited once it has landed — add a new one.

use std::time::{Duration, Instant};

use diesel::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant shared by every instance: the key of the migration advisory lock.
const MIGRATION_LOCK_KEY: i64 = 0x636f_6d70_616e_696f; // "companio"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("could not connect to PostgreSQL: {0}")]
    Connect(#[source] postgres::Error),
    #[error("could not take the migration lock: {0}")]
    Lock(#[source] postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

/// Applies every pending migration; returns the names of those applied by this call.
/// Blocking: call it from a blocking context.
pub fn run(database_url: &str) -> Result<Vec<String>, MigrateError> {
    let mut client =
        postgres::Client::connect(database_url, postgres::NoTls).map_err(MigrateError::Connect)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .map_err(MigrateError::Lock)?;
    let outcome = embedded::migrations::runner().run(&mut client);
    // The lock is released with the session anyway; unlocking early lets waiters go on.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]);
    let report = outcome?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// Like [`run`], retrying connection failures until `patience` has passed: a server started
/// together with its database (compose, a PaaS) waits for it instead of crashing.
pub fn run_with_patience(
    database_url: &str,
    patience: Duration,
) -> Result<Vec<String>, MigrateError> {
    let deadline = Instant::now() + patience;
    loop {
        match run(database_url) {
            Err(MigrateError::Connect(e)) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// The newest migration version compiled into this binary.
pub fn latest_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

#[derive(QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Nullable<Integer>)]
    version: Option<i32>,
}

/// The newest migration applied to the database, or `None` before the first migration.
pub fn applied_version(conn: &mut PgConnection) -> QueryResult<Option<i32>> {
    let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "to_regclass('public.refinery_schema_history') IS NOT NULL",
    ))
    .get_result(conn)?;
    if !exists {
        return Ok(None);
    }
    let row: AppliedVersion =
        diesel::sql_query("SELECT max(version) AS version FROM refinery_schema_history")
            .get_result(conn)?;
    Ok(row.version)
}
