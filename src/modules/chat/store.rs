//! Queries on the `chat` tables. Only this module's service calls them.

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use serde_json::Value;
use uuid::Uuid;

use super::schema::{conversations, messages};
use crate::platform::db::Prepared;
use crate::platform::llm::{Message, Role};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = conversations, check_for_backend(Pg))]
pub struct ConversationRow {
    pub id: Uuid,
    pub character_id: Uuid,
    pub character_name: String,
    pub character_avatar_url: Option<String>,
    pub title: String,
    pub active_leaf_id: Option<Uuid>,
    pub pinned: bool,
    pub archived: bool,
    pub generating_id: Option<Uuid>,
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Counts the changes to what the next prompt is built from (see `warm`).
    pub revision: i64,
}

#[derive(Insertable)]
#[diesel(table_name = conversations)]
pub struct NewConversation<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub character_id: Uuid,
    pub character_name: &'a str,
    pub character_avatar_url: Option<&'a str>,
    pub title: &'a str,
}

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = messages, check_for_backend(Pg))]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub depth: i32,
    pub role: String,
    pub content: String,
    pub status: String,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub seq: i32,
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A finished message (a greeting); replies are inserted by [`start_turn`].
#[derive(Insertable)]
#[diesel(table_name = messages)]
pub struct NewMessage<'a> {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub depth: i32,
    pub role: &'a str,
    pub content: &'a str,
}

/// A message with its place among its siblings (its swipes).
#[derive(Debug, Clone, QueryableByName)]
pub struct PlacedMessage {
    #[diesel(embed)]
    pub message: MessageRow,
    #[diesel(sql_type = BigInt)]
    pub sibling_count: i64,
    #[diesel(sql_type = BigInt)]
    pub sibling_index: i64,
}

/// The columns of [`MessageRow`], for raw SQL (`m.` prefixed).
const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.parent_id, m.depth, m.role, m.content, \
    m.status, m.failure_code, m.failure_message, m.seq, m.model, m.prompt_tokens, \
    m.completion_tokens, m.created_at, m.updated_at";

/// Whether message `x` is a sibling of message `m` (or `m` itself), on the index
/// `messages_sibling_key_idx`: the same parent, or both roots of the same conversation. A
/// parent is a message and a root's key is its conversation; ids are UUIDv7 made here, so a
/// message id never equals a conversation id. The condition names no column of another
/// index, so the count's plan is this index range whatever the statistics say.
const SIBLINGS: &str =
    "coalesce(x.parent_id, x.conversation_id) = coalesce(m.parent_id, m.conversation_id)";

/// The sibling count and index of each stored message `m` of a query, as `s`.
fn sibling_place() -> String {
    format!(
        "LATERAL ( \
           SELECT count(*) AS sibling_count, count(*) FILTER (WHERE x.id < m.id) AS sibling_index \
           FROM chat.messages x WHERE {SIBLINGS} \
         ) s"
    )
}

pub fn insert_conversation(conn: &mut PgConnection, new: &NewConversation<'_>) -> QueryResult<()> {
    diesel::insert_into(conversations::table)
        .values(new)
        .execute(conn)
        .map(|_| ())
}

pub fn insert_message(conn: &mut PgConnection, new: &NewMessage<'_>) -> QueryResult<MessageRow> {
    diesel::insert_into(messages::table)
        .values(new)
        .returning(MessageRow::as_returning())
        .get_result(conn)
}

/// The conversation if it is `user`'s.
pub fn find_conversation(
    conn: &mut PgConnection,
    id: Uuid,
    user: Uuid,
) -> QueryResult<Option<ConversationRow>> {
    conversations::table
        .find(id)
        .filter(conversations::user_id.eq(user))
        .select(ConversationRow::as_select())
        .first(conn)
        .optional()
}

/// Like [`find_conversation`], locking the row until the transaction ends: operations that
/// move the active leaf or start a reply queue up behind each other.
pub fn lock_conversation(
    conn: &mut PgConnection,
    id: Uuid,
    user: Uuid,
) -> QueryResult<Option<ConversationRow>> {
    conversations::table
        .find(id)
        .filter(conversations::user_id.eq(user))
        .select(ConversationRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// A row of the conversation list.
#[derive(Debug, Clone, QueryableByName)]
pub struct Summary {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub title: String,
    #[diesel(sql_type = SqlUuid)]
    pub character_id: Uuid,
    #[diesel(sql_type = Text)]
    pub character_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub character_avatar_url: Option<String>,
    #[diesel(sql_type = Bool)]
    pub pinned: bool,
    #[diesel(sql_type = Bool)]
    pub archived: bool,
    #[diesel(sql_type = Timestamptz)]
    pub last_message_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Int4)]
    pub message_count: i32,
    #[diesel(sql_type = Text)]
    pub preview: String,
}

/// One page of `user`'s conversations with everything a list shows, in one query: the
/// active leaf's depth is the branch's message count, its text the preview.
pub fn list_conversations(
    conn: &mut PgConnection,
    user: Uuid,
    archived: bool,
    offset: i64,
    limit: i64,
) -> QueryResult<Vec<Summary>> {
    Prepared(
        diesel::sql_query(
            "SELECT c.id, c.title, c.character_id, c.character_name, c.character_avatar_url, \
                c.pinned, c.archived, c.last_message_at, c.created_at, \
                coalesce(m.depth + 1, 0) AS message_count, \
                coalesce(left(m.content, 140), '') AS preview \
         FROM chat.conversations c \
         LEFT JOIN chat.messages m ON m.id = c.active_leaf_id \
         WHERE c.user_id = $1 AND c.archived = $2 \
         ORDER BY c.pinned DESC, c.last_message_at DESC, c.id \
         LIMIT $3 OFFSET $4",
        )
        .bind::<SqlUuid, _>(user)
        .bind::<Bool, _>(archived)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(offset),
    )
    .load(conn)
}

pub fn count_conversations(
    conn: &mut PgConnection,
    user: Uuid,
    archived: bool,
) -> QueryResult<i64> {
    conversations::table
        .filter(conversations::user_id.eq(user))
        .filter(conversations::archived.eq(archived))
        .count()
        .get_result(conn)
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = conversations)]
pub struct ConversationChanges {
    pub title: Option<String>,
    pub pinned: Option<bool>,
    pub archived: Option<bool>,
}

pub fn update_conversation(
    conn: &mut PgConnection,
    id: Uuid,
    changes: &ConversationChanges,
) -> QueryResult<usize> {
    diesel::update(conversations::table.find(id))
        .set((changes, conversations::updated_at.eq(now)))
        .execute(conn)
}

pub fn delete_conversation(conn: &mut PgConnection, id: Uuid, user: Uuid) -> QueryResult<usize> {
    diesel::delete(
        conversations::table
            .find(id)
            .filter(conversations::user_id.eq(user)),
    )
    .execute(conn)
}

/// Moves the active leaf (and the reply being generated, if one starts).
pub fn set_active(
    conn: &mut PgConnection,
    id: Uuid,
    leaf: Option<Uuid>,
    generating: Option<Uuid>,
) -> QueryResult<usize> {
    diesel::update(conversations::table.find(id))
        .set((
            conversations::active_leaf_id.eq(leaf),
            conversations::generating_id.eq(generating),
            conversations::last_message_at.eq(now),
            conversations::updated_at.eq(now),
            conversations::revision.eq(conversations::revision + 1),
        ))
        .execute(conn)
}

/// A message [`start_turn`] inserts.
pub struct TurnMessage<'a> {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub depth: i32,
    pub role: &'a str,
    pub content: &'a str,
}

/// What starting a reply changes in a conversation.
pub struct NewTurn<'a> {
    pub conversation: Uuid,
    pub user: Uuid,
    /// The user message (if any, first) and the reply (`streaming`, last).
    pub messages: &'a [TurnMessage<'a>],
    pub model: &'a str,
    pub character_name: &'a str,
    pub character_avatar_url: Option<&'a str>,
    /// The conversation's revision the turn was planned on: the claim fails if it moved.
    /// `None` for a conversation created by the same request.
    pub revision: Option<i64>,
}

/// Starts a reply in one statement (one round trip, its own transaction): claims the
/// conversation (only if it is `user`'s, no reply is being written and its revision is the
/// one the turn was planned on; a concurrent claim waits on the row, then finds it taken),
/// counts a new revision, inserts the messages under the claim, makes the
/// reply the active leaf and the one being generated, and refreshes the character's name
/// and avatar for the list. Answers the inserted messages newest first, each with its place
/// among its siblings (the rows that existed before, plus itself), or nothing when the
/// claim failed.
///
/// A turn is one or two messages, and the statement says so (`LIMIT 2`): PostgreSQL then
/// estimates the generic plan as it does the custom ones and, after five, stops planning
/// the statement on every call (0.16 ms of planning per send otherwise).
pub fn start_turn(conn: &mut PgConnection, turn: &NewTurn<'_>) -> QueryResult<Vec<PlacedMessage>> {
    if turn.messages.len() > 2 {
        return Err(diesel::result::Error::QueryBuilderError(
            "a turn stores at most two messages".into(),
        ));
    }
    let reply = turn.messages.last().map(|m| m.id);
    Prepared(
        diesel::sql_query(format!(
            "WITH claim AS ( \
           UPDATE chat.conversations SET active_leaf_id = $3, generating_id = $3, \
             last_message_at = now(), updated_at = now(), revision = revision + 1, \
             character_name = $10, character_avatar_url = $11 \
           WHERE id = $1 AND user_id = $2 AND generating_id IS NULL \
             AND ($12::int8 IS NULL OR revision = $12) RETURNING id \
         ), m AS ( \
           INSERT INTO chat.messages (id, conversation_id, parent_id, depth, role, content, \
             status, heartbeat_at, model) \
           SELECT v.id, claim.id, v.parent_id, v.depth, v.role, v.content, \
             CASE WHEN v.id = $3 THEN 'streaming' ELSE 'complete' END, \
             CASE WHEN v.id = $3 THEN now() END, CASE WHEN v.id = $3 THEN $9 END \
           FROM claim, (SELECT * FROM unnest($4::uuid[], $5::uuid[], $6::int[], $7::text[], \
             $8::text[]) AS u (id, parent_id, depth, role, content) LIMIT 2) AS v \
           RETURNING * \
         ) \
         SELECT {MESSAGE_COLUMNS}, s.sibling_count, s.sibling_index FROM m, LATERAL ( \
           SELECT count(*) + 1 AS sibling_count, \
             count(*) FILTER (WHERE x.id < m.id) AS sibling_index \
           FROM chat.messages x \
           WHERE {SIBLINGS} \
         ) s \
         ORDER BY m.depth DESC",
        ))
        .bind::<SqlUuid, _>(turn.conversation)
        .bind::<SqlUuid, _>(turn.user)
        .bind::<Nullable<SqlUuid>, _>(reply)
        .bind::<Array<SqlUuid>, _>(turn.messages.iter().map(|m| m.id).collect::<Vec<_>>())
        .bind::<Array<Nullable<SqlUuid>>, _>(
            turn.messages
                .iter()
                .map(|m| m.parent_id)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Int4>, _>(turn.messages.iter().map(|m| m.depth).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(turn.messages.iter().map(|m| m.role).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(turn.messages.iter().map(|m| m.content).collect::<Vec<_>>())
        .bind::<Text, _>(turn.model)
        .bind::<Text, _>(turn.character_name)
        .bind::<Nullable<Text>, _>(turn.character_avatar_url)
        .bind::<Nullable<BigInt>, _>(turn.revision),
    )
    .load(conn)
}

/// Stores what the model was sent for a reply, as JSON text (serialized once, straight from
/// the prompt, and parsed by PostgreSQL). Once per reply, so kept prepared: it returns the
/// id to run through `load` ([`Prepared`]).
pub fn set_prompt(conn: &mut PgConnection, id: Uuid, prompt: &str) -> QueryResult<usize> {
    Prepared(
        diesel::sql_query("UPDATE chat.messages SET prompt = $2::jsonb WHERE id = $1 RETURNING id")
            .bind::<SqlUuid, _>(id)
            .bind::<Text, _>(prompt),
    )
    .load::<Id>(conn)
    .map(|rows| rows.len())
}

/// Ends the generation lock when `message` held it.
pub fn release_generating(
    conn: &mut PgConnection,
    conversation: Uuid,
    message: Uuid,
) -> QueryResult<usize> {
    // Returns the id to run through `load`, so it stays prepared ([`Prepared`]).
    Prepared(
        diesel::update(
            conversations::table
                .find(conversation)
                .filter(conversations::generating_id.eq(message)),
        )
        .set((
            conversations::generating_id.eq(None::<Uuid>),
            conversations::last_message_at.eq(now),
        ))
        .returning(conversations::id),
    )
    .load::<Uuid>(conn)
    .map(|rows| rows.len())
}

pub fn find_message(
    conn: &mut PgConnection,
    conversation: Uuid,
    id: Uuid,
) -> QueryResult<Option<MessageRow>> {
    messages::table
        .find(id)
        .filter(messages::conversation_id.eq(conversation))
        .select(MessageRow::as_select())
        .first(conn)
        .optional()
}

pub fn message_prompt(
    conn: &mut PgConnection,
    conversation: Uuid,
    id: Uuid,
) -> QueryResult<Option<Option<Value>>> {
    messages::table
        .find(id)
        .filter(messages::conversation_id.eq(conversation))
        .select(messages::prompt)
        .first(conn)
        .optional()
}

/// Up to `limit` messages of the branch ending at `start`, newest first, each with its
/// sibling count and index. Each step is a primary-key lookup, and each sibling count an
/// index range: the cost follows `limit`, not the conversation's length.
pub fn branch(
    conn: &mut PgConnection,
    conversation: Uuid,
    start: Uuid,
    limit: i64,
) -> QueryResult<Vec<PlacedMessage>> {
    Prepared(
        diesel::sql_query(branch_sql())
            .bind::<SqlUuid, _>(start)
            .bind::<SqlUuid, _>(conversation)
            .bind::<BigInt, _>(limit),
    )
    .load(conn)
}

/// One message of `conversation` with its sibling count and index: what [`branch`] gives
/// for one step, read by primary key without the recursive walk (whose plan, prepared on a
/// table with no statistics yet, could scan the whole table).
pub fn placed(
    conn: &mut PgConnection,
    conversation: Uuid,
    id: Uuid,
) -> QueryResult<Option<PlacedMessage>> {
    Prepared(
        diesel::sql_query(format!(
            "SELECT {MESSAGE_COLUMNS}, s.sibling_count, s.sibling_index \
             FROM chat.messages m, {place} \
             WHERE m.id = $1 AND m.conversation_id = $2",
            place = sibling_place(),
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(conversation),
    )
    .load(conn)
    .map(|rows: Vec<PlacedMessage>| rows.into_iter().next())
}

/// The statement of [`branch`]: `$1` the newest message, `$2` the conversation, `$3` how
/// many.
fn branch_sql() -> String {
    format!(
        "WITH RECURSIVE branch AS ( \
           SELECT id, parent_id, 1 AS n FROM chat.messages \
           WHERE id = $1 AND conversation_id = $2 \
           UNION ALL \
           SELECT p.id, p.parent_id, b.n + 1 FROM chat.messages p \
           JOIN branch b ON p.id = b.parent_id WHERE b.n < $3 \
         ) \
         SELECT {MESSAGE_COLUMNS}, s.sibling_count, s.sibling_index \
         FROM branch b JOIN chat.messages m ON m.id = b.id, {place} \
         ORDER BY b.n",
        place = sibling_place(),
    )
}

/// The two statements of a first history page of `limit` messages (the conversation, then
/// its branch from `leaf`), values inlined: for `EXPLAIN` and pgbench.
pub fn history_statements(conversation: Uuid, user: Uuid, leaf: Uuid, limit: i64) -> String {
    let find = conversations::table
        .find(conversation)
        .filter(conversations::user_id.eq(user))
        .select(ConversationRow::as_select())
        .limit(1);
    let find = diesel::debug_query::<Pg, _>(&find).to_string();
    let find = find.split(" -- binds:").next().unwrap_or_default();
    let find = find
        .replace("$1", &format!("'{conversation}'"))
        .replace("$2", &format!("'{user}'"))
        .replace("$3", "1");
    // One more than the page, to learn whether there is an older page.
    let branch = branch_sql()
        .replace("$1", &format!("'{leaf}'"))
        .replace("$2", &format!("'{conversation}'"))
        .replace("$3", &(limit + 1).to_string());
    format!("{find};\n{branch};")
}

/// `parent`'s children (roots when `None`) in `conversation`, oldest first.
fn children(conversation: Uuid, parent: Option<Uuid>) -> messages::BoxedQuery<'static, Pg> {
    let query = messages::table
        .filter(messages::conversation_id.eq(conversation))
        .order(messages::id)
        .into_boxed();
    match parent {
        Some(parent) => query.filter(messages::parent_id.eq(parent)),
        None => query.filter(messages::parent_id.is_null()),
    }
}

/// The ids of `parent`'s children (roots when `None`), oldest first.
pub fn siblings(
    conn: &mut PgConnection,
    conversation: Uuid,
    parent: Option<Uuid>,
) -> QueryResult<Vec<Uuid>> {
    children(conversation, parent)
        .select(messages::id)
        .load(conn)
}

/// `parent`'s children (roots when `None`), oldest first, at most `limit`.
pub fn sibling_rows(
    conn: &mut PgConnection,
    conversation: Uuid,
    parent: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<MessageRow>> {
    children(conversation, parent)
        .select(MessageRow::as_select())
        .limit(limit)
        .load(conn)
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// The leaf reached from `from` by always following the newest child: where a branch
/// picked again (a swipe, a switch) continues.
pub fn newest_leaf(conn: &mut PgConnection, from: Uuid) -> QueryResult<Uuid> {
    let found: Vec<Id> = Prepared(
        diesel::sql_query(
            "WITH RECURSIVE down AS ( \
           SELECT $1::uuid AS id, 0 AS n \
           UNION ALL \
           SELECT (SELECT c.id FROM chat.messages c WHERE c.parent_id = d.id \
                   ORDER BY c.id DESC LIMIT 1), d.n + 1 \
           FROM down d WHERE d.id IS NOT NULL AND d.n < 100000 \
         ) SELECT id FROM down WHERE id IS NOT NULL ORDER BY n DESC LIMIT 1",
        )
        .bind::<SqlUuid, _>(from),
    )
    .load(conn)?;
    Ok(found.first().map_or(from, |f| f.id))
}

/// Stores what a streaming reply has so far; says whether a stop was asked for.
pub fn flush_reply(
    conn: &mut PgConnection,
    id: Uuid,
    content: &str,
    seq: i32,
    piece_ends: &[i32],
) -> QueryResult<bool> {
    Prepared(
        diesel::update(messages::table.find(id))
            .set((
                messages::content.eq(content),
                messages::seq.eq(seq),
                messages::piece_ends.eq(piece_ends),
                messages::heartbeat_at.eq(now),
                messages::updated_at.eq(now),
            ))
            .returning(messages::stop_requested),
    )
    .get_result(conn)
}

/// How a reply ended.
pub struct Ending<'a> {
    pub status: &'a str,
    pub content: &'a str,
    pub seq: i32,
    pub piece_ends: &'a [i32],
    pub failure: Option<(&'a str, &'a str)>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

pub fn finish_reply(
    conn: &mut PgConnection,
    id: Uuid,
    end: &Ending<'_>,
) -> QueryResult<MessageRow> {
    // Kept prepared: the text is the same for every reply (a `None` binds NULL).
    Prepared(
        diesel::update(messages::table.find(id))
            .set((
                messages::status.eq(end.status),
                messages::content.eq(end.content),
                messages::seq.eq(end.seq),
                messages::piece_ends.eq(end.piece_ends),
                messages::failure_code.eq(end.failure.map(|f| f.0)),
                messages::failure_message.eq(end.failure.map(|f| f.1)),
                messages::prompt_tokens.eq(end.prompt_tokens),
                messages::completion_tokens.eq(end.completion_tokens),
                messages::heartbeat_at.eq(None::<DateTime<Utc>>),
                messages::updated_at.eq(now),
            ))
            .returning(MessageRow::as_returning()),
    )
    .get_result(conn)
}

pub fn request_stop(conn: &mut PgConnection, conversation: Uuid, id: Uuid) -> QueryResult<usize> {
    diesel::update(
        messages::table
            .find(id)
            .filter(messages::conversation_id.eq(conversation))
            .filter(messages::status.eq("streaming")),
    )
    .set(messages::stop_requested.eq(true))
    .execute(conn)
}

/// Streaming replies whose generator has not written for `stale_secs`: their process died.
/// They end `interrupted` with what they had, and their conversations are free again.
pub fn repair_stale(conn: &mut PgConnection, stale_secs: i64) -> QueryResult<Vec<Uuid>> {
    let repaired: Vec<Id> = Prepared(
        diesel::sql_query(
            "WITH dead AS ( \
           UPDATE chat.messages SET status = 'interrupted', heartbeat_at = NULL, \
                  failure_code = 'interrupted', \
                  failure_message = 'The server stopped while this reply was being written.', \
                  updated_at = now() \
           WHERE status = 'streaming' AND heartbeat_at < now() - make_interval(secs => $1) \
           RETURNING id, conversation_id \
         ), freed AS ( \
           UPDATE chat.conversations c SET generating_id = NULL \
           FROM dead WHERE c.id = dead.conversation_id AND c.generating_id = dead.id \
         ) SELECT id FROM dead",
        )
        .bind::<BigInt, _>(stale_secs),
    )
    .load(conn)?;
    Ok(repaired.into_iter().map(|r| r.id).collect())
}

pub fn delete_message(conn: &mut PgConnection, conversation: Uuid, id: Uuid) -> QueryResult<usize> {
    diesel::delete(
        messages::table
            .find(id)
            .filter(messages::conversation_id.eq(conversation)),
    )
    .execute(conn)
}

/// A reply being continued: streaming again, with a fresh heartbeat and prompt.
pub fn restart_reply(
    conn: &mut PgConnection,
    id: Uuid,
    model: &str,
    prompt: &str,
) -> QueryResult<MessageRow> {
    set_prompt(conn, id, prompt)?;
    diesel::update(messages::table.find(id))
        .set((
            messages::status.eq("streaming"),
            messages::heartbeat_at.eq(now),
            messages::stop_requested.eq(false),
            messages::failure_code.eq(None::<String>),
            messages::failure_message.eq(None::<String>),
            messages::model.eq(model),
            messages::updated_at.eq(now),
        ))
        .returning(MessageRow::as_returning())
        .get_result(conn)
}

/// What a reader needs to resume a reply: its text, how many pieces are stored, where each
/// ends, and whether it is still being written.
#[derive(Debug, Clone, Queryable)]
pub struct Progress {
    pub content: String,
    pub seq: i32,
    pub piece_ends: Vec<i32>,
    pub status: String,
}

pub fn progress(
    conn: &mut PgConnection,
    conversation: Uuid,
    id: Uuid,
) -> QueryResult<Option<Progress>> {
    messages::table
        .find(id)
        .filter(messages::conversation_id.eq(conversation))
        .select((
            messages::content,
            messages::seq,
            messages::piece_ends,
            messages::status,
        ))
        .first(conn)
        .optional()
}

/// The conversation of `user`'s reply `id`, if the reply exists and is theirs.
pub fn reply_conversation(
    conn: &mut PgConnection,
    user: Uuid,
    id: Uuid,
) -> QueryResult<Option<Uuid>> {
    messages::table
        .inner_join(conversations::table)
        .filter(messages::id.eq(id))
        .filter(messages::role.eq("assistant"))
        .filter(conversations::user_id.eq(user))
        .select(messages::conversation_id)
        .first(conn)
        .optional()
}

/// A message of a prompt's history, as the model is sent it (a system message in the
/// history is read as the character's). The message is shared, text and JSON form, so a
/// branch kept warm grows by a message without copying or encoding the others again; its
/// length in characters is counted once.
#[derive(Debug, Clone)]
pub struct TurnRow {
    pub message: Message,
    pub chars: i64,
}

impl TurnRow {
    pub fn new(role: &str, content: &str) -> Self {
        let role = if role == "user" {
            Role::User
        } else {
            Role::Assistant
        };
        Self {
            message: Message::new(role, content),
            chars: i64::try_from(content.chars().count()).unwrap_or(i64::MAX),
        }
    }
}

/// A history message as read by the recursive walk.
#[derive(QueryableByName)]
struct TurnRead {
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    content: String,
}

/// A message as the prompt's history walk reads it: its link and its text.
#[derive(Debug, QueryableByName)]
struct Step {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    parent_id: Option<Uuid>,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    content: String,
}

/// How many messages the first range read of [`turns`] takes: enough for most prompts.
const WALK_FIRST: i64 = 128;
/// How many each later range read takes: a prompt of many short messages then needs one
/// more round trip, not several.
const WALK_MORE: i64 = 512;

/// The branch ending at `last`, newest first, only as far back as a prompt can use: at most
/// `limit` messages, stopping after the one that brings the text to `max_chars` characters.
/// Roles and texts only: a prompt needs no sibling counts.
///
/// Ids are time-ordered (v7) and a message is written after its parent, so the branch lies
/// among the conversation's messages at or below `last`, newest first. It is read as such
/// ranges ([`WALK_FIRST`] messages, then [`WALK_MORE`] at a time, on the
/// `(conversation_id, id)` index) and its
/// parent links are followed in memory; messages of other branches in the range are
/// skipped. A parent the range cannot hold (its id above its child's, as when two
/// instances' clocks disagree) is followed from there by the recursive walk, one
/// primary-key step per message, which is correct for any ids.
pub fn turns(
    conn: &mut PgConnection,
    conversation: Uuid,
    last: Uuid,
    limit: i64,
    max_chars: i64,
) -> QueryResult<Vec<TurnRow>> {
    let mut branch: Vec<TurnRow> = Vec::new();
    let mut chars: i64 = 0;
    let mut next = Some(last);
    let mut size = WALK_FIRST;
    while let Some(from) = next {
        let page: Vec<Step> = Prepared(
            diesel::sql_query(
                "SELECT id, parent_id, role, content FROM chat.messages \
                 WHERE conversation_id = $1 AND id <= $2 ORDER BY id DESC LIMIT $3",
            )
            .bind::<SqlUuid, _>(conversation)
            .bind::<SqlUuid, _>(from)
            .bind::<BigInt, _>(size),
        )
        .load(conn)?;
        let whole = i64::try_from(page.len()).unwrap_or(i64::MAX) < size;
        size = WALK_MORE;
        let oldest = page.last().map(|step| step.id);
        let mut by_id: std::collections::HashMap<Uuid, Step> =
            page.into_iter().map(|step| (step.id, step)).collect();
        while let Some(want) = next {
            let taken = i64::try_from(branch.len()).unwrap_or(i64::MAX);
            if !branch.is_empty() && (taken >= limit || chars >= max_chars) {
                return Ok(branch);
            }
            let Some(step) = by_id.remove(&want) else {
                break;
            };
            let turn = TurnRow::new(&step.role, &step.content);
            chars = chars.saturating_add(turn.chars);
            branch.push(turn);
            next = step.parent_id;
        }
        match (next, oldest) {
            // Below this range, which was full: the next range starts at it.
            (Some(want), Some(oldest)) if want < oldest && !whole => {}
            // Not where the ranges can find it: the recursive walk takes over.
            (Some(want), _) => {
                let taken = i64::try_from(branch.len()).unwrap_or(i64::MAX);
                let rest = walk(conn, conversation, want, limit - taken, max_chars - chars)?;
                branch.extend(rest);
                return Ok(branch);
            }
            (None, _) => {}
        }
    }
    Ok(branch)
}

/// The recursive form of [`turns`]: the branch ending at `last`, one primary-key step per
/// message.
fn walk(
    conn: &mut PgConnection,
    conversation: Uuid,
    last: Uuid,
    limit: i64,
    max_chars: i64,
) -> QueryResult<Vec<TurnRow>> {
    Prepared(
        diesel::sql_query(
            "WITH RECURSIVE branch AS ( \
           SELECT id, parent_id, role, content, 1 AS n, length(content)::bigint AS total \
           FROM chat.messages WHERE id = $1 AND conversation_id = $2 \
           UNION ALL \
           SELECT p.id, p.parent_id, p.role, p.content, b.n + 1, b.total + length(p.content) \
           FROM chat.messages p JOIN branch b ON p.id = b.parent_id \
           WHERE b.n < $3 AND b.total < $4 \
         ) SELECT role, content FROM branch ORDER BY n",
        )
        .bind::<SqlUuid, _>(last)
        .bind::<SqlUuid, _>(conversation)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(max_chars),
    )
    .load::<TurnRead>(conn)
    .map(|rows| {
        rows.iter()
            .map(|row| TurnRow::new(&row.role, &row.content))
            .collect()
    })
}

/// A batch of `user`'s conversations after `after`, in id order.
pub fn conversations_of(
    conn: &mut PgConnection,
    user: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ConversationRow>> {
    conversations::table
        .filter(conversations::user_id.eq(user))
        .filter(conversations::id.gt(after.unwrap_or(Uuid::nil())))
        .order(conversations::id)
        .limit(limit)
        .select(ConversationRow::as_select())
        .load(conn)
}

/// A batch of a conversation's messages after `after`, in creation (id) order.
pub fn messages_after(
    conn: &mut PgConnection,
    conversation: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<MessageRow>> {
    messages::table
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::id.gt(after.unwrap_or(Uuid::nil())))
        .order(messages::id)
        .limit(limit)
        .select(MessageRow::as_select())
        .load(conn)
}

/// Deletes the newest messages of `conversation` that lie above its newest `keep`:
/// nothing when it holds `keep` or fewer. Newest first, so a message rarely goes before
/// its replies (each would take its subtree along through the cascade). Returns how many
/// went, cascades included.
pub fn trim_conversation(
    conn: &mut PgConnection,
    conversation: Uuid,
    keep: i64,
) -> QueryResult<usize> {
    // Run by the retention job, not per request: not worth keeping prepared.
    diesel::sql_query(
        "DELETE FROM chat.messages WHERE conversation_id = $1 AND id > ( \
           SELECT id FROM chat.messages WHERE conversation_id = $1 \
           ORDER BY id DESC OFFSET $2 LIMIT 1)",
    )
    .bind::<SqlUuid, _>(conversation)
    .bind::<BigInt, _>(keep)
    .execute(conn)
}

/// Up to `limit` of `user`'s conversations.
pub fn some_conversations_of(
    conn: &mut PgConnection,
    user: Uuid,
    limit: i64,
) -> QueryResult<Vec<Uuid>> {
    conversations::table
        .filter(conversations::user_id.eq(user))
        .select(conversations::id)
        .order(conversations::id)
        .limit(limit)
        .load(conn)
}

/// Deletes conversations `ids` with their messages (by the foreign keys' cascade).
pub fn delete_conversations(conn: &mut PgConnection, ids: &[Uuid]) -> QueryResult<usize> {
    diesel::delete(conversations::table.filter(conversations::id.eq_any(ids))).execute(conn)
}

/// `users`' conversations that hold a message written before `before`: (id, whether every
/// message is that old).
pub fn aged_conversations(
    conn: &mut PgConnection,
    users: &[Uuid],
    before: DateTime<Utc>,
) -> QueryResult<Vec<(Uuid, bool)>> {
    #[derive(QueryableByName)]
    struct Aged {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Bool)]
        all_old: bool,
    }
    let rows: Vec<Aged> = diesel::sql_query(
        "SELECT c.id, c.last_message_at < $2 AS all_old FROM chat.conversations c \
         WHERE c.user_id = ANY($1) AND EXISTS ( \
             SELECT 1 FROM chat.messages m WHERE m.conversation_id = c.id AND m.created_at < $2)",
    )
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Timestamptz, _>(before)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.id, r.all_old)).collect())
}

/// Deletes a conversation whatever its owner (retention: it holds only old messages).
pub fn delete_conversation_any(conn: &mut PgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(conversations::table.find(id)).execute(conn)
}

/// Deletes a conversation's messages written before `before` and keeps the rest a valid
/// tree: a kept message whose parent goes becomes a root, its subtree's depths shift by its
/// old depth, and the prompts stored with kept replies (which copy older text) are dropped.
/// An active leaf that went is replaced by the newest message. Returns how many went.
pub fn expire_messages(
    conn: &mut PgConnection,
    conversation: Uuid,
    before: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::sql_query(
        "WITH RECURSIVE roots AS ( \
             SELECT k.id, k.depth FROM chat.messages k \
             JOIN chat.messages p ON p.id = k.parent_id \
             WHERE k.conversation_id = $1 AND k.created_at >= $2 AND p.created_at < $2), \
         tree AS ( \
             SELECT id, depth AS base FROM roots \
             UNION ALL \
             SELECT m.id, t.base FROM chat.messages m JOIN tree t ON m.parent_id = t.id) \
         UPDATE chat.messages m SET depth = m.depth - tree.base, \
             parent_id = CASE WHEN m.depth = tree.base THEN NULL ELSE m.parent_id END \
         FROM tree WHERE m.id = tree.id",
    )
    .bind::<SqlUuid, _>(conversation)
    .bind::<Timestamptz, _>(before)
    .execute(conn)?;
    diesel::update(
        messages::table
            .filter(messages::conversation_id.eq(conversation))
            .filter(messages::prompt.is_not_null()),
    )
    .set(messages::prompt.eq(None::<Value>))
    .execute(conn)?;
    let deleted = diesel::delete(
        messages::table
            .filter(messages::conversation_id.eq(conversation))
            .filter(messages::created_at.lt(before)),
    )
    .execute(conn)?;
    diesel::sql_query(
        "UPDATE chat.conversations c SET active_leaf_id = ( \
             SELECT id FROM chat.messages WHERE conversation_id = c.id ORDER BY id DESC LIMIT 1) \
         WHERE c.id = $1 AND NOT EXISTS ( \
             SELECT 1 FROM chat.messages WHERE id = c.active_leaf_id)",
    )
    .bind::<SqlUuid, _>(conversation)
    .execute(conn)?;
    if deleted > 0 {
        // The next prompt is built from less: a warm copy of the branch is out of date.
        diesel::update(conversations::table.find(conversation))
            .set(conversations::revision.eq(conversations::revision + 1))
            .execute(conn)?;
    }
    Ok(deleted)
}

pub fn count_messages(conn: &mut PgConnection, conversation: Uuid) -> QueryResult<i64> {
    messages::table
        .filter(messages::conversation_id.eq(conversation))
        .count()
        .get_result(conn)
}

/// Messages written since `since`, and replies among them that failed.
pub fn activity_since(conn: &mut PgConnection, since: DateTime<Utc>) -> QueryResult<(i64, i64)> {
    use diesel::dsl::{count_star, sql};
    messages::table
        .filter(messages::created_at.ge(since))
        .select((
            count_star(),
            sql::<BigInt>("count(*) FILTER (WHERE status = 'failed')"),
        ))
        .get_result(conn)
}
