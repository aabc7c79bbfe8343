//! Chat's rules: who owns what, the message tree, starting replies.

use std::sync::Arc;
use std::time::Duration;

use diesel::PgConnection;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::generation::{Ended, Engine, FirstText, Job};
use super::metrics::ChatMetrics;
use super::prompt::{self, Turn};
use super::store::{
    self, ConversationChanges, ConversationRow, MessageRow, NewConversation, NewMessage, NewTurn,
    TurnMessage,
};
use super::views::{ConversationView, MessageView, SummaryView};
use super::warm::{self, Warm};
use crate::config::LlmSettings;
use crate::modules::billing::{Allowance, QuotaExceeded};
use crate::modules::catalog::{CharacterDirectory, Persona};
use crate::modules::identity::People;
use crate::platform::db::{Db, DbError};
use crate::platform::http::{AppError, ErrorCode, FieldErrors};
use crate::platform::llm::{Request, Role, Speaker};
use crate::platform::realtime::{Realtime, Subscription};

/// A message's text: at most 32 KiB.
pub const MAX_CONTENT_BYTES: usize = 32 * 1024;
pub const MAX_TITLE: usize = 200;
pub const MAX_PAGE: i64 = 200;
/// How far up the branch a prompt looks (the context window usually ends it sooner).
const PROMPT_HISTORY: i64 = 400;
/// Siblings listed for a message (`GET …/messages/{m}/siblings`): far more swipes than anyone
/// flips through.
pub const MAX_SIBLINGS: i64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("invalid input")]
    Invalid(FieldErrors),
    #[error("message too large")]
    TooLarge,
    #[error("not found")]
    NotFound,
    /// A reply is already being written in this conversation.
    #[error("a reply is being written")]
    Busy,
    /// The conversation changed between reading it and storing the message (a switch or
    /// another message through another request); nothing was stored.
    #[error("the conversation changed meanwhile")]
    Changed,
    /// The plan's tokens for the month are spent.
    #[error("the month's token quota is spent")]
    QuotaExceeded(QuotaExceeded),
    #[error("the character is gone")]
    CharacterGone,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ChatError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

impl From<ChatError> for AppError {
    fn from(err: ChatError) -> Self {
        match err {
            ChatError::Invalid(fields) => fields.into_error(),
            ChatError::TooLarge => AppError::new(
                ErrorCode::PayloadTooLarge,
                format!("A message may be at most {MAX_CONTENT_BYTES} bytes."),
            ),
            ChatError::NotFound => AppError::not_found(),
            ChatError::Busy => AppError::conflict(
                "A reply is still being written in this conversation; wait for it or stop it.",
            ),
            ChatError::Changed => AppError::conflict(
                "The conversation changed while this message was being sent; nothing was \
                 stored, so send it again.",
            ),
            ChatError::QuotaExceeded(spent) => {
                let wait = (spent.resets_at - chrono::Utc::now()).num_seconds().max(1);
                AppError::new(
                    ErrorCode::TokenQuotaExceeded,
                    format!(
                        "Your plan's {} tokens for this month are used up; they renew on {}.",
                        spent.quota,
                        spent.resets_at.format("%B %-d, %Y at %H:%M UTC")
                    ),
                )
                .retry_after(u64::try_from(wait).unwrap_or(1))
                .with_details(serde_json::json!({
                    "quotaTokens": spent.quota,
                    "usedTokens": spent.used,
                    "resetsAt": spent.resets_at,
                }))
            }
            ChatError::CharacterGone => {
                AppError::conflict("This character is no longer available, so it cannot answer.")
            }
            ChatError::Db(err) => err.into(),
        }
    }
}

fn invalid(field: &str, problem: &str) -> ChatError {
    let mut errors = FieldErrors::new();
    errors.add(field, problem);
    ChatError::Invalid(errors)
}

/// Checks a message's text: not blank, at most 32 KiB.
pub fn check_content(content: &str) -> Result<(), ChatError> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ChatError::TooLarge);
    }
    if content.trim().is_empty() {
        return Err(invalid("content", "must not be empty"));
    }
    Ok(())
}

/// A reply that was started: its row, and how to learn when it ends.
pub struct Started {
    pub user_message: Option<MessageView>,
    pub reply: MessageView,
    pub done: watch::Receiver<Option<MessageView>>,
}

/// What a new reply hangs from, and the user message to add first, if any.
struct ReplyPlan {
    /// The message the reply answers (its parent) and its depth, `None` for a root reply.
    parent: Option<(Uuid, i32)>,
    /// A user message to insert first, under `parent`, which the reply then answers.
    user_text: Option<String>,
    /// The branch ending at `parent` as a prompt uses it ([`Service::replying_to`]).
    history: Arc<Vec<store::TurnRow>>,
    /// The conversation's revision this was read at; storing is refused if it moved.
    revision: Option<i64>,
}

/// What a reply is written with besides its branch: the character, what the user is
/// called, and what their plan allows.
struct Voice {
    persona: Arc<Persona>,
    user_name: String,
    allowance: Allowance,
}

/// Where a reply's inputs came from.
#[derive(Clone, Copy)]
enum Source {
    /// Read from the database for this message. `after_stale`: a warm attempt just found
    /// the conversation changed elsewhere.
    Read { after_stale: bool },
    /// Kept warm on this instance ([`warm`]); checked by the revision when storing, the
    /// quota asked again on the same connection just before it, and the voice read again
    /// while the reply is written. `ask_early`: ask the model before the message is
    /// stored (else after, so a conversation that moves between instances does not start
    /// model requests only to drop them).
    Warm { ask_early: bool },
}

/// A model request, asked for already or still to ask.
enum Asking {
    Early(super::generation::Upstream),
    Later(Request),
}

/// What a reply in a conversation is written with, read at once: the conversation, the
/// character, the user's name and token allowance, and what the caller read beside them.
struct Speaking<T> {
    conversation: ConversationRow,
    voice: Voice,
    more: T,
}

#[derive(Clone)]
pub struct Service {
    pub(super) db: Db,
    directory: Arc<dyn CharacterDirectory>,
    people: Arc<dyn People>,
    engine: Arc<Engine>,
    realtime: Realtime,
    llm: LlmSettings,
    metrics: ChatMetrics,
    warm: Warm,
}

impl Service {
    pub fn new(
        db: Db,
        directory: Arc<dyn CharacterDirectory>,
        people: Arc<dyn People>,
        engine: Arc<Engine>,
        realtime: Realtime,
        llm: LlmSettings,
        metrics: ChatMetrics,
    ) -> Self {
        let warm = Warm::new(llm.warm_cache_mib, Duration::from_secs(llm.warm_idle_secs));
        Self {
            db,
            directory,
            people,
            engine,
            realtime,
            llm,
            metrics,
            warm,
        }
    }

    /// What the user's plan allows a new generation; refused once the month's tokens are
    /// spent.
    async fn allowance(&self, user: Uuid) -> Result<Allowance, ChatError> {
        self.engine
            .quota()
            .allow(user)
            .await?
            .map_err(ChatError::QuotaExceeded)
    }

    /// The user's live events from now on.
    pub fn subscribe(&self, user: Uuid) -> Subscription {
        self.realtime.subscribe(user)
    }

    /// How far a reply is (for readers catching up).
    pub async fn progress(
        &self,
        conversation: Uuid,
        id: Uuid,
    ) -> Result<store::Progress, ChatError> {
        self.db
            .run(move |conn| Ok::<_, ChatError>(store::progress(conn, conversation, id)?))
            .await?
            .ok_or(ChatError::NotFound)
    }

    /// One message as the API shows it.
    pub async fn message_view(
        &self,
        conversation: Uuid,
        id: Uuid,
    ) -> Result<MessageView, ChatError> {
        self.db
            .run(move |conn| Ok::<_, ChatError>(store::placed(conn, conversation, id)?))
            .await?
            .map(MessageView::from)
            .ok_or(ChatError::NotFound)
    }

    /// A reply of `user`'s, for following it: its conversation must be theirs.
    pub async fn reply_of(
        &self,
        user: Uuid,
        conversation: Uuid,
        id: Uuid,
    ) -> Result<MessageView, ChatError> {
        self.conversation(user, conversation).await?;
        let view = self.message_view(conversation, id).await?;
        if view.role != "assistant" {
            return Err(ChatError::NotFound);
        }
        Ok(view)
    }

    /// The conversation of a reply of `user`'s, found by the reply's id alone.
    pub async fn reply_conversation(&self, user: Uuid, id: Uuid) -> Result<Uuid, ChatError> {
        self.db
            .run(move |conn| Ok::<_, ChatError>(store::reply_conversation(conn, user, id)?))
            .await?
            .ok_or(ChatError::NotFound)
    }

    /// Stops the reply being written in a conversation of `user`'s, if there is one.
    pub async fn stop_current(&self, user: Uuid, id: Uuid) -> Result<(), ChatError> {
        let conversation = self.conversation(user, id).await?;
        match conversation.generating_id {
            Some(message) => self.stop(user, id, message).await,
            None => Ok(()),
        }
    }

    pub fn metrics(&self) -> &ChatMetrics {
        &self.metrics
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    async fn persona(&self, user: Uuid, character: Uuid) -> Result<Persona, ChatError> {
        self.directory
            .persona(character, user)
            .await?
            .ok_or(ChatError::CharacterGone)
    }

    /// The user's conversation, the character answering in it, what the user is called,
    /// their token allowance, and what `also` reads once the conversation is known (while
    /// the character is read). A conversation that is missing or busy is the answer before
    /// a spent quota.
    async fn speaking<T, F, Fut>(
        &self,
        user: Uuid,
        id: Uuid,
        also: F,
    ) -> Result<Speaking<T>, ChatError>
    where
        F: FnOnce(&ConversationRow) -> Fut,
        Fut: Future<Output = Result<T, ChatError>>,
    {
        let (conversation, user_name, allowance) = futures_util::join!(
            self.conversation(user, id),
            self.user_name(user),
            self.allowance(user)
        );
        let conversation = conversation?;
        // Checked again when the reply is stored; refusing here spares the model a request.
        if conversation.generating_id.is_some() {
            return Err(ChatError::Busy);
        }
        let (user_name, allowance) = (user_name?, allowance?);
        let (persona, more) = futures_util::try_join!(
            self.persona(user, conversation.character_id),
            also(&conversation)
        )?;
        Ok(Speaking {
            conversation,
            voice: Voice {
                persona: Arc::new(persona),
                user_name,
                allowance,
            },
            more,
        })
    }

    async fn user_name(&self, user: Uuid) -> Result<String, ChatError> {
        Ok(self
            .people
            .display_name(user)
            .await?
            .unwrap_or_else(|| "User".to_owned()))
    }

    pub async fn conversation(&self, user: Uuid, id: Uuid) -> Result<ConversationRow, ChatError> {
        self.db
            .run(move |conn| Ok::<_, ChatError>(store::find_conversation(conn, id, user)?))
            .await?
            .ok_or(ChatError::NotFound)
    }

    /// Starts a conversation: the user's first message and the reply, or the character's
    /// greeting with its alternate greetings as swipes.
    pub async fn create(
        &self,
        user: Uuid,
        character: Uuid,
        initial: Option<String>,
    ) -> Result<(ConversationView, Vec<MessageView>, Option<Started>), ChatError> {
        if let Some(text) = &initial {
            check_content(text)?;
        }
        // A character the user may not see is as absent as one that does not exist.
        let persona = self
            .directory
            .persona(character, user)
            .await?
            .ok_or(ChatError::NotFound)?;
        let user_name = self.user_name(user).await?;
        let id = Uuid::now_v7();
        let title = persona.name.chars().take(MAX_TITLE).collect::<String>();
        let greetings: Vec<String> = if initial.is_some() {
            Vec::new()
        } else {
            std::iter::once(&persona.greeting)
                .chain(&persona.alternate_greetings)
                .filter(|g| !g.trim().is_empty())
                .map(|g| prompt::fill(g, &persona.name, &user_name))
                .collect()
        };
        let (name, avatar) = (persona.name.clone(), persona.avatar_url.clone());
        let messages = self
            .db
            .transaction(move |conn| {
                store::insert_conversation(
                    conn,
                    &NewConversation {
                        id,
                        user_id: user,
                        character_id: character,
                        character_name: &name,
                        character_avatar_url: avatar.as_deref(),
                        title: &title,
                    },
                )?;
                let mut first = None;
                for greeting in &greetings {
                    let row = store::insert_message(
                        conn,
                        &NewMessage {
                            id: Uuid::now_v7(),
                            conversation_id: id,
                            parent_id: None,
                            depth: 0,
                            role: "assistant",
                            content: greeting,
                        },
                    )?;
                    first.get_or_insert(row.id);
                }
                if let Some(first) = first {
                    store::set_active(conn, id, Some(first), None)?;
                    let placed = store::placed(conn, id, first)?;
                    return Ok::<_, ChatError>(placed.into_iter().collect());
                }
                Ok(Vec::new())
            })
            .await?;
        if let Err(error) = self.directory.record_conversation_started(character).await {
            tracing::warn!(%error, "could not count a new conversation");
        }
        let started = match initial {
            Some(text) => {
                let allowance = self.allowance(user).await?;
                // Nothing changed the new conversation yet (no greeting moved its leaf).
                let plan = ReplyPlan {
                    parent: None,
                    user_text: Some(text),
                    history: Arc::default(),
                    revision: Some(0),
                };
                let voice = Voice {
                    persona: Arc::new(persona),
                    user_name,
                    allowance,
                };
                let source = Source::Read { after_stale: false };
                Some(self.start_reply((user, id), voice, plan, source).await?)
            }
            None => None,
        };
        let conversation = self.conversation(user, id).await?;
        Ok((
            conversation.into(),
            messages.into_iter().map(MessageView::from).collect(),
            started,
        ))
    }

    pub async fn list(
        &self,
        user: Uuid,
        archived: bool,
        page: i64,
        size: i64,
    ) -> Result<(Vec<SummaryView>, i64), ChatError> {
        self.db
            .run(move |conn| {
                let rows = store::list_conversations(conn, user, archived, page * size, size)?;
                let total = store::count_conversations(conn, user, archived)?;
                Ok::<_, ChatError>((rows.into_iter().map(SummaryView::from).collect(), total))
            })
            .await
    }

    pub async fn update(
        &self,
        user: Uuid,
        id: Uuid,
        changes: ConversationChanges,
    ) -> Result<ConversationView, ChatError> {
        self.db
            .transaction(move |conn| {
                store::lock_conversation(conn, id, user)?.ok_or(ChatError::NotFound)?;
                store::update_conversation(conn, id, &changes)?;
                store::find_conversation(conn, id, user)?
                    .map(ConversationView::from)
                    .ok_or(ChatError::NotFound)
            })
            .await
    }

    pub async fn delete(&self, user: Uuid, id: Uuid) -> Result<(), ChatError> {
        let conversation = self.conversation(user, id).await?;
        if let Some(message) = conversation.generating_id {
            self.engine.stop_here(message);
        }
        let deleted = self
            .db
            .run(move |conn| Ok::<_, ChatError>(store::delete_conversation(conn, id, user)?))
            .await?;
        if deleted == 0 {
            return Err(ChatError::NotFound);
        }
        self.warm.forget(id);
        Ok(())
    }

    /// A page of the active branch, newest first, ending before `before` when given.
    pub async fn history(
        &self,
        user: Uuid,
        id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<(Vec<MessageView>, bool), ChatError> {
        self.db
            .run(move |conn| {
                let conversation =
                    store::find_conversation(conn, id, user)?.ok_or(ChatError::NotFound)?;
                let start = match before {
                    Some(cursor) => {
                        let cursor =
                            store::find_message(conn, id, cursor)?.ok_or(ChatError::NotFound)?;
                        cursor.parent_id
                    }
                    None => conversation.active_leaf_id,
                };
                let Some(start) = start else {
                    return Ok((Vec::new(), false));
                };
                let mut page = store::branch(conn, id, start, limit + 1)?;
                let more = page.len() as i64 > limit;
                page.truncate(usize::try_from(limit).unwrap_or(0));
                Ok::<_, ChatError>((page.into_iter().map(MessageView::from).collect(), more))
            })
            .await
    }

    /// Sends a user message under the active leaf and starts the reply: from what is kept
    /// warm of the conversation when this instance has it ([`warm`]), else from the
    /// database.
    pub async fn send(&self, user: Uuid, id: Uuid, content: String) -> Result<Started, ChatError> {
        check_content(&content)?;
        let mut after_stale = false;
        if let Some(entry) = self.warm.take(id, user) {
            let entry = Arc::unwrap_or_clone(entry);
            let plan = ReplyPlan {
                parent: Some((entry.leaf, entry.leaf_depth)),
                user_text: Some(content.clone()),
                history: entry.history,
                revision: Some(entry.revision),
            };
            let voice = Voice {
                persona: entry.persona,
                user_name: entry.user_name,
                allowance: entry.allowance,
            };
            let source = Source::Warm {
                ask_early: entry.ask_early,
            };
            match self.start_reply((user, id), voice, plan, source).await {
                // Changed through another instance (or by another request): nothing was
                // stored; the message is sent again from the database.
                Err(ChatError::Changed) => {
                    self.metrics.warm_send("stale");
                    after_stale = true;
                }
                started => {
                    self.metrics.warm_send("hit");
                    return started;
                }
            }
        } else if self.warm.enabled() {
            self.metrics.warm_send("miss");
        }
        // It answers the active leaf, read with its branch while the character is read.
        let spoken = self
            .speaking(user, id, |conversation| {
                self.replying_to(id, conversation.active_leaf_id)
            })
            .await?;
        let (parent, history) = spoken.more;
        let plan = ReplyPlan {
            parent: parent.map(|p| (p.id, p.depth)),
            user_text: Some(content),
            history: Arc::new(history),
            revision: Some(spoken.conversation.revision),
        };
        let source = Source::Read { after_stale };
        self.start_reply((user, id), spoken.voice, plan, source)
            .await
    }

    async fn message(&self, conversation: Uuid, id: Uuid) -> Result<MessageRow, ChatError> {
        self.db
            .run(move |conn| Ok::<_, ChatError>(store::find_message(conn, conversation, id)?))
            .await?
            .ok_or(ChatError::NotFound)
    }

    /// A new reply beside an assistant message (a swipe); it becomes the active one.
    pub async fn regenerate(
        &self,
        user: Uuid,
        id: Uuid,
        message: Uuid,
    ) -> Result<Started, ChatError> {
        self.redo(
            user,
            id,
            message,
            "assistant",
            "only a reply can be regenerated",
            None,
        )
        .await
    }

    /// An edited user message: a new branch from its parent, with a new reply.
    pub async fn edit(
        &self,
        user: Uuid,
        id: Uuid,
        message: Uuid,
        content: String,
    ) -> Result<Started, ChatError> {
        check_content(&content)?;
        let problem = "only your own messages can be edited";
        self.redo(user, id, message, "user", problem, Some(content))
            .await
    }

    /// A new reply (after `user_text`, if given) under the parent of `message`, which must
    /// have `role`.
    async fn redo(
        &self,
        user: Uuid,
        id: Uuid,
        message: Uuid,
        role: &str,
        problem: &str,
        user_text: Option<String>,
    ) -> Result<Started, ChatError> {
        let spoken = self
            .speaking(user, id, |_| self.message(id, message))
            .await?;
        if spoken.more.role != role {
            return Err(invalid("messageId", problem));
        }
        let (parent, history) = self.replying_to(id, spoken.more.parent_id).await?;
        let plan = ReplyPlan {
            parent: parent.map(|p| (p.id, p.depth)),
            user_text,
            history: Arc::new(history),
            revision: Some(spoken.conversation.revision),
        };
        self.warm.forget(id);
        let source = Source::Read { after_stale: false };
        self.start_reply((user, id), spoken.voice, plan, source)
            .await
    }

    /// Makes `message`'s branch the active one (a swipe left or right, or an older edit).
    pub async fn switch(
        &self,
        user: Uuid,
        id: Uuid,
        message: Uuid,
    ) -> Result<(ConversationView, Vec<MessageView>), ChatError> {
        let switched = self
            .db
            .transaction(move |conn| {
                let conversation =
                    store::lock_conversation(conn, id, user)?.ok_or(ChatError::NotFound)?;
                if conversation.generating_id.is_some() {
                    return Err(ChatError::Busy);
                }
                store::find_message(conn, id, message)?.ok_or(ChatError::NotFound)?;
                let leaf = store::newest_leaf(conn, message)?;
                store::set_active(conn, id, Some(leaf), None)?;
                let page = store::branch(conn, id, leaf, 50)?;
                let conversation =
                    store::find_conversation(conn, id, user)?.ok_or(ChatError::NotFound)?;
                Ok((
                    conversation.into(),
                    page.into_iter().map(MessageView::from).collect(),
                ))
            })
            .await?;
        self.warm.forget(id);
        Ok(switched)
    }

    /// `message` and its siblings (its swipes, or the other versions of an edited
    /// message), oldest first, each with its place among them: what a client needs to
    /// flip between them and `select` one. At most [`MAX_SIBLINGS`].
    pub async fn siblings(
        &self,
        user: Uuid,
        id: Uuid,
        message: Uuid,
    ) -> Result<Vec<MessageView>, ChatError> {
        self.conversation(user, id).await?;
        self.db
            .run(move |conn| {
                let target = store::find_message(conn, id, message)?.ok_or(ChatError::NotFound)?;
                let rows = store::sibling_rows(conn, id, target.parent_id, MAX_SIBLINGS)?;
                let count = rows.len() as i64;
                Ok::<_, ChatError>(
                    rows.into_iter()
                        .enumerate()
                        .map(|(index, row)| MessageView::new(row, count, index as i64))
                        .collect::<Vec<_>>(),
                )
            })
            .await
    }

    /// Continues a reply: the model writes on after its current end.
    pub async fn continue_reply(
        &self,
        user: Uuid,
        id: Uuid,
        message: Uuid,
    ) -> Result<Started, ChatError> {
        let spoken = self
            .speaking(user, id, |_| self.replying_to(id, Some(message)))
            .await?;
        let (reply, history) = spoken.more;
        let is_reply = reply.is_some_and(|reply| reply.role == "assistant");
        if !is_reply || spoken.conversation.active_leaf_id != Some(message) {
            return Err(invalid(
                "messageId",
                "only the last reply of the active branch can be continued",
            ));
        }
        let voice = &spoken.voice;
        let (request, prompt, prompt_tokens) = self.request(
            &history,
            None,
            (&voice.persona, &voice.user_name),
            message,
            voice.allowance,
        );
        self.warm.forget(id);
        let progress = self.progress(id, message).await?;
        // The model starts while the row is stored; if storing fails, dropping the answer
        // cancels it.
        let upstream = self.engine.ask(request);
        let model = self.engine.model_name().to_owned();
        let row = self
            .db
            .transaction(move |conn| {
                let conversation =
                    store::lock_conversation(conn, id, user)?.ok_or(ChatError::NotFound)?;
                if conversation.generating_id.is_some() {
                    return Err(ChatError::Busy);
                }
                let row = store::restart_reply(conn, message, &model, &prompt.to_json())?;
                store::set_active(conn, id, Some(message), Some(message))?;
                Ok(store::placed(conn, id, row.id)?.map(MessageView::from))
            })
            .await?
            .ok_or(ChatError::NotFound)?;
        let done = self.engine.start(Job {
            user,
            conversation: id,
            message,
            upstream,
            prefix: progress.content,
            seq: progress.seq,
            piece_ends: progress.piece_ends,
            announce: vec![row.clone()],
            prompt: None,
            prompt_tokens,
            first_text: None,
            ended: None,
        });
        Ok(Started {
            user_message: None,
            reply: row,
            done,
        })
    }

    /// Deletes a message and everything under it. If that was on the active branch, the
    /// branch moves to a remaining sibling, or back to the parent.
    pub async fn delete_message(
        &self,
        user: Uuid,
        id: Uuid,
        message: Uuid,
    ) -> Result<(), ChatError> {
        self.db
            .transaction(move |conn| {
                let conversation =
                    store::lock_conversation(conn, id, user)?.ok_or(ChatError::NotFound)?;
                if conversation.generating_id.is_some() {
                    return Err(ChatError::Busy);
                }
                let target = store::find_message(conn, id, message)?.ok_or(ChatError::NotFound)?;
                let on_active = match conversation.active_leaf_id {
                    Some(leaf) => on_branch(conn, id, leaf, &target)?,
                    None => false,
                };
                store::delete_message(conn, id, message)?;
                if on_active {
                    let remaining = store::siblings(conn, id, target.parent_id)?;
                    let leaf = match remaining.last() {
                        Some(sibling) => Some(store::newest_leaf(conn, *sibling)?),
                        None => target.parent_id,
                    };
                    store::set_active(conn, id, leaf, None)?;
                }
                Ok::<_, ChatError>(())
            })
            .await?;
        self.warm.forget(id);
        Ok(())
    }

    /// Asks a streaming reply to stop, wherever it runs.
    pub async fn stop(&self, user: Uuid, id: Uuid, message: Uuid) -> Result<(), ChatError> {
        self.conversation(user, id).await?;
        let asked = self
            .db
            .run(move |conn| Ok::<_, ChatError>(store::request_stop(conn, id, message)?))
            .await?;
        if asked == 0 {
            // Not streaming (any more), or not in this conversation.
            self.message(id, message).await?;
        }
        self.engine.stop_here(message);
        Ok(())
    }

    /// Exactly what was sent to the model for a reply.
    pub async fn prompt(&self, user: Uuid, id: Uuid, message: Uuid) -> Result<Value, ChatError> {
        self.conversation(user, id).await?;
        self.db
            .run(move |conn| Ok::<_, ChatError>(store::message_prompt(conn, id, message)?))
            .await?
            .flatten()
            .ok_or(ChatError::NotFound)
    }

    /// Most characters of history a prompt reads: the model's window less its reply, at 4
    /// characters a token. The plan's context is often smaller; the prompt is cut to it.
    fn history_chars(&self) -> i64 {
        i64::from(self.llm.context_tokens.saturating_sub(self.llm.max_tokens)) * 4
    }

    /// The message `leaf` and the branch ending at it as far back as a prompt can use,
    /// read together (nothing for a root reply).
    async fn replying_to(
        &self,
        id: Uuid,
        leaf: Option<Uuid>,
    ) -> Result<(Option<MessageRow>, Vec<store::TurnRow>), ChatError> {
        let Some(leaf) = leaf else {
            return Ok((None, Vec::new()));
        };
        let max_chars = self.history_chars();
        self.db
            .run(move |conn| {
                let message = store::find_message(conn, id, leaf)?.ok_or(ChatError::NotFound)?;
                let branch = store::turns(conn, id, leaf, PROMPT_HISTORY, max_chars)?;
                Ok::<_, ChatError>((Some(message), branch))
            })
            .await
    }

    /// The model request for a reply to `branch` (newest first, as [`Self::replying_to`]
    /// reads it) followed by `user_text` when a user message is being sent with it, and the
    /// prompt as stored.
    fn request(
        &self,
        branch: &[store::TurnRow],
        user_text: Option<&str>,
        (persona, user_name): (&Persona, &str),
        seed_from: Uuid,
        allowance: Allowance,
    ) -> (Request, prompt::Prompt, u32) {
        // The plan's context, within the model's window.
        let context_tokens = allowance.context_tokens.min(self.llm.context_tokens);
        let mut history: Vec<Turn> = branch
            .iter()
            .rev()
            .filter(|turn| {
                !(turn.message.role == Role::Assistant && turn.message.content.is_empty())
            })
            .map(|turn| Turn::counted(turn.message.clone(), turn.chars))
            .collect();
        if let Some(text) = user_text {
            history.push(Turn::new(Role::User, text));
        }
        let built = prompt::build(&prompt::Input {
            persona,
            user_name,
            history: &history,
            context_tokens,
            max_tokens: self.llm.max_tokens,
        });
        let estimated = built.estimated_tokens;
        let request = Request {
            // Shared with the prompt, which is serialized when it is stored.
            messages: built.messages.clone(),
            max_tokens: self.llm.max_tokens,
            temperature: self.llm.temperature,
            stop: Vec::new(),
            seed: seed(seed_from),
            speaker: Some(Speaker {
                name: persona.name.clone(),
                user_name: user_name.to_owned(),
                greeting: prompt::fill(&persona.greeting, &persona.name, user_name),
                tone: persona.tone.clone(),
                traits: persona.traits.clone(),
                interests: persona.interests.clone(),
            }),
        };
        (request, built, estimated)
    }

    /// Inserts the user message (if any) and the reply's row in one statement
    /// ([`store::start_turn`]), then hands the reply to the engine. Refused (nothing stored)
    /// while another reply is written, when the conversation's revision moved since the
    /// plan was read, or (warm) when billing's quota, asked on the same connection just
    /// before, says the month is spent. Storing starts first and runs on the blocking pool
    /// while the prompt is built and the model asked, so the first token waits for
    /// whichever of the two ends last. The prompt is serialized and stored by the engine
    /// with the reply's first progress, off the path to the first token. When the reply
    /// ends, its branch is kept warm for the next message ([`warm`]).
    async fn start_reply(
        &self,
        (user, id): (Uuid, Uuid),
        mut voice: Voice,
        plan: ReplyPlan,
        source: Source,
    ) -> Result<Started, ChatError> {
        let user_message_id = plan.user_text.as_ref().map(|_| Uuid::now_v7());
        let reply_id = Uuid::now_v7();
        let model = self.engine.model_name().to_owned();
        let (parent_id, first_depth) = match plan.parent {
            Some((parent, depth)) => (Some(parent), depth + 1),
            None => (None, 0),
        };
        let reply_depth = first_depth + i32::from(user_message_id.is_some());
        let user_text = plan.user_text.clone();
        let revision = plan.revision;
        let warm = matches!(source, Source::Warm { .. });
        // A warm message asks billing again (the quota is never taken from memory), on the
        // connection that then stores the turn: one trip to the database, nothing stored
        // when the month is spent. The cold path asked while it read the conversation.
        let quota = warm.then(|| self.engine.quota().clone());
        let (name, avatar) = (voice.persona.name.clone(), voice.persona.avatar_url.clone());
        let storing = self.db.run(move |conn| {
            let allowed = match quota {
                Some(quota) => Some(
                    quota
                        .allow_on(conn, user)?
                        .map_err(ChatError::QuotaExceeded)?,
                ),
                None => None,
            };
            let mut messages = Vec::with_capacity(2);
            let (mut parent, mut depth) = (parent_id, first_depth);
            if let (Some(message_id), Some(text)) = (user_message_id, &user_text) {
                messages.push(TurnMessage {
                    id: message_id,
                    parent_id: parent,
                    depth,
                    role: "user",
                    content: text,
                });
                parent = Some(message_id);
                depth += 1;
            }
            messages.push(TurnMessage {
                id: reply_id,
                parent_id: parent,
                depth,
                role: "assistant",
                content: "",
            });
            let placed = store::start_turn(
                conn,
                &NewTurn {
                    conversation: id,
                    user,
                    messages: &messages,
                    model: &model,
                    character_name: &name,
                    character_avatar_url: avatar.as_deref(),
                    revision,
                },
            )?;
            if placed.is_empty() {
                // A warm plan is simply read again; otherwise say why.
                if warm {
                    return Err(ChatError::Changed);
                }
                return match store::find_conversation(conn, id, user)? {
                    None => Err(ChatError::NotFound),
                    Some(c) if c.generating_id.is_some() => Err(ChatError::Busy),
                    Some(_) => Err(ChatError::Changed),
                };
            }
            Ok::<_, ChatError>((placed, allowed))
        });
        // Polled once, so the turn is on its way to the database while the prompt is built
        // and the model asked: the first token waits for whichever ends last.
        let mut storing = Box::pin(storing);
        let stored_now = match storing.as_mut().now_or_never() {
            Some(Err(error)) => return Err(error),
            other => other,
        };
        // The prompt is built from the branch as it is; the user message, not stored yet,
        // is added at its end.
        let (request, stored, prompt_tokens) = self.request(
            &plan.history,
            plan.user_text.as_deref(),
            (&voice.persona, &voice.user_name),
            reply_id,
            voice.allowance,
        );
        // If storing fails (another reply began meanwhile, the conversation changed, the
        // month is spent), dropping the model's answer cancels it.
        let ask_early = match source {
            Source::Read { .. } => true,
            Source::Warm { ask_early } => ask_early,
        };
        let asking = if ask_early {
            let upstream = self.engine.ask(request);
            // Lets the request leave now, before the storing is waited on.
            tokio::task::yield_now().await;
            Asking::Early(upstream)
        } else {
            Asking::Later(request)
        };
        let (placed, allowed) = match stored_now {
            Some(done) => done?,
            None => storing.await?,
        };
        // What billing allows now is what the warm entry keeps.
        if let Some(allowed) = allowed {
            voice.allowance = allowed;
        }
        let upstream = match asking {
            Asking::Early(upstream) => upstream,
            Asking::Later(request) => self.engine.ask(request),
        };
        let mut views = placed.into_iter().map(MessageView::from);
        let reply_view = views.next().ok_or(ChatError::NotFound)?;
        let user_view = views.next();
        let (first_text, ended) = match revision {
            None => (None, None),
            Some(revision) => {
                let kept = KeptTurn {
                    conversation: id,
                    user,
                    revision: revision + 1,
                    reply: reply_id,
                    reply_depth,
                    user_text: plan.user_text,
                    history: plan.history,
                    ask_early: !matches!(source, Source::Read { after_stale: true }),
                };
                self.keep_warm(kept, voice, source)
            }
        };
        let done = self.engine.start(Job {
            user,
            conversation: id,
            message: reply_id,
            upstream,
            prefix: String::new(),
            seq: 0,
            piece_ends: Vec::new(),
            announce: user_view.iter().chain([&reply_view]).cloned().collect(),
            prompt: Some(stored),
            prompt_tokens,
            first_text,
            ended,
        });
        Ok(Started {
            user_message: user_view,
            reply: reply_view,
            done,
        })
    }

    /// What keeps a reply's branch warm when it ends: the voice as read for it, or (when it
    /// came from the warm state) with the character and the user's name read again while the
    /// reply is written, from its first token on (so the re-reads do not compete with it),
    /// and the allowance billing gave it. Nothing is kept when the character is gone or a
    /// read failed, so the next message goes the cold way and is refused as before.
    fn keep_warm(
        &self,
        kept: KeptTurn,
        voice: Voice,
        source: Source,
    ) -> (Option<FirstText>, Option<Ended>) {
        if !self.warm.enabled() {
            return (None, None);
        }
        let (fresh, first_text): (Fresh, Option<FirstText>) = match source {
            Source::Read { .. } => (Fresh::Known(voice), None),
            Source::Warm { .. } => {
                let (sender, receiver) = tokio::sync::oneshot::channel();
                let service = self.clone();
                let (user, character, allowance) = (kept.user, voice.persona.id, voice.allowance);
                let reread: FirstText = Box::new(move || {
                    tokio::spawn(async move {
                        let _ = sender.send(service.voice(user, character, allowance).await);
                    });
                });
                (Fresh::Coming(receiver), Some(reread))
            }
        };
        let (warm, max_chars) = (self.warm.clone(), self.history_chars());
        let ended: Ended = Box::new(move |reply: &MessageView| {
            // Read into the kept form here: the reply's text is copied once.
            let reply = store::TurnRow::new("assistant", &reply.content);
            Box::pin(async move {
                // A re-read that found the character gone, never started (no text came) or
                // takes too long keeps nothing.
                let voice = match fresh {
                    Fresh::Known(voice) => Some(voice),
                    Fresh::Coming(receiver) => tokio::time::timeout(REREAD_WAIT, receiver)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten(),
                };
                let Some(voice) = voice else {
                    return;
                };
                let history = warm::extended(
                    reply,
                    kept.user_text
                        .map(|text| store::TurnRow::new("user", &text)),
                    &kept.history,
                    PROMPT_HISTORY,
                    max_chars,
                );
                warm.put(
                    kept.conversation,
                    warm::Entry {
                        user: kept.user,
                        revision: kept.revision,
                        leaf: kept.reply,
                        leaf_depth: kept.reply_depth,
                        history: Arc::new(history),
                        persona: voice.persona,
                        user_name: voice.user_name,
                        allowance: voice.allowance,
                        ask_early: kept.ask_early,
                    },
                );
            })
        });
        (first_text, Some(ended))
    }

    /// The character and the user's name, read now, with `allowance`; `None` when the
    /// character is gone or a read failed.
    async fn voice(&self, user: Uuid, character: Uuid, allowance: Allowance) -> Option<Voice> {
        let (persona, user_name) = futures_util::join!(
            self.directory.persona(character, user),
            self.user_name(user)
        );
        match (persona, user_name) {
            (Ok(Some(persona)), Ok(user_name)) => Some(Voice {
                persona: Arc::new(persona),
                user_name,
                allowance,
            }),
            _ => None,
        }
    }
}

/// What a started reply's branch will be when it ends, for [`Service::keep_warm`].
struct KeptTurn {
    conversation: Uuid,
    user: Uuid,
    /// The revision the reply's turn made.
    revision: i64,
    reply: Uuid,
    reply_depth: i32,
    user_text: Option<String>,
    /// The branch the reply's turn was added to, newest first.
    history: Arc<Vec<store::TurnRow>>,
    ask_early: bool,
}

/// The voice a warm entry will hold: known (read for this reply) or being read again.
enum Fresh {
    Known(Voice),
    Coming(tokio::sync::oneshot::Receiver<Option<Voice>>),
}

/// How long a reply's end waits for the voice's re-read before keeping nothing.
const REREAD_WAIT: Duration = Duration::from_secs(1);

/// Whether `target` lies on the branch ending at `leaf`.
fn on_branch(
    conn: &mut PgConnection,
    conversation: Uuid,
    leaf: Uuid,
    target: &MessageRow,
) -> Result<bool, ChatError> {
    let leaf_row = store::find_message(conn, conversation, leaf)?;
    let Some(leaf_row) = leaf_row else {
        return Ok(false);
    };
    if leaf_row.depth < target.depth {
        return Ok(false);
    }
    let steps = i64::from(leaf_row.depth - target.depth) + 1;
    let path = store::branch(conn, conversation, leaf, steps)?;
    Ok(path.last().is_some_and(|p| p.message.id == target.id))
}

/// A seed from an id, so the offline engine's answer to a given reply is repeatable.
fn seed(id: Uuid) -> u64 {
    let bytes = id.as_bytes();
    let mut seed = 0u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        seed ^= u64::from_le_bytes(word);
    }
    seed
}
