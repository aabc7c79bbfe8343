//! The media module's queries.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::objects;
use crate::platform::db::{Columns, DbError, Prepared, RowRead};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = objects)]
pub struct MediaRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: String,
    pub content_type: String,
    pub size: i64,
    pub character_id: Option<Uuid>,
    pub is_public: bool,
    pub created_at: DateTime<Utc>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub thumbnail: String,
    pub thumbnail_type: Option<String>,
    pub thumbnail_size: Option<i64>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = objects)]
pub struct NewMedia<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: &'a str,
    pub content_type: &'a str,
    pub size: i64,
    pub character_id: Option<Uuid>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub thumbnail: &'a str,
    pub thumbnail_type: Option<&'a str>,
    pub thumbnail_size: Option<i64>,
}

/// What an insert found when the file would not fit the owner's quota.
pub struct OverQuota {
    pub used: i64,
}

/// Inserts `new` if its owner's media, with it, stay within `quota` bytes (`None`: no
/// quota). Uploads of one owner are counted one after another (a transaction-scoped advisory
/// lock on the owner), so two at once cannot both slip under the quota.
pub fn insert_within(
    conn: &mut PgConnection,
    new: &NewMedia<'_>,
    quota: Option<i64>,
) -> QueryResult<Result<MediaRow, OverQuota>> {
    conn.transaction(|conn| {
        if let Some(quota) = quota {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind::<diesel::sql_types::Text, _>(format!("media.quota:{}", new.owner_id))
                .execute(conn)?;
            let used = usage(conn, new.owner_id)?;
            if used.saturating_add(new.size) > quota {
                return Ok(Err(OverQuota { used }));
            }
        }
        diesel::insert_into(objects::table)
            .values(new)
            .returning(MediaRow::as_returning())
            .get_result(conn)
            .map(Ok)
    })
}

/// The bytes `owner`'s files take (thumbnails, which we make, are not counted): media's part
/// of a joint read about a user, or read alone (`Db::read_part`), on the pipelined
/// connection. Always one row.
pub const USAGE: RowRead = RowRead {
    sql: "SELECT coalesce(sum(size), 0)::bigint AS used FROM media.objects WHERE owner_id = $1",
    columns: 1,
};

/// [`USAGE`] inside an upload's transaction.
fn usage(conn: &mut PgConnection, owner: Uuid) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Used {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        used: i64,
    }
    Prepared(diesel::sql_query(USAGE.sql).bind::<diesel::sql_types::Uuid, _>(owner))
        .get_result::<Used>(conn)
        .map(|row| row.used)
}

/// The bytes [`USAGE`] read (NULL, as in a joint read without a row: none).
pub fn usage_from(used: Columns<'_>) -> Result<u64, DbError> {
    let used: Option<i64> = used.get(0)?;
    Ok(used.map_or(0, |used| u64::try_from(used).unwrap_or(0)))
}

/// One page of `owner`'s media, newest first (of one kind when `kind` is given), and how
/// many there are in all.
pub fn page_of(
    conn: &mut PgConnection,
    owner: Uuid,
    kind: Option<&str>,
    offset: i64,
    limit: i64,
) -> QueryResult<(Vec<MediaRow>, i64)> {
    let mine = || {
        let mut query = objects::table
            .filter(objects::owner_id.eq(owner))
            .into_boxed();
        if let Some(kind) = kind {
            query = query.filter(objects::kind.eq(kind));
        }
        query
    };
    let total = mine().count().get_result(conn)?;
    let rows = mine()
        .order((objects::created_at.desc(), objects::id.desc()))
        .offset(offset)
        .limit(limit)
        .select(MediaRow::as_select())
        .load(conn)?;
    Ok((rows, total))
}

/// Up to `limit` of `owner`'s media after `after` (by id), oldest first: a batch of an
/// export.
pub fn batch_of(
    conn: &mut PgConnection,
    owner: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<MediaRow>> {
    let mut query = objects::table
        .filter(objects::owner_id.eq(owner))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(objects::id.gt(after));
    }
    query
        .order(objects::id)
        .limit(limit)
        .select(MediaRow::as_select())
        .load(conn)
}

/// Deletes up to `limit` of `owner`'s rows; answers the ids deleted (an erasure's batch).
pub fn delete_batch(conn: &mut PgConnection, owner: Uuid, limit: i64) -> QueryResult<Vec<Uuid>> {
    let batch: Vec<Uuid> = objects::table
        .filter(objects::owner_id.eq(owner))
        .select(objects::id)
        .limit(limit)
        .load(conn)?;
    diesel::delete(objects::table.filter(objects::id.eq_any(&batch)))
        .returning(objects::id)
        .load(conn)
}

/// Records how `id`'s thumbnail turned out.
pub fn set_thumbnail(
    conn: &mut PgConnection,
    id: Uuid,
    state: &str,
    content_type: Option<&str>,
    size: Option<i64>,
) -> QueryResult<usize> {
    diesel::update(objects::table.find(id))
        .set((
            objects::thumbnail.eq(state),
            objects::thumbnail_type.eq(content_type),
            objects::thumbnail_size.eq(size),
        ))
        .execute(conn)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<MediaRow>> {
    objects::table
        .find(id)
        .select(MediaRow::as_select())
        .first(conn)
        .optional()
}

/// Deletes `owner`'s media `id`; answers the row that was deleted.
pub fn delete(conn: &mut PgConnection, id: Uuid, owner: Uuid) -> QueryResult<Option<MediaRow>> {
    diesel::delete(objects::table.find(id).filter(objects::owner_id.eq(owner)))
        .returning(MediaRow::as_returning())
        .get_result(conn)
        .optional()
}

/// Every owner with media (for the orphan sweep).
pub fn owners(conn: &mut PgConnection) -> QueryResult<Vec<Uuid>> {
    objects::table
        .select(objects::owner_id)
        .distinct()
        .load(conn)
}

/// `owner`'s media ids and when each row was made.
pub fn ids_of(conn: &mut PgConnection, owner: Uuid) -> QueryResult<Vec<(Uuid, DateTime<Utc>)>> {
    objects::table
        .filter(objects::owner_id.eq(owner))
        .select((objects::id, objects::created_at))
        .load(conn)
}

/// Deletes the row `id` whatever its owner (the sweep, for a row whose object vanished).
pub fn delete_any(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(objects::table.find(id)).execute(conn)
}

pub fn set_public(conn: &mut PgConnection, id: Uuid, public: bool) -> QueryResult<usize> {
    diesel::update(objects::table.find(id))
        .set(objects::is_public.eq(public))
        .execute(conn)
}
