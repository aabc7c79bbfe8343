//! Queries on the `catalog` tables. Only this module's service calls them.

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Uuid as SqlUuid};
use serde_json::Value;
use uuid::Uuid;

use super::rules::Draft;
use super::schema::{characters, ratings};
use crate::platform::db::contains_pattern;
use crate::platform::http::Paging;

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = characters, check_for_backend(Pg))]
pub struct CharacterRow {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    pub name: String,
    pub description: String,
    pub avatar_media_id: Option<Uuid>,
    pub category: String,
    pub traits: Vec<String>,
    pub greeting: String,
    pub tone: String,
    pub interests: Vec<String>,
    pub visibility: String,
    pub nsfw: bool,
    pub tags: Vec<String>,
    pub scenario: String,
    pub personality_summary: String,
    pub example_dialogue: String,
    pub alternate_greetings: Vec<String>,
    pub system_prompt: String,
    pub post_history_instructions: String,
    pub creator_notes: String,
    pub creator: String,
    pub character_version: String,
    pub extensions: Value,
    pub lorebook: Option<Value>,
    pub hidden_at: Option<DateTime<Utc>>,
    pub rating_count: i32,
    pub rating: f32,
    pub conversation_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns a draft writes.
#[derive(AsChangeset, Insertable)]
#[diesel(table_name = characters, treat_none_as_null = true)]
struct DraftColumns<'a> {
    name: &'a str,
    description: &'a str,
    avatar_media_id: Option<Uuid>,
    category: &'a str,
    traits: &'a [String],
    greeting: &'a str,
    tone: &'a str,
    interests: &'a [String],
    personality_summary: &'a str,
    visibility: &'a str,
    nsfw: bool,
    tags: &'a [String],
    scenario: &'a str,
    example_dialogue: &'a str,
    alternate_greetings: &'a [String],
    system_prompt: &'a str,
    post_history_instructions: &'a str,
    creator_notes: &'a str,
    creator: &'a str,
    character_version: &'a str,
    extensions: Value,
    lorebook: Option<&'a Value>,
}

impl<'a> From<&'a Draft> for DraftColumns<'a> {
    fn from(d: &'a Draft) -> Self {
        Self {
            name: &d.name,
            description: &d.description,
            avatar_media_id: d.avatar_media_id,
            category: &d.category,
            traits: &d.traits,
            greeting: &d.greeting,
            tone: &d.tone,
            interests: &d.interests,
            personality_summary: &d.personality_summary,
            visibility: d.visibility.as_str(),
            nsfw: d.nsfw,
            tags: &d.tags,
            scenario: &d.scenario,
            example_dialogue: &d.example_dialogue,
            alternate_greetings: &d.alternate_greetings,
            system_prompt: &d.system_prompt,
            post_history_instructions: &d.post_history_instructions,
            creator_notes: &d.creator_notes,
            creator: &d.creator,
            character_version: &d.character_version,
            extensions: Value::Object(d.extensions.clone()),
            lorebook: d.lorebook.as_ref(),
        }
    }
}

pub fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    owner_id: Uuid,
    draft: &Draft,
    card_extra: &Value,
) -> QueryResult<CharacterRow> {
    diesel::insert_into(characters::table)
        .values((
            characters::id.eq(id),
            characters::owner_id.eq(owner_id),
            characters::card_extra.eq(card_extra),
            DraftColumns::from(draft),
        ))
        .returning(CharacterRow::as_returning())
        .get_result(conn)
}

pub fn update(conn: &mut PgConnection, id: Uuid, draft: &Draft) -> QueryResult<CharacterRow> {
    diesel::update(characters::table.find(id))
        .set((DraftColumns::from(draft), characters::updated_at.eq(now)))
        .returning(CharacterRow::as_returning())
        .get_result(conn)
}

pub fn find(conn: &mut PgConnection, id: Uuid) -> QueryResult<Option<CharacterRow>> {
    characters::table
        .find(id)
        .select(CharacterRow::as_select())
        .first(conn)
        .optional()
}

/// What an imported card carried that we do not model (see `cards`).
pub fn card_extra(conn: &mut PgConnection, id: Uuid) -> QueryResult<Value> {
    characters::table
        .find(id)
        .select(characters::card_extra)
        .first(conn)
}

pub fn delete(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(characters::table.find(id)).execute(conn)
}

/// Hides (or shows again) a character; who did it is in the audit log.
pub fn set_hidden(
    conn: &mut PgConnection,
    id: Uuid,
    hidden: bool,
    reason: Option<&str>,
) -> QueryResult<CharacterRow> {
    let at = hidden.then(Utc::now);
    let reason = reason.filter(|_| hidden);
    // `hidden_reason` stays out of `characters`' diesel table, which is at diesel's
    // 32-column limit.
    diesel::sql_query("UPDATE catalog.characters SET hidden_reason = $1 WHERE id = $2")
        .bind::<Nullable<Text>, _>(reason)
        .bind::<SqlUuid, _>(id)
        .execute(conn)?;
    diesel::update(characters::table.find(id))
        .set((characters::hidden_at.eq(at), characters::updated_at.eq(now)))
        .returning(CharacterRow::as_returning())
        .get_result(conn)
}

/// A character in the moderation list, with why it was hidden.
pub type StaffRow = (CharacterRow, Option<String>);

/// What staff list: characters others can see (public or unlisted; private ones stay
/// their owner's), hidden ones or the others or all, newest first (hidden ones by when
/// they were hidden), with why they were hidden; and how many match.
pub fn staff_list(
    conn: &mut PgConnection,
    hidden: Option<bool>,
    search: Option<&str>,
    paging: Paging,
) -> QueryResult<(Vec<StaffRow>, i64)> {
    let filtered = || {
        let mut query = characters::table
            .filter(characters::visibility.ne("private"))
            .into_boxed();
        match hidden {
            Some(true) => query = query.filter(characters::hidden_at.is_not_null()),
            Some(false) => query = query.filter(characters::hidden_at.is_null()),
            None => {}
        }
        if let Some(search) = search {
            query = query.filter(characters::name.ilike(contains_pattern(search)));
        }
        query
    };
    let total = filtered().count().get_result(conn)?;
    let mut query = filtered();
    query = if hidden == Some(true) {
        query.order((characters::hidden_at.desc(), characters::id.desc()))
    } else {
        query.order(characters::id.desc())
    };
    let rows = query
        .offset(paging.offset())
        .limit(paging.size)
        .select((
            CharacterRow::as_select(),
            diesel::dsl::sql::<Nullable<Text>>("hidden_reason"),
        ))
        .load(conn)?;
    Ok((rows, total))
}

pub fn increment_conversations(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(characters::table.find(id))
        .set(characters::conversation_count.eq(characters::conversation_count + 1))
        .execute(conn)
}

/// Sets `user`'s stars for a character and keeps the character's sum and count exact. The
/// character row is locked first, so concurrent ratings of one character queue up.
pub fn rate(
    conn: &mut PgConnection,
    character_id: Uuid,
    user_id: Uuid,
    stars: i16,
) -> QueryResult<(f32, i32)> {
    characters::table
        .find(character_id)
        .select(characters::id)
        .for_update()
        .first::<Uuid>(conn)?;
    let previous: Option<i16> = ratings::table
        .find((character_id, user_id))
        .select(ratings::stars)
        .first(conn)
        .optional()?;
    diesel::insert_into(ratings::table)
        .values((
            ratings::character_id.eq(character_id),
            ratings::user_id.eq(user_id),
            ratings::stars.eq(stars),
        ))
        .on_conflict((ratings::character_id, ratings::user_id))
        .do_update()
        .set((ratings::stars.eq(stars), ratings::updated_at.eq(now)))
        .execute(conn)?;
    let added = i64::from(stars) - i64::from(previous.unwrap_or(0));
    let new_rater = i32::from(previous.is_none());
    diesel::update(characters::table.find(character_id))
        .set((
            characters::rating_sum.eq(characters::rating_sum + added),
            characters::rating_count.eq(characters::rating_count + new_rater),
        ))
        .returning((characters::rating, characters::rating_count))
        .get_result(conn)
}

pub fn my_rating(
    conn: &mut PgConnection,
    character_id: Uuid,
    user_id: Uuid,
) -> QueryResult<Option<i16>> {
    ratings::table
        .find((character_id, user_id))
        .select(ratings::stars)
        .first(conn)
        .optional()
}

#[derive(Debug, Clone, QueryableByName)]
pub struct CategoryCount {
    #[diesel(sql_type = Text)]
    pub slug: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Every category with the number of characters anyone may list in it.
pub fn categories_with_counts(conn: &mut PgConnection) -> QueryResult<Vec<CategoryCount>> {
    diesel::sql_query(
        "SELECT cat.slug, cat.name, cat.description, count(c.id) AS count \
         FROM catalog.categories cat \
         LEFT JOIN catalog.characters c ON c.category = cat.slug \
              AND c.visibility = 'public' AND c.hidden_at IS NULL \
         GROUP BY cat.slug ORDER BY cat.position",
    )
    .load(conn)
}

pub fn owned_ids(conn: &mut PgConnection, owner: Uuid) -> QueryResult<Vec<Uuid>> {
    characters::table
        .filter(characters::owner_id.eq(owner))
        .select(characters::id)
        .load(conn)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// One value bound into a listing query.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Uuid(Uuid),
    Int(i64),
}

/// A listing query with numbered parameters, run with its binds in order.
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    fn boxed(
        self,
    ) -> diesel::query_builder::BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
        let mut query = diesel::sql_query(self.text).into_boxed::<Pg>();
        for bind in self.binds {
            query = match bind {
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Uuid(v) => query.bind::<SqlUuid, _>(v),
                Bind::Int(v) => query.bind::<BigInt, _>(v),
            };
        }
        query
    }

    pub fn load_characters(self, conn: &mut PgConnection) -> QueryResult<Vec<CharacterRow>> {
        self.boxed().load(conn)
    }

    pub fn count(self, conn: &mut PgConnection) -> QueryResult<i64> {
        self.boxed().get_result::<Count>(conn).map(|c| c.count)
    }
}

/// Whether media `avatar` is the avatar of a character anyone may see (public, not hidden):
/// then media serves it to anyone.
pub fn avatar_is_public(conn: &mut PgConnection, avatar: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        characters::table
            .filter(characters::avatar_media_id.eq(avatar))
            .filter(characters::visibility.eq("public"))
            .filter(characters::hidden_at.is_null()),
    ))
    .get_result(conn)
}

/// Media `avatar` is gone: the characters that had it have no avatar. Answers their ids.
pub fn forget_avatar(conn: &mut PgConnection, avatar: Uuid) -> QueryResult<Vec<Uuid>> {
    diesel::update(characters::table.filter(characters::avatar_media_id.eq(avatar)))
        .set(characters::avatar_media_id.eq(None::<Uuid>))
        .returning(characters::id)
        .get_results(conn)
}

/// A batch of `owner`'s characters after `after`, in id order, with their card extras.
pub fn owned_batch(
    conn: &mut PgConnection,
    owner: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<(CharacterRow, Value)>> {
    characters::table
        .filter(characters::owner_id.eq(owner))
        .filter(characters::id.gt(after.unwrap_or(Uuid::nil())))
        .order(characters::id)
        .limit(limit)
        .select((CharacterRow::as_select(), characters::card_extra))
        .load(conn)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ratings, check_for_backend(Pg))]
pub struct RatingRow {
    pub character_id: Uuid,
    pub stars: i16,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every rating `user` gave.
pub fn ratings_by(conn: &mut PgConnection, user: Uuid) -> QueryResult<Vec<RatingRow>> {
    ratings::table
        .filter(ratings::user_id.eq(user))
        .order(ratings::created_at)
        .select(RatingRow::as_select())
        .load(conn)
}

/// Withdraws up to `limit` of `user`'s ratings, taking their stars out of the characters'
/// sums and counts; returns how many went.
pub fn withdraw_ratings(conn: &mut PgConnection, user: Uuid, limit: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "WITH gone AS ( \
             DELETE FROM catalog.ratings WHERE user_id = $1 AND character_id IN ( \
                 SELECT character_id FROM catalog.ratings WHERE user_id = $1 LIMIT $2) \
             RETURNING character_id, stars) \
         UPDATE catalog.characters c \
         SET rating_sum = c.rating_sum - g.stars, rating_count = c.rating_count - 1 \
         FROM gone g WHERE c.id = g.character_id",
    )
    .bind::<SqlUuid, _>(user)
    .bind::<BigInt, _>(limit)
    .execute(conn)
}

/// Gives `owner`'s public characters to the installation (no owner, like the starter
/// characters); returns their ids.
pub fn transfer_public(conn: &mut PgConnection, owner: Uuid) -> QueryResult<Vec<Uuid>> {
    diesel::update(
        characters::table
            .filter(characters::owner_id.eq(owner))
            .filter(characters::visibility.eq("public")),
    )
    .set((
        characters::owner_id.eq(None::<Uuid>),
        characters::updated_at.eq(now),
    ))
    .returning(characters::id)
    .get_results(conn)
}

/// Deletes up to `limit` of `owner`'s characters; returns their ids.
pub fn delete_owned(conn: &mut PgConnection, owner: Uuid, limit: i64) -> QueryResult<Vec<Uuid>> {
    let batch: Vec<Uuid> = characters::table
        .filter(characters::owner_id.eq(owner))
        .select(characters::id)
        .limit(limit)
        .load(conn)?;
    diesel::delete(characters::table.filter(characters::id.eq_any(batch)))
        .returning(characters::id)
        .get_results(conn)
}
