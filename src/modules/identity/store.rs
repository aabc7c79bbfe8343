//! Every query on the identity tables. Synchronous diesel, run through `Db` by the service;
//! the account read that nearly every request makes is also here as a pipelined read
//! ([`read_user`]).

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::schema::{audit_log, email_tokens, refresh_tokens, sessions, users};
use crate::platform::db::{Columns, Db, DbError, Prepared, RowRead, contains_pattern};
use crate::platform::http::Paging;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub avatar_media_id: Option<Uuid>,
    pub bio: Option<String>,
    pub preferences: Value,
    pub role: String,
    pub experience: i64,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub deletion_scheduled_for: Option<DateTime<Utc>>,
    pub last_login_at: Option<DateTime<Utc>>,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub display_name: &'a str,
}

pub fn insert_user(conn: &mut PgConnection, user: &NewUser) -> QueryResult<UserRow> {
    diesel::insert_into(users::table)
        .values(user)
        .returning(UserRow::as_returning())
        .get_result(conn)
}

/// Notes a successful login (the admin list shows it).
pub fn touch_login(conn: &mut PgConnection, id: Uuid) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set(users::last_login_at.eq(now))
        .execute(conn)?;
    Ok(())
}

/// `SELECT` of [`UserRow`]'s columns, in its order, from the accounts, followed by `$filter`.
macro_rules! select_user {
    ($filter:literal) => {
        concat!(
            "SELECT id, email, password_hash, display_name, avatar_media_id, bio, preferences, ",
            "role, experience, email_verified_at, disabled_at, created_at, ",
            "deletion_scheduled_for, last_login_at FROM identity.users ",
            $filter
        )
    };
}

/// The account by id: identity's part of a joint read about a user (the profile), or read
/// alone (`Db::read_part`), on the pipelined connection. The columns are [`UserRow`]'s.
pub const USER_BY_ID: RowRead = RowRead {
    sql: select_user!("WHERE id = $1"),
    columns: 14,
};

/// The account outside any transaction, on the pipelined connection ([`Db::read`]).
pub async fn read_user(db: &Db, id: Uuid) -> Result<Option<UserRow>, DbError> {
    let row = db.read_part(USER_BY_ID, id).await?;
    row.as_ref()
        .map_or(Ok(None), |row| UserRow::decode(Columns::whole(row)))
}

/// The account with this (normalized) address, outside any transaction, on the pipelined
/// connection: a login's first read.
pub async fn read_user_by_email(db: &Db, email: &str) -> Result<Option<UserRow>, DbError> {
    let row = db.read(select_user!("WHERE email = $1"), &[&email]).await?;
    row.as_ref()
        .map_or(Ok(None), |row| UserRow::decode(Columns::whole(row)))
}

impl UserRow {
    /// The account [`USER_BY_ID`]'s columns hold (`None`: NULLs, no such account).
    pub fn decode(columns: Columns<'_>) -> Result<Option<Self>, DbError> {
        let Some(id) = columns.get(0)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            id,
            email: columns.get(1)?,
            password_hash: columns.get(2)?,
            display_name: columns.get(3)?,
            avatar_media_id: columns.get(4)?,
            bio: columns.get(5)?,
            preferences: columns.get(6)?,
            role: columns.get(7)?,
            experience: columns.get(8)?,
            email_verified_at: columns.get(9)?,
            disabled_at: columns.get(10)?,
            created_at: columns.get(11)?,
            deletion_scheduled_for: columns.get(12)?,
            last_login_at: columns.get(13)?,
        }))
    }
}

pub fn find_user(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<UserRow>> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()
}

pub fn find_user_by_email(conn: &mut PgConnection, email: &str) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .optional()
}

pub fn set_password(conn: &mut PgConnection, user_id: Uuid, hash: &str) -> QueryResult<usize> {
    diesel::update(users::table.find(user_id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(now)))
        .execute(conn)
}

pub fn set_email_verified(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<usize> {
    diesel::update(users::table.find(user_id))
        .filter(users::email_verified_at.is_null())
        .set(users::email_verified_at.eq(now))
        .execute(conn)
}

/// The profile fields a user may change; `None` leaves a field as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct ProfileChanges {
    pub display_name: Option<String>,
    pub bio: Option<Option<String>>,
    pub avatar_media_id: Option<Option<Uuid>>,
    pub preferences: Option<Value>,
}

/// Media `media` is gone: whoever had it as their avatar has none.
pub fn forget_avatar(conn: &mut PgConnection, media: Uuid) -> QueryResult<usize> {
    diesel::update(users::table.filter(users::avatar_media_id.eq(media)))
        .set(users::avatar_media_id.eq(None::<Uuid>))
        .execute(conn)
}

pub fn update_profile(
    conn: &mut PgConnection,
    user_id: Uuid,
    changes: &ProfileChanges,
) -> QueryResult<UserRow> {
    diesel::update(users::table.find(user_id))
        .set((changes, users::updated_at.eq(now)))
        .returning(UserRow::as_returning())
        .get_result(conn)
}

pub fn find_user_for_update(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<UserRow>> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn set_role(conn: &mut PgConnection, user_id: Uuid, role: &str) -> QueryResult<()> {
    diesel::update(users::table.find(user_id))
        .set((users::role.eq(role), users::updated_at.eq(now)))
        .execute(conn)?;
    Ok(())
}

/// Disables an account by an operator's decision (or enables it again), and ends its
/// sessions when disabling: the revoked session ids.
pub fn set_disabled(
    conn: &mut PgConnection,
    user_id: Uuid,
    disabled: bool,
) -> QueryResult<Vec<Uuid>> {
    let at = if disabled { Some(Utc::now()) } else { None };
    diesel::update(users::table.find(user_id))
        .set((users::disabled_at.eq(at), users::updated_at.eq(now)))
        .execute(conn)?;
    if disabled {
        revoke_user_sessions(conn, user_id, None, "disabled")
    } else {
        Ok(Vec::new())
    }
}

/// A page of accounts, newest first, whose email or display name contains `search`
/// (case-insensitive), and how many match.
pub fn list_users(
    conn: &mut PgConnection,
    search: Option<&str>,
    paging: Paging,
) -> QueryResult<(Vec<UserRow>, i64)> {
    let filtered = || {
        let mut query = users::table.into_boxed();
        if let Some(search) = search {
            let pattern = contains_pattern(search);
            query = query.filter(
                users::email
                    .ilike(pattern.clone())
                    .or(users::display_name.ilike(pattern)),
            );
        }
        query
    };
    let total = filtered().count().get_result(conn)?;
    let rows = filtered()
        .order(users::id.desc())
        .offset(paging.offset())
        .limit(paging.size)
        .select(UserRow::as_select())
        .load(conn)?;
    Ok((rows, total))
}

/// Accounts in all, and those with a session used in the last 24 hours.
pub fn census(conn: &mut PgConnection) -> QueryResult<(i64, i64)> {
    use diesel::dsl::count;
    let users = users::table.count().get_result(conn)?;
    let since = Utc::now() - chrono::Duration::hours(24);
    let active = sessions::table
        .filter(sessions::last_used_at.gt(since))
        .select(count(sessions::user_id).aggregate_distinct())
        .get_result(conn)?;
    Ok((users, active))
}

/// Adds `amount` atomically; returns the new total, `None` for an unknown user.
pub fn add_experience(
    conn: &mut PgConnection,
    user_id: Uuid,
    amount: i64,
) -> QueryResult<Option<i64>> {
    // Once per reply, so kept prepared (diesel prepares an UPDATE afresh by itself).
    Prepared(
        diesel::update(users::table.find(user_id))
            .set(users::experience.eq(users::experience + amount))
            .returning(users::experience),
    )
    .get_result(conn)
    .optional()
}

pub fn insert_session(
    conn: &mut PgConnection,
    id: Uuid,
    user_id: Uuid,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> QueryResult<usize> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(id),
            sessions::user_id.eq(user_id),
            sessions::ip.eq(ip),
            sessions::user_agent.eq(user_agent),
        ))
        .execute(conn)
}

/// True when the session exists, belongs to the user, is not revoked and the account is
/// not disabled.
pub async fn session_active(db: &Db, user_id: Uuid, session_id: Uuid) -> Result<bool, DbError> {
    const SQL: &str = "SELECT EXISTS (SELECT 1 FROM identity.sessions s \
        JOIN identity.users u ON u.id = s.user_id WHERE s.id = $1 AND s.user_id = $2 \
        AND s.revoked_at IS NULL AND u.disabled_at IS NULL)";
    match db.read(SQL, &[&session_id, &user_id]).await? {
        Some(row) => row.try_get(0).map_err(DbError::Read),
        None => Ok(false),
    }
}

/// Revokes one session; true when it was active.
pub fn revoke_session(
    conn: &mut PgConnection,
    session_id: Uuid,
    reason: &str,
) -> QueryResult<bool> {
    diesel::update(sessions::table.find(session_id))
        .filter(sessions::revoked_at.is_null())
        .set((
            sessions::revoked_at.eq(now),
            sessions::revoked_reason.eq(reason),
        ))
        .execute(conn)
        .map(|n| n > 0)
}

/// Revokes every active session of a user except `keep`; returns the revoked ids.
pub fn revoke_user_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> QueryResult<Vec<Uuid>> {
    diesel::update(sessions::table)
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::id.ne(keep.unwrap_or(Uuid::nil())))
        .set((
            sessions::revoked_at.eq(now),
            sessions::revoked_reason.eq(reason),
        ))
        .returning(sessions::id)
        .get_results(conn)
}

pub fn insert_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8],
    session_id: Uuid,
    expires_at: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(hash),
            refresh_tokens::session_id.eq(session_id),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
}

/// A presented refresh token with its session and user, the rows locked until commit.
#[derive(Debug, Queryable)]
pub struct RefreshLookup {
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub session_id: Uuid,
    pub session_revoked_at: Option<DateTime<Utc>>,
    pub user: UserRow,
}

pub fn find_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8],
) -> QueryResult<Option<RefreshLookup>> {
    refresh_tokens::table
        .inner_join(sessions::table.inner_join(users::table))
        .filter(refresh_tokens::token_hash.eq(hash))
        .select((
            refresh_tokens::expires_at,
            refresh_tokens::used_at,
            sessions::id,
            sessions::revoked_at,
            UserRow::as_select(),
        ))
        .for_update()
        .first(conn)
        .optional()
}

/// Marks a refresh token used; false if it already was (a concurrent rotation won).
pub fn mark_refresh_used(conn: &mut PgConnection, hash: &[u8]) -> QueryResult<bool> {
    diesel::update(refresh_tokens::table.find(hash))
        .filter(refresh_tokens::used_at.is_null())
        .set(refresh_tokens::used_at.eq(now))
        .execute(conn)
        .map(|n| n > 0)
}

pub fn touch_session(conn: &mut PgConnection, session_id: Uuid) -> QueryResult<usize> {
    diesel::update(sessions::table.find(session_id))
        .set(sessions::last_used_at.eq(now))
        .execute(conn)
}

pub fn insert_email_token(
    conn: &mut PgConnection,
    hash: &[u8],
    user_id: Uuid,
    purpose: &str,
    expires_at: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::insert_into(email_tokens::table)
        .values((
            email_tokens::token_hash.eq(hash),
            email_tokens::user_id.eq(user_id),
            email_tokens::purpose.eq(purpose),
            email_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
}

/// Uses a token once: the user it belongs to, or `None` if unknown, used or expired.
pub fn consume_email_token(
    conn: &mut PgConnection,
    hash: &[u8],
    purpose: &str,
) -> QueryResult<Option<Uuid>> {
    diesel::update(email_tokens::table.find(hash))
        .filter(email_tokens::purpose.eq(purpose))
        .filter(email_tokens::used_at.is_null())
        .filter(email_tokens::expires_at.gt(now))
        .set(email_tokens::used_at.eq(now))
        .returning(email_tokens::user_id)
        .get_result(conn)
        .optional()
}

/// Invalidates a user's other unused tokens of one purpose (a new reset link replaces the old).
pub fn expire_email_tokens(
    conn: &mut PgConnection,
    user_id: Uuid,
    purpose: &str,
) -> QueryResult<usize> {
    diesel::update(email_tokens::table)
        .filter(email_tokens::user_id.eq(user_id))
        .filter(email_tokens::purpose.eq(purpose))
        .filter(email_tokens::used_at.is_null())
        .set(email_tokens::used_at.eq(now))
        .execute(conn)
}

/// Deletes what can no longer be used: expired refresh and email tokens.
pub fn delete_expired(conn: &mut PgConnection) -> QueryResult<usize> {
    let refresh = diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.lt(now)))
        .execute(conn)?;
    let email = diesel::delete(email_tokens::table.filter(email_tokens::expires_at.lt(now)))
        .execute(conn)?;
    Ok(refresh + email)
}

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
}

/// A new session with its first refresh token, as a login writes it.
pub struct NewLogin<'a> {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub refresh_hash: &'a [u8],
    pub refresh_expires_at: DateTime<Utc>,
}

/// A login's writes in one statement: the session, its first refresh token, the account's
/// last login and the audit record. One statement is one round trip and commits (or fails)
/// as a whole without `BEGIN` and `COMMIT`, where the same writes one by one in a
/// transaction took six round trips (bench/RESULTS.md, Identity, session 36). Kept
/// prepared (its `RETURNING` lets it be loaded, which is what keeps it prepared).
pub fn record_login(
    conn: &mut PgConnection,
    login: &NewLogin<'_>,
    audit: &AuditRow,
) -> QueryResult<()> {
    use diesel::sql_types::{Bytea, Jsonb, Nullable, Text, Timestamptz};
    #[derive(QueryableByName)]
    struct Recorded {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        #[allow(dead_code)]
        id: Uuid,
    }
    Prepared(
        diesel::sql_query(
            "WITH session AS (INSERT INTO identity.sessions (id, user_id, ip, user_agent) \
             VALUES ($1, $2, $3, $4)), \
             token AS (INSERT INTO identity.refresh_tokens (token_hash, session_id, expires_at) \
             VALUES ($5, $1, $6)), \
             seen AS (UPDATE identity.users SET last_login_at = now() WHERE id = $2) \
             INSERT INTO identity.audit_log (id, occurred_at, actor_id, subject_id, action, \
             resource_type, resource_id, old_value, new_value, ip, user_agent, outcome) \
             VALUES ($7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) RETURNING id",
        )
        .bind::<diesel::sql_types::Uuid, _>(login.session_id)
        .bind::<diesel::sql_types::Uuid, _>(login.user_id)
        .bind::<Nullable<Text>, _>(login.ip)
        .bind::<Nullable<Text>, _>(login.user_agent)
        .bind::<Bytea, _>(login.refresh_hash)
        .bind::<Timestamptz, _>(login.refresh_expires_at)
        .bind::<diesel::sql_types::Uuid, _>(audit.id)
        .bind::<Timestamptz, _>(audit.occurred_at)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(audit.actor_id)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(audit.subject_id)
        .bind::<Text, _>(&audit.action)
        .bind::<Nullable<Text>, _>(&audit.resource_type)
        .bind::<Nullable<Text>, _>(&audit.resource_id)
        .bind::<Nullable<Jsonb>, _>(&audit.old_value)
        .bind::<Nullable<Jsonb>, _>(&audit.new_value)
        .bind::<Nullable<Text>, _>(&audit.ip)
        .bind::<Nullable<Text>, _>(&audit.user_agent)
        .bind::<Text, _>(&audit.outcome),
    )
    .get_result::<Recorded>(conn)
    .map(|_| ())
}

pub fn insert_audit(conn: &mut PgConnection, row: &AuditRow) -> QueryResult<usize> {
    diesel::insert_into(audit_log::table)
        .values(row)
        .execute(conn)
}

/// A page of the audit log, newest first, with the total count.
pub fn list_audit(
    conn: &mut PgConnection,
    subject: Option<Uuid>,
    action: Option<&str>,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<AuditRow>, i64)> {
    let filtered = || {
        let mut query = audit_log::table.into_boxed();
        if let Some(subject) = subject {
            query = query.filter(
                audit_log::subject_id
                    .eq(subject)
                    .or(audit_log::actor_id.eq(subject)),
            );
        }
        if let Some(action) = action {
            query = query.filter(audit_log::action.eq(action.to_owned()));
        }
        query
    };
    let total = filtered().count().get_result(conn)?;
    let rows = filtered()
        .order((audit_log::occurred_at.desc(), audit_log::id.desc()))
        .offset(offset)
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)?;
    Ok((rows, total))
}

/// Disables the account until its erasure at `erase_at`, and revokes every session;
/// returns the revoked ids (none when the account was already closed).
pub fn close_account(
    conn: &mut PgConnection,
    user_id: Uuid,
    erase_at: DateTime<Utc>,
) -> QueryResult<Vec<Uuid>> {
    diesel::update(users::table.find(user_id))
        .set((
            users::disabled_at.eq(now),
            users::deletion_scheduled_for.eq(erase_at),
            users::updated_at.eq(now),
        ))
        .execute(conn)?;
    revoke_user_sessions(conn, user_id, None, "account_deleted")
}

/// Enables an account that was waiting for its erasure; false when it was not waiting.
pub fn reopen_account(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Option<UserRow>> {
    diesel::update(users::table.find(user_id))
        .filter(users::deletion_scheduled_for.is_not_null())
        .set((
            users::disabled_at.eq(None::<DateTime<Utc>>),
            users::deletion_scheduled_for.eq(None::<DateTime<Utc>>),
            users::updated_at.eq(now),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .optional()
}

/// Accounts after `after` (by id), `limit` at a time.
pub fn users_after(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Uuid>> {
    users::table
        .filter(users::id.gt(after.unwrap_or(Uuid::nil())))
        .order(users::id)
        .limit(limit)
        .select(users::id)
        .load(conn)
}

/// Accounts whose erasure was due by now, with the time it was due.
pub fn overdue_deletions(
    conn: &mut PgConnection,
    limit: i64,
) -> QueryResult<Vec<(Uuid, DateTime<Utc>)>> {
    users::table
        .filter(users::deletion_scheduled_for.le(now))
        .order(users::deletion_scheduled_for)
        .limit(limit)
        .select((users::id, users::deletion_scheduled_for.assume_not_null()))
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct SessionRow {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Every session of a user, oldest first.
pub fn user_sessions(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<Vec<SessionRow>> {
    sessions::table
        .filter(sessions::user_id.eq(user_id))
        .order(sessions::id)
        .select(SessionRow::as_select())
        .load(conn)
}

/// A batch of the audit events about `subject`, oldest first, after `after`.
pub fn audit_of(
    conn: &mut PgConnection,
    subject: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    audit_log::table
        .filter(audit_log::subject_id.eq(subject))
        .filter(audit_log::id.gt(after.unwrap_or(Uuid::nil())))
        .order(audit_log::id)
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
}

/// Deletes up to `limit` of a user's sessions (their refresh tokens go with them); returns
/// the ids deleted.
pub fn delete_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    limit: i64,
) -> QueryResult<Vec<Uuid>> {
    let batch: Vec<Uuid> = sessions::table
        .filter(sessions::user_id.eq(user_id))
        .select(sessions::id)
        .limit(limit)
        .load(conn)?;
    diesel::delete(sessions::table.filter(sessions::id.eq_any(batch)))
        .returning(sessions::id)
        .get_results(conn)
}

pub fn delete_email_tokens(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<usize> {
    diesel::delete(email_tokens::table.filter(email_tokens::user_id.eq(user_id))).execute(conn)
}

/// Puts `pseudonym` in place of the user in up to `limit` audit events, and drops the
/// values those events recorded about the user's account (profile text, settings); the
/// action, outcome, time, address and user agent stay for security. Returns how many.
pub fn pseudonymize_audit(
    conn: &mut PgConnection,
    user_id: Uuid,
    pseudonym: Uuid,
    limit: i64,
) -> QueryResult<usize> {
    let about: Vec<Uuid> = audit_log::table
        .filter(audit_log::subject_id.eq(user_id))
        .select(audit_log::id)
        .limit(limit)
        .load(conn)?;
    let subjects = diesel::update(audit_log::table.filter(audit_log::id.eq_any(about)))
        .set((
            audit_log::subject_id.eq(pseudonym),
            audit_log::old_value.eq(None::<Value>),
            audit_log::new_value.eq(None::<Value>),
        ))
        .execute(conn)?;
    let by: Vec<Uuid> = audit_log::table
        .filter(audit_log::actor_id.eq(user_id))
        .select(audit_log::id)
        .limit(limit)
        .load(conn)?;
    let actors = diesel::update(audit_log::table.filter(audit_log::id.eq_any(by)))
        .set(audit_log::actor_id.eq(pseudonym))
        .execute(conn)?;
    Ok(subjects + actors)
}

/// Deletes the account row; true when it existed.
pub fn delete_user(conn: &mut PgConnection, user_id: Uuid) -> QueryResult<bool> {
    diesel::delete(users::table.find(user_id))
        .execute(conn)
        .map(|n| n > 0)
}
