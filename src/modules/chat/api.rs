//! HTTP: parse, authorize, call the service, shape the answer.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::follow::{Frame, follow, follow_started};
use super::service::{MAX_PAGE, MAX_TITLE, Service, Started};
use super::store::ConversationChanges;
use super::views::{ConversationView, MessageView, SummaryView};
use crate::platform::http::{AppError, AuthUser, FieldErrors, Page, Paging, Routes, strict_body};
use crate::platform::realtime::Subscription;

pub fn routes(routes: &mut Routes) {
    const MESSAGE: &str = "/conversations/{id}/messages/{message}";
    routes
        .resource("/conversations", |r| r.get(list).post(create))
        .resource("/conversations/{id}", |r| {
            r.get(get).patch(patch).delete(delete)
        })
        .resource("/conversations/{id}/messages", |r| {
            r.get(history).post(send)
        })
        .resource(MESSAGE, |r| r.delete(delete_message))
        .resource(&format!("{MESSAGE}/regenerate"), |r| r.post(regenerate))
        .resource(&format!("{MESSAGE}/edit"), |r| r.post(edit))
        .resource(&format!("{MESSAGE}/select"), |r| r.post(select))
        .resource(&format!("{MESSAGE}/continue"), |r| r.post(continue_reply))
        .resource(&format!("{MESSAGE}/stop"), |r| r.post(stop))
        .resource(&format!("{MESSAGE}/siblings"), |r| r.get(siblings))
        .resource(&format!("{MESSAGE}/prompt"), |r| r.get(prompt))
        .resource(&format!("{MESSAGE}/stream"), |r| r.get(reattach));
}

/// Whether the client asked for Server-Sent Events.
fn wants_events(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// An SSE answer: `event: token` pieces, then `event: message` with the whole reply. The
/// reply does not depend on the stream: a client that goes away can re-attach with
/// `GET …/messages/{id}/stream?afterSeq=N`.
fn event_stream(frames: tokio::sync::mpsc::Receiver<Frame>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(sse_chunks(frames))
}

/// The most an SSE chunk gathers from frames that are ready at once.
const CHUNK_BYTES: usize = 16 * 1024;

/// The body of an SSE answer. Frames that are ready together go out as one chunk (up to
/// [`CHUNK_BYTES`]): one write, and one read for the client, which would otherwise wake once
/// per event. A reply's first frames (the user's message, then the first text when the model
/// answered before the turn was stored) usually are.
fn sse_chunks(
    frames: tokio::sync::mpsc::Receiver<Frame>,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    stream::unfold(frames, |mut frames| async move {
        let frame = frames.recv().await?;
        let mut text = String::new();
        push_event(&mut text, &frame);
        while text.len() < CHUNK_BYTES {
            let Ok(frame) = frames.try_recv() else { break };
            push_event(&mut text, &frame);
        }
        Some((Ok(Bytes::from(text)), frames))
    })
}

/// Appends `frame` as one SSE event.
fn push_event(text: &mut String, frame: &Frame) {
    use std::fmt::Write;
    let _ = write!(text, "event: {}\ndata: {}\n\n", frame.event(), frame.data());
}

/// Answers a started reply: JSON once it ends, or a live stream of it.
async fn reply_answer(
    service: &Service,
    conversation: Uuid,
    started: Started,
    live: Option<Subscription>,
    status: actix_web::http::StatusCode,
) -> HttpResponse {
    match live {
        Some(live) => {
            let first = started.user_message.clone().map(Frame::Message);
            let frames = follow_started(
                service.clone(),
                conversation,
                started.reply.id,
                started.reply.seq,
                live,
                first,
            );
            // The reply and its reader were just spawned on this thread: letting them run
            // once first means the answer's head leaves with the pieces already there (the
            // user's message, and the first text when the model was quicker than the
            // database), in one write the client reads at once.
            tokio::task::yield_now().await;
            event_stream(frames)
        }
        None => HttpResponse::build(status).json(answer(started).await),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct StreamParams {
    /// The last piece the client has; the stream resumes after it.
    after_seq: Option<i32>,
}

#[utoipa::path(get, path = "/conversations/{id}/messages/{message}/stream",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message."), StreamParams),
    responses((status = 200, description = "The reply's pieces after `afterSeq`, live until it \
        ends, then `message`.", content_type = "text/event-stream", body = String)))]
async fn reattach(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
    params: web::Query<StreamParams>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let live = service.subscribe(user.user_id);
    service.reply_of(user.user_id, id, message).await?;
    let after = params.after_seq.unwrap_or(0).max(0);
    let frames = follow(service.get_ref().clone(), id, message, after, live, None);
    Ok(event_stream(frames))
}

/// Waits for a reply to end. The reply does not depend on this wait: if the client goes
/// away, the reply is still written and stored.
async fn finished(
    mut done: watch::Receiver<Option<MessageView>>,
    started: MessageView,
) -> MessageView {
    match done.wait_for(Option::is_some).await {
        Ok(view) => view.clone().unwrap_or(started),
        // The engine dropped the reply without a result (storage failed): say what we had.
        Err(_) => started,
    }
}

async fn answer(started: Started) -> ReplyView {
    let reply = finished(started.done, started.reply).await;
    ReplyView {
        user_message: started.user_message,
        reply,
    }
}

/// A reply once it ended (`complete`, `interrupted` or `failed`), with the user's message
/// that asked for it (none for a regenerate or continue).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReplyView {
    user_message: Option<MessageView>,
    reply: MessageView,
}

/// A conversation and messages of its active branch, oldest first.
#[derive(Serialize, ToSchema)]
struct ConversationWithMessages {
    conversation: ConversationView,
    messages: Vec<MessageView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    character_id: Uuid,
    /// The first thing the user says (not blank, at most 32 KiB); without it the
    /// character's greeting opens.
    #[schema(
        min_length = 1,
        max_length = 8192,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    initial_message: Option<String>,
}

#[utoipa::path(post, path = "/conversations", tag = "chat", security(("bearer" = [])), request_body = CreateBody,
    responses((status = 201, description = "The conversation with its first messages: the \
        greeting (alternates as swipes), or the user's message and the reply.",
        body = ConversationWithMessages)))]
async fn create(
    service: web::Data<Service>,
    user: AuthUser,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let body: CreateBody = strict_body(body.into_inner(), &["characterId", "initialMessage"])?;
    let (conversation, mut messages, started) = service
        .create(user.user_id, body.character_id, body.initial_message)
        .await?;
    if let Some(started) = started {
        service.metrics().message_sent(&user.tier);
        if let Some(user_message) = started.user_message.clone() {
            messages.push(user_message);
        }
        messages.push(finished(started.done, started.reply).await);
    }
    Ok(HttpResponse::Created().json(ConversationWithMessages {
        conversation,
        messages,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[param(minimum = 0, maximum = 100000)]
    page: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    size: Option<i64>,
    /// Archived conversations instead of the others.
    archived: Option<bool>,
}

#[utoipa::path(get, path = "/conversations", tag = "chat", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "The caller's conversations, latest activity first.",
        body = Page<SummaryView>)))]
async fn list(
    service: web::Data<Service>,
    user: AuthUser,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    let mut errors = FieldErrors::new();
    let paging = Paging::checked(params.page, params.size, &mut errors);
    errors.finish(())?;
    let (content, total) = service
        .list(
            user.user_id,
            params.archived.unwrap_or(false),
            paging.page,
            paging.size,
        )
        .await?;
    Ok(HttpResponse::Ok().json(paging.answer(content, total)))
}

#[utoipa::path(get, path = "/conversations/{id}", tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation.")),
    responses((status = 200, description = "The conversation.", body = ConversationView)))]
async fn get(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let conversation = service.conversation(user.user_id, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ConversationView::from(conversation)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    /// Not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    title: Option<String>,
    pinned: Option<bool>,
    archived: Option<bool>,
}

#[utoipa::path(patch, path = "/conversations/{id}", tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation.")),
    request_body = PatchBody,
    responses((status = 200, description = "The conversation as changed.", body = ConversationView)))]
async fn patch(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let body: PatchBody = strict_body(body.into_inner(), &["title", "pinned", "archived"])?;
    let title = body.title.map(|t| t.trim().to_owned());
    if let Some(title) = &title
        && (title.is_empty() || title.chars().count() > MAX_TITLE)
    {
        let mut errors = FieldErrors::new();
        errors.add("title", format!("must be 1 to {MAX_TITLE} characters"));
        return Err(errors.into_error());
    }
    let changes = ConversationChanges {
        title,
        pinned: body.pinned,
        archived: body.archived,
    };
    let conversation = service
        .update(user.user_id, id.into_inner(), changes)
        .await?;
    Ok(HttpResponse::Ok().json(conversation))
}

#[utoipa::path(delete, path = "/conversations/{id}", tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation.")),
    responses((status = 204, description = "Deleted with its messages.")))]
async fn delete(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    service.delete(user.user_id, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// The `before` of the previous page: messages older than this one.
    #[param(value_type = Option<Uuid>)]
    before: Option<String>,
    /// 50 by default; above 200 is read as 200.
    #[param(minimum = 1)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct HistoryView {
    /// Oldest first.
    messages: Vec<MessageView>,
    has_more: bool,
    /// The cursor for the page before this one.
    before: Option<Uuid>,
}

/// A page of the active branch: `messages` oldest first; `before` is the cursor for the
/// page before it (absent on the first message).
#[utoipa::path(get, path = "/conversations/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The conversation."), HistoryParams),
    responses((status = 200, description = "A page of the active branch.", body = HistoryView)))]
async fn history(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
    params: web::Query<HistoryParams>,
) -> Result<HttpResponse, AppError> {
    let mut errors = FieldErrors::new();
    let limit = params.limit.unwrap_or(50);
    if limit < 1 {
        errors.add("limit", "must be at least 1");
    }
    let before = match params.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(cursor) => match cursor.parse::<Uuid>() {
            Ok(cursor) => Some(cursor),
            Err(_) => {
                errors.add("before", "must be a message id");
                None
            }
        },
    };
    errors.finish(())?;
    let limit = limit.min(MAX_PAGE);
    let (mut messages, more) = service
        .history(user.user_id, id.into_inner(), before, limit)
        .await?;
    messages.reverse();
    let cursor = more.then(|| messages.first().map(|m| m.id)).flatten();
    Ok(HttpResponse::Ok().json(HistoryView {
        messages,
        has_more: more,
        before: cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// The message: not blank, at most 32 KiB of UTF-8.
    #[schema(
        min_length = 1,
        max_length = 8192,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    content: String,
    /// `text` (the only kind for now).
    #[serde(rename = "type")]
    #[schema(value_type = Option<String>, pattern = "^text$")]
    kind: Option<String>,
}

fn text_body(body: Value) -> Result<String, AppError> {
    let body: SendBody = strict_body(body, &["content", "type"])?;
    if body.kind.as_deref().is_some_and(|k| k != "text") {
        let mut errors = FieldErrors::new();
        errors.add("type", "must be \"text\"");
        return Err(errors.into_error());
    }
    Ok(body.content)
}

/// The live events of `user` when the client asked for a stream: subscribed before the
/// reply starts, so no piece is published unheard.
fn live_for(request: &HttpRequest, service: &Service, user: &AuthUser) -> Option<Subscription> {
    wants_events(request).then(|| service.subscribe(user.user_id))
}

#[utoipa::path(post, path = "/conversations/{id}/messages", tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation.")),
    request_body = SendBody,
    responses((status = 201, description = "The message and the reply it got.", body = ReplyView),
        (status = 200, description = "With `Accept: text/event-stream`: `token` events, then \
            `message` with the whole reply.", content_type = "text/event-stream", body = String)))]
async fn send(
    service: web::Data<Service>,
    user: AuthUser,
    request: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let content = text_body(body.into_inner())?;
    let live = live_for(&request, &service, &user);
    let started = service.send(user.user_id, id, content).await?;
    service.metrics().message_sent(&user.tier);
    Ok(reply_answer(
        &service,
        id,
        started,
        live,
        actix_web::http::StatusCode::CREATED,
    )
    .await)
}

#[utoipa::path(post, path = "/conversations/{id}/messages/{message}/regenerate",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")),
    responses((status = 201, description = "A new reply beside this one, now active.",
        body = ReplyView), (status = 200, description = "With `Accept: text/event-stream`: `token` events, then \
            `message` with the whole reply.", content_type = "text/event-stream", body = String)))]
async fn regenerate(
    service: web::Data<Service>,
    user: AuthUser,
    request: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let live = live_for(&request, &service, &user);
    let started = service.regenerate(user.user_id, id, message).await?;
    Ok(reply_answer(
        &service,
        id,
        started,
        live,
        actix_web::http::StatusCode::CREATED,
    )
    .await)
}

#[utoipa::path(post, path = "/conversations/{id}/messages/{message}/edit",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")), request_body = SendBody,
    responses((status = 201, description = "The edited message (a new branch) and its reply.",
        body = ReplyView), (status = 200, description = "With `Accept: text/event-stream`: `token` events, then \
            `message` with the whole reply.", content_type = "text/event-stream", body = String)))]
async fn edit(
    service: web::Data<Service>,
    user: AuthUser,
    request: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let content = text_body(body.into_inner())?;
    let live = live_for(&request, &service, &user);
    let started = service.edit(user.user_id, id, message, content).await?;
    service.metrics().message_sent(&user.tier);
    Ok(reply_answer(
        &service,
        id,
        started,
        live,
        actix_web::http::StatusCode::CREATED,
    )
    .await)
}

#[utoipa::path(post, path = "/conversations/{id}/messages/{message}/select",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")),
    responses((status = 200, description = "This swipe is now on the active branch.",
        body = ConversationWithMessages)))]
async fn select(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let (conversation, mut messages) = service.switch(user.user_id, id, message).await?;
    messages.reverse();
    Ok(HttpResponse::Ok().json(ConversationWithMessages {
        conversation,
        messages,
    }))
}

#[utoipa::path(post, path = "/conversations/{id}/messages/{message}/continue",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")),
    responses((status = 200, description = "The reply, written further.", body = ReplyView),
        (status = 200, description = "With `Accept: text/event-stream`: `token` events, then \
            `message` with the whole reply.", content_type = "text/event-stream", body = String)))]
async fn continue_reply(
    service: web::Data<Service>,
    user: AuthUser,
    request: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let live = live_for(&request, &service, &user);
    let started = service.continue_reply(user.user_id, id, message).await?;
    Ok(reply_answer(&service, id, started, live, actix_web::http::StatusCode::OK).await)
}

#[derive(Serialize, ToSchema)]
struct Stopping {
    /// The reply that is ending.
    stopping: Uuid,
}

#[utoipa::path(post, path = "/conversations/{id}/messages/{message}/stop",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")),
    responses((status = 202, description = "The reply ends as `interrupted` with what it has.",
        body = Stopping)))]
async fn stop(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    service.stop(user.user_id, id, message).await?;
    Ok(HttpResponse::Accepted().json(Stopping { stopping: message }))
}

#[utoipa::path(delete, path = "/conversations/{id}/messages/{message}",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")),
    responses((status = 204, description = "Deleted with everything after it.")))]
async fn delete_message(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    service.delete_message(user.user_id, id, message).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, ToSchema)]
struct Siblings {
    /// The message and its alternatives, in order.
    messages: Vec<MessageView>,
}

#[utoipa::path(get, path = "/conversations/{id}/messages/{message}/siblings",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")),
    responses((status = 200, description = "The swipes of this message.", body = Siblings)))]
async fn siblings(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let messages = service.siblings(user.user_id, id, message).await?;
    Ok(HttpResponse::Ok().json(Siblings { messages }))
}

#[utoipa::path(get, path = "/conversations/{id}/messages/{message}/prompt",
    tag = "chat", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The conversation."), ("message" = Uuid, Path, description = "The message.")),
    responses((status = 200, description = "What the model was given for this reply.",
        body = Object)))]
async fn prompt(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let prompt = service.prompt(user.user_id, id, message).await?;
    Ok(HttpResponse::Ok().json(prompt))
}

/// This module's operations, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(
    list,
    create,
    get,
    patch,
    delete,
    history,
    send,
    delete_message,
    regenerate,
    edit,
    select,
    continue_reply,
    stop,
    siblings,
    prompt,
    reattach,
    super::socket::connect
))]
pub(super) struct Docs;

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn piece(seq: i32, delta: &str) -> Frame {
        Frame::Token {
            conversation_id: Uuid::nil(),
            message_id: Uuid::nil(),
            seq,
            delta: delta.to_owned(),
        }
    }

    fn events(chunk: &Bytes) -> Vec<Value> {
        std::str::from_utf8(chunk)
            .unwrap()
            .split_terminator("\n\n")
            .map(|event| {
                let data = event.strip_prefix("event: token\ndata: ").unwrap();
                serde_json::from_str(data).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn frames_ready_together_leave_as_one_chunk_in_order() {
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        let mut chunks = Box::pin(sse_chunks(receiver));
        for (seq, delta) in [(1, "Hello"), (2, " there")] {
            sender.send(piece(seq, delta)).await.unwrap();
        }
        let first = chunks.next().await.unwrap().unwrap();
        let seqs: Vec<_> = events(&first).iter().map(|e| e["seq"].clone()).collect();
        assert_eq!(seqs, [1, 2]);
        // A frame that comes later is a chunk of its own, and the stream ends with the frames.
        sender.send(piece(3, ".")).await.unwrap();
        let next = chunks.next().await.unwrap().unwrap();
        assert_eq!(events(&next)[0]["delta"], ".");
        drop(sender);
        assert!(chunks.next().await.is_none());
    }

    #[tokio::test]
    async fn a_chunk_stops_gathering_at_its_size() {
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        let big = "x".repeat(CHUNK_BYTES / 2);
        for seq in 1..=4 {
            sender.send(piece(seq, &big)).await.unwrap();
        }
        drop(sender);
        let chunks: Vec<Bytes> = sse_chunks(receiver)
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        let counts: Vec<usize> = chunks.iter().map(|c| events(c).len()).collect();
        assert_eq!(counts, [2, 2]);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() < CHUNK_BYTES + CHUNK_BYTES / 2 + 512)
        );
    }
}
