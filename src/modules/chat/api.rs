//! HTTP: parse, authorize, call the service, shape the answer.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use super::follow::{Frame, follow, follow_started};
use super::service::{MAX_PAGE, MAX_TITLE, Service, Started};
use super::store::ConversationChanges;
use super::views::MessageView;
use crate::platform::http::{AppError, AuthUser, FieldErrors, Paging, strict_body};
use crate::platform::realtime::Subscription;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/conversations")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/conversations/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete)),
    )
    .service(
        web::resource("/conversations/{id}/messages")
            .route(web::get().to(history))
            .route(web::post().to(send)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}")
            .route(web::delete().to(delete_message)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/regenerate")
            .route(web::post().to(regenerate)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/edit").route(web::post().to(edit)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/select")
            .route(web::post().to(select)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/continue")
            .route(web::post().to(continue_reply)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/stop").route(web::post().to(stop)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/siblings")
            .route(web::get().to(siblings)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/prompt").route(web::get().to(prompt)),
    )
    .service(
        web::resource("/conversations/{id}/messages/{message}/stream")
            .route(web::get().to(reattach)),
    );
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
    let events = stream::unfold(frames, |mut frames| async move {
        let frame = frames.recv().await?;
        let text = format!("event: {}\ndata: {}\n\n", frame.event(), frame.data());
        Some((Ok::<_, actix_web::Error>(Bytes::from(text)), frames))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events)
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
            event_stream(frames)
        }
        None => HttpResponse::build(status).json(answer(started).await),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamParams {
    after_seq: Option<i32>,
}

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

async fn answer(started: Started) -> Value {
    let reply = finished(started.done, started.reply).await;
    json!({ "userMessage": started.user_message, "reply": reply })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    character_id: Uuid,
    initial_message: Option<String>,
}

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
    Ok(HttpResponse::Created().json(json!({
        "conversation": conversation,
        "messages": messages,
    })))
}

#[derive(Deserialize)]
struct ListParams {
    page: Option<i64>,
    size: Option<i64>,
    archived: Option<bool>,
}

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

async fn get(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let conversation = service.conversation(user.user_id, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(super::views::ConversationView::from(conversation)))
}

#[derive(Deserialize)]
struct PatchBody {
    title: Option<String>,
    pinned: Option<bool>,
    archived: Option<bool>,
}

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

async fn delete(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    service.delete(user.user_id, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct HistoryParams {
    before: Option<String>,
    limit: Option<i64>,
}

/// A page of the active branch: `messages` oldest first; `before` is the cursor for the
/// page before it (absent on the first message).
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
    Ok(HttpResponse::Ok().json(json!({
        "messages": messages,
        "hasMore": more,
        "before": cursor,
    })))
}

#[derive(Deserialize)]
struct SendBody {
    content: String,
    #[serde(rename = "type")]
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

async fn select(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let (conversation, mut messages) = service.switch(user.user_id, id, message).await?;
    messages.reverse();
    Ok(HttpResponse::Ok().json(json!({
        "conversation": conversation,
        "messages": messages,
    })))
}

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

async fn stop(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    service.stop(user.user_id, id, message).await?;
    Ok(HttpResponse::Accepted().json(json!({ "stopping": message })))
}

async fn delete_message(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    service.delete_message(user.user_id, id, message).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn siblings(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let messages = service.siblings(user.user_id, id, message).await?;
    Ok(HttpResponse::Ok().json(json!({ "messages": messages })))
}

async fn prompt(
    service: web::Data<Service>,
    user: AuthUser,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, AppError> {
    let (id, message) = path.into_inner();
    let prompt = service.prompt(user.user_id, id, message).await?;
    Ok(HttpResponse::Ok().json(prompt))
}
