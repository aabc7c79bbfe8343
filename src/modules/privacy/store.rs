//! Queries on the `privacy` tables. Only this module's service calls them.

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::{consent_events, consents, erasures, exports};

// ---- consents

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = consents, check_for_backend(Pg))]
pub struct ConsentRow {
    pub purpose: String,
    pub granted: bool,
    pub changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = consent_events, check_for_backend(Pg))]
pub struct ConsentEventRow {
    pub id: Uuid,
    pub purpose: String,
    pub granted: bool,
    pub occurred_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

pub fn consents_of(conn: &mut PgConnection, user: Uuid) -> QueryResult<Vec<ConsentRow>> {
    consents::table
        .filter(consents::user_id.eq(user))
        .select(ConsentRow::as_select())
        .load(conn)
}

pub fn consent_history(conn: &mut PgConnection, user: Uuid) -> QueryResult<Vec<ConsentEventRow>> {
    consent_events::table
        .filter(consent_events::user_id.eq(user))
        .order(consent_events::id)
        .select(ConsentEventRow::as_select())
        .load(conn)
}

/// Records `granted` for `purpose` when it differs from the current answer (or there is
/// none); true when it changed.
pub fn set_consent(
    conn: &mut PgConnection,
    user: Uuid,
    purpose: &str,
    granted: bool,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> QueryResult<bool> {
    let current: Option<bool> = consents::table
        .find((user, purpose))
        .select(consents::granted)
        .for_update()
        .first(conn)
        .optional()?;
    if current == Some(granted) {
        return Ok(false);
    }
    diesel::insert_into(consents::table)
        .values((
            consents::user_id.eq(user),
            consents::purpose.eq(purpose),
            consents::granted.eq(granted),
        ))
        .on_conflict((consents::user_id, consents::purpose))
        .do_update()
        .set((consents::granted.eq(granted), consents::changed_at.eq(now)))
        .execute(conn)?;
    diesel::insert_into(consent_events::table)
        .values((
            consent_events::id.eq(Uuid::now_v7()),
            consent_events::user_id.eq(user),
            consent_events::purpose.eq(purpose),
            consent_events::granted.eq(granted),
            consent_events::ip.eq(ip),
            consent_events::user_agent.eq(user_agent),
        ))
        .execute(conn)?;
    Ok(true)
}

pub fn delete_consents(conn: &mut PgConnection, user: Uuid) -> QueryResult<usize> {
    let events = diesel::delete(consent_events::table.filter(consent_events::user_id.eq(user)))
        .execute(conn)?;
    let current =
        diesel::delete(consents::table.filter(consents::user_id.eq(user))).execute(conn)?;
    Ok(events + current)
}

// ---- exports

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = exports, check_for_backend(Pg))]
pub struct ExportRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub state: String,
    pub object_key: String,
    pub size_bytes: Option<i64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub fn insert_export(
    conn: &mut PgConnection,
    id: Uuid,
    user: Uuid,
    key: &str,
) -> QueryResult<ExportRow> {
    diesel::insert_into(exports::table)
        .values((
            exports::id.eq(id),
            exports::user_id.eq(user),
            exports::object_key.eq(key),
        ))
        .returning(ExportRow::as_returning())
        .get_result(conn)
}

pub fn find_export(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<ExportRow>> {
    exports::table
        .find(id)
        .select(ExportRow::as_select())
        .first(conn)
        .optional()
}

/// The user's newest export, locked (so two requests at once cannot both start one).
pub fn latest_export_locked(conn: &mut PgConnection, user: Uuid) -> QueryResult<Option<ExportRow>> {
    exports::table
        .filter(exports::user_id.eq(user))
        .order(exports::created_at.desc())
        .select(ExportRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn exports_of(conn: &mut PgConnection, user: Uuid) -> QueryResult<Vec<ExportRow>> {
    exports::table
        .filter(exports::user_id.eq(user))
        .order(exports::created_at)
        .select(ExportRow::as_select())
        .load(conn)
}

/// `user`'s latest `limit` exports, newest first.
pub fn recent_exports(
    conn: &mut PgConnection,
    user: Uuid,
    limit: i64,
) -> QueryResult<Vec<ExportRow>> {
    exports::table
        .filter(exports::user_id.eq(user))
        .order(exports::created_at.desc())
        .limit(limit)
        .select(ExportRow::as_select())
        .load(conn)
}

pub fn start_export(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(exports::table.find(id))
        .filter(exports::state.eq_any(["queued", "running"]))
        .set((exports::state.eq("running"), exports::started_at.eq(now)))
        .execute(conn)
}

/// Marks the export ready; false when it was not running (done by an earlier attempt).
pub fn finish_export(
    conn: &mut PgConnection,
    id: Uuid,
    size: i64,
    expires_at: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::update(exports::table.find(id))
        .filter(exports::state.eq("running"))
        .set((
            exports::state.eq("ready"),
            exports::size_bytes.eq(size),
            exports::completed_at.eq(now),
            exports::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|n| n > 0)
}

pub fn fail_export(conn: &mut PgConnection, id: Uuid, error: &str) -> QueryResult<usize> {
    diesel::update(exports::table.find(id))
        .filter(exports::state.eq_any(["queued", "running"]))
        .set((
            exports::state.eq("failed"),
            exports::error.eq(error),
            exports::completed_at.eq(now),
        ))
        .execute(conn)
}

/// Ready exports whose time is up.
pub fn expired_exports(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<ExportRow>> {
    exports::table
        .filter(exports::state.eq("ready"))
        .filter(exports::expires_at.le(now))
        .order(exports::expires_at)
        .limit(limit)
        .select(ExportRow::as_select())
        .load(conn)
}

pub fn mark_expired(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(exports::table.find(id))
        .filter(exports::state.eq("ready"))
        .set(exports::state.eq("expired"))
        .execute(conn)
}

pub fn delete_exports(conn: &mut PgConnection, user: Uuid) -> QueryResult<usize> {
    diesel::delete(exports::table.filter(exports::user_id.eq(user))).execute(conn)
}

// ---- erasures

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = erasures, check_for_backend(Pg))]
pub struct ErasureRow {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub pseudonym: Uuid,
    pub state: String,
    pub scheduled_for: DateTime<Utc>,
}

/// Schedules the user's erasure, or returns the one already scheduled or running.
pub fn schedule_erasure(
    conn: &mut PgConnection,
    user: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<ErasureRow> {
    diesel::insert_into(erasures::table)
        .values((
            erasures::id.eq(Uuid::now_v7()),
            erasures::user_id.eq(user),
            erasures::pseudonym.eq(Uuid::new_v4()),
            erasures::state.eq("scheduled"),
            erasures::scheduled_for.eq(at),
        ))
        .on_conflict(erasures::user_id)
        .do_nothing()
        .execute(conn)?;
    erasures::table
        .filter(erasures::user_id.eq(user))
        .select(ErasureRow::as_select())
        .first(conn)
}

/// Makes erasure `id` due now (one a restored backup held scheduled for later).
pub fn bring_forward(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(erasures::table.find(id))
        .filter(erasures::scheduled_for.gt(now))
        .set(erasures::scheduled_for.eq(now))
        .execute(conn)
}

pub fn find_erasure(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<ErasureRow>> {
    erasures::table
        .find(id)
        .select(ErasureRow::as_select())
        .first(conn)
        .optional()
}

pub fn erasure_of_locked(conn: &mut PgConnection, user: Uuid) -> QueryResult<Option<ErasureRow>> {
    erasures::table
        .filter(erasures::user_id.eq(user))
        .select(ErasureRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// A restore: the scheduled erasure is called off (its row goes: nothing happened).
pub fn cancel_erasure(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(
        erasures::table
            .find(id)
            .filter(erasures::state.eq("scheduled")),
    )
    .execute(conn)
}

/// Starts (or resumes) the erasure; `None` when it is gone (restored) or done.
pub fn start_erasure(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<ErasureRow>> {
    diesel::update(erasures::table.find(id))
        .filter(erasures::state.ne("done"))
        .filter(erasures::user_id.is_not_null())
        .set((
            erasures::state.eq("running"),
            erasures::started_at.eq(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
            >("coalesce(started_at, now())")),
        ))
        .returning(ErasureRow::as_returning())
        .get_result(conn)
        .optional()
}

pub fn erasure_step_done(conn: &mut PgConnection, id: Uuid, step: &str) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE privacy.erasures SET steps = array_append(steps, $2) \
         WHERE id = $1 AND NOT ($2 = ANY(steps))",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<diesel::sql_types::Text, _>(step)
    .execute(conn)
}

/// The end: the account's id enters the erasure ledger, the marker goes, the record stays.
/// One transaction.
pub fn finish_erasure(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    conn.transaction(|conn| {
        diesel::sql_query(
            "INSERT INTO privacy_ledger.erased_accounts (user_id) \
             SELECT user_id FROM privacy.erasures \
             WHERE id = $1 AND state = 'running' AND user_id IS NOT NULL \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .execute(conn)?;
        diesel::update(erasures::table.find(id))
            .filter(erasures::state.eq("running"))
            .set((
                erasures::state.eq("done"),
                erasures::user_id.eq(None::<Uuid>),
                erasures::completed_at.eq(now),
            ))
            .execute(conn)
    })
}

/// The erasure ledger, oldest first: every account ever erased here.
pub fn erased_accounts(conn: &mut PgConnection) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Erased {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        user_id: Uuid,
    }
    let rows: Vec<Erased> = diesel::sql_query(
        "SELECT user_id FROM privacy_ledger.erased_accounts ORDER BY erased_at, user_id",
    )
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.user_id).collect())
}

/// Erasures due by now that have not ended (the daily catch-up).
pub fn due_erasures(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<ErasureRow>> {
    erasures::table
        .filter(erasures::state.ne("done"))
        .filter(erasures::scheduled_for.le(now))
        .order(erasures::scheduled_for)
        .limit(limit)
        .select(ErasureRow::as_select())
        .load(conn)
}
