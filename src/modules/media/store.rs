//! The media module's queries.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::objects;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = objects)]
pub struct MediaRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub character_id: Option<Uuid>,
    pub is_public: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = objects)]
pub struct NewMedia<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: &'a str,
    pub content_type: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub character_id: Option<Uuid>,
}

pub fn insert(conn: &mut PgConnection, new: &NewMedia<'_>) -> QueryResult<MediaRow> {
    diesel::insert_into(objects::table)
        .values(new)
        .returning(MediaRow::as_returning())
        .get_result(conn)
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
