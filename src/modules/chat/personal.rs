//! Chat's share of a person's data ([`PersonalData`]): their conversations with every
//! message of every branch, and the retention rule for old messages ([`Retention`]).

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::service::Service;
use super::store::{self, ConversationRow, MessageRow};
use crate::platform::db::{Db, DbError};
use crate::platform::personal::{
    Archive, Coverage, ItemStream, PersonalData, Retention, batched, item,
};

/// Conversations listed, or messages read, per query.
const READ_BATCH: i64 = 1000;
/// Messages deleted per statement (at most, per conversation): short transactions, few
/// statements.
const DELETE_BATCH: i64 = 5000;
/// Conversations erased together (with at most [`DELETE_BATCH`] messages each left).
const ERASE_CONVERSATIONS: i64 = 10;

fn conversation(row: &ConversationRow) -> Value {
    json!({
        "id": row.id,
        "characterId": row.character_id,
        "characterName": row.character_name,
        "title": row.title,
        "activeLeafId": row.active_leaf_id,
        "pinned": row.pinned,
        "archived": row.archived,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "lastMessageAt": row.last_message_at,
    })
}

/// A message as the archive has it (serialized straight from the row: an account can hold
/// hundreds of thousands).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    id: Uuid,
    parent_id: Option<Uuid>,
    depth: i32,
    role: &'a str,
    content: &'a str,
    status: &'a str,
    failure_code: Option<&'a str>,
    failure_message: Option<&'a str>,
    model: Option<&'a str>,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn message(row: &MessageRow) -> anyhow::Result<Box<RawValue>> {
    item(&Message {
        id: row.id,
        parent_id: row.parent_id,
        depth: row.depth,
        role: &row.role,
        content: &row.content,
        status: &row.status,
        failure_code: row.failure_code.as_deref(),
        failure_message: row.failure_message.as_deref(),
        model: row.model.as_deref(),
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A conversation's messages in creation order, read a batch at a time.
fn messages(db: Db, conversation: Uuid) -> ItemStream<'static> {
    batched(move |after| {
        let db = db.clone();
        async move {
            let rows = db
                .run(move |conn| {
                    store::messages_after(conn, conversation, after, READ_BATCH)
                        .map_err(DbError::from)
                })
                .await?;
            rows.iter().map(|r| Ok((r.id, message(r)?))).collect()
        }
    })
}

impl PersonalData for Service {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn coverage(&self) -> Coverage {
        Coverage {
            tables: &["chat.conversations", "chat.messages"],
            prefixes: &[],
        }
    }

    /// `conversations/<id>.json` for each conversation: its fields, then `messages`, every
    /// message of every branch and swipe in the order they were written, each with its
    /// `parentId` (the tree) and times. The prompts stored with replies repeat the
    /// character's definition and earlier messages, so they stay out.
    fn export<'a>(
        &'a self,
        user: Uuid,
        archive: &'a mut dyn Archive,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let mut after = None;
            loop {
                let rows = self
                    .db
                    .run(move |conn| {
                        store::conversations_of(conn, user, after, READ_BATCH)
                            .map_err(DbError::from)
                    })
                    .await?;
                let Some(last) = rows.last() else { break };
                after = Some(last.id);
                for row in &rows {
                    let path = format!("conversations/{}.json", row.id);
                    archive
                        .json_array(
                            &path,
                            conversation(row),
                            "messages",
                            messages(self.db.clone(), row.id),
                        )
                        .await?;
                }
            }
            Ok(())
        }
        .boxed()
    }

    /// A few conversations at a time: each is trimmed to its oldest [`DELETE_BATCH`]
    /// messages ([`DELETE_BATCH`] newest at a time), then they go with what is left in
    /// one statement. Every statement is its own short transaction, and each removes rows
    /// by a range of the `(conversation, id)` index, as a plain `DELETE` would.
    fn erase(&self, user: Uuid, _pseudonym: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        async move {
            loop {
                let batch = self
                    .db
                    .run(move |conn| {
                        store::some_conversations_of(conn, user, ERASE_CONVERSATIONS)
                            .map_err(DbError::from)
                    })
                    .await?;
                if batch.is_empty() {
                    return Ok(());
                }
                for &id in &batch {
                    while self
                        .db
                        .run(move |conn| {
                            store::trim_conversation(conn, id, DELETE_BATCH).map_err(DbError::from)
                        })
                        .await?
                        > 0
                    {}
                }
                self.db
                    .run(move |conn| {
                        store::delete_conversations(conn, &batch).map_err(DbError::from)
                    })
                    .await?;
            }
        }
        .boxed()
    }
}

impl Retention for Service {
    fn name(&self) -> &'static str {
        "chat"
    }

    /// A conversation whose every message is that old goes whole; in one still in use,
    /// the old messages go and the rest stays a tree (`store::expire_messages`).
    fn expire<'a>(
        &'a self,
        users: &'a [Uuid],
        before: DateTime<Utc>,
    ) -> BoxFuture<'a, anyhow::Result<u64>> {
        async move {
            let owners = users.to_vec();
            let aged = self
                .db
                .run(move |conn| {
                    store::aged_conversations(conn, &owners, before).map_err(DbError::from)
                })
                .await?;
            let mut deleted = 0u64;
            for (id, all_old) in aged {
                let count = self
                    .db
                    .transaction(move |conn| {
                        if all_old {
                            let messages = store::count_messages(conn, id)?;
                            store::delete_conversation_any(conn, id)?;
                            Ok::<_, DbError>(usize::try_from(messages).unwrap_or(0))
                        } else {
                            Ok(store::expire_messages(conn, id, before)?)
                        }
                    })
                    .await?;
                deleted += count as u64;
            }
            Ok(deleted)
        }
        .boxed()
    }
}
