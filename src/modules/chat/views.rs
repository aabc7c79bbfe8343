//! The JSON shapes of conversations and messages, shared by the HTTP answers and the live
//! frames.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::{ConversationRow, MessageRow, PlacedMessage, Summary};

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub code: String,
    pub message: String,
}

/// DESIGN.md's message (`id, conversationId, parentId, role, content, status, timestamp`)
/// plus its place among its swipes and, for replies, what produced it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub parent_id: Option<Uuid>,
    /// `user`, `assistant` or `system`.
    pub role: String,
    pub content: String,
    /// `complete`, `streaming`, `interrupted` or `failed`.
    pub status: String,
    pub timestamp: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many pieces of a streamed reply are stored (resume after this).
    pub seq: i32,
    pub sibling_count: i64,
    pub sibling_index: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
}

impl MessageView {
    pub fn new(row: MessageRow, sibling_count: i64, sibling_index: i64) -> Self {
        let failure = match (row.failure_code, row.failure_message) {
            (Some(code), Some(message)) => Some(Failure { code, message }),
            _ => None,
        };
        let usage = match (row.prompt_tokens, row.completion_tokens) {
            (Some(prompt_tokens), Some(completion_tokens)) => Some(UsageView {
                prompt_tokens,
                completion_tokens,
            }),
            _ => None,
        };
        Self {
            id: row.id,
            conversation_id: row.conversation_id,
            parent_id: row.parent_id,
            role: row.role,
            content: row.content,
            status: row.status,
            timestamp: row.created_at,
            updated_at: row.updated_at,
            seq: row.seq,
            sibling_count,
            sibling_index,
            failure,
            model: row.model,
            usage,
        }
    }
}

impl From<PlacedMessage> for MessageView {
    fn from(placed: PlacedMessage) -> Self {
        Self::new(placed.message, placed.sibling_count, placed.sibling_index)
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CharacterRef {
    pub id: Uuid,
    pub name: String,
    pub avatar_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub id: Uuid,
    pub title: String,
    pub character: CharacterRef,
    pub active_leaf_id: Option<Uuid>,
    pub pinned: bool,
    pub archived: bool,
    /// The reply being written now, if any.
    pub generating: Option<Uuid>,
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ConversationRow> for ConversationView {
    fn from(row: ConversationRow) -> Self {
        Self {
            id: row.id,
            title: row.title,
            character: CharacterRef {
                id: row.character_id,
                name: row.character_name,
                avatar_url: row.character_avatar_url,
            },
            active_leaf_id: row.active_leaf_id,
            pinned: row.pinned,
            archived: row.archived,
            generating: row.generating_id,
            last_message_at: row.last_message_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SummaryView {
    pub id: Uuid,
    pub title: String,
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub character: CharacterRef,
    pub message_count: i32,
    pub last_message_preview: String,
    pub pinned: bool,
    pub archived: bool,
}

impl From<Summary> for SummaryView {
    fn from(row: Summary) -> Self {
        Self {
            id: row.id,
            title: row.title,
            last_message_at: row.last_message_at,
            created_at: row.created_at,
            character: CharacterRef {
                id: row.character_id,
                name: row.character_name,
                avatar_url: row.character_avatar_url,
            },
            message_count: row.message_count,
            last_message_preview: row.preview,
            pinned: row.pinned,
            archived: row.archived,
        }
    }
}
