//! The live connection, `GET /api/v1/ws` (DESIGN.md §2, WebSocket).
//!
//! - **Handshake.** A browser's `Origin` must be this server's own or one of
//!   `http.cors_origins` (403 otherwise); a client without `Origin` is not a browser and
//!   proves itself by its token like any API call. The token comes in the `Authorization`
//!   header, or as the sub-protocols `bearer, <token>` (what a browser can send; the answer
//!   selects `bearer`), or in a first frame `{"type":"auth","token":…}` within
//!   `websocket.auth_timeout_ms`. Never in the URL, which ends up in logs.
//! - **Frames in:** `message {conversationId, content}`, `stop {conversationId, messageId?}`,
//!   `resume {messageId, afterSeq}`, `ping`, and `auth` first. Any frame may carry a `ref`
//!   (a short string) that an `error` about it repeats. A frame we cannot read gets an
//!   `error` frame and the connection stays open; one larger than
//!   `websocket.max_frame_bytes` closes it (1009).
//! - **Frames out:** `token {conversationId, messageId, seq, delta}`, `message {message}`,
//!   `error {code, message, ref?}`, `pong`. Every connection of the user, on any instance,
//!   gets the frames of the user's replies through `platform::realtime`.
//! - **In order, no gap, no duplicate.** A reply announces itself (a `message` frame with
//!   status `streaming`) before its first token; a connection forwards the tokens of replies
//!   it saw announced, each exactly once and in order, and fills a gap (it fell behind) from
//!   the database. Tokens of a reply that started before the connection are not forwarded:
//!   the client asks for them with `resume`, which sends the text after `afterSeq` and
//!   then follows the reply to its end (`follow.rs`).
//! - **Liveness and memory.** The server pings every `websocket.ping_interval_ms` and
//!   closes a connection that missed two pongs. Frames for the client wait in a queue of
//!   `websocket.send_queue`; a client that lets it fill is disconnected (it can reconnect
//!   and resume), so a slow reader never grows the server's memory. At each ping the session
//!   is checked again: a logged-out session's sockets close (1008). When the account is
//!   closed, identity publishes `session.ended` to the user and the check runs at once.
//! - **Limits.** One account holds at most `websocket.max_per_user` connections on an
//!   instance: past it the handshake answers 429 (or, when the token comes in an `auth`
//!   frame, that frame gets a `RATE_LIMITED` error and the connection closes with 1008). The
//!   cap is per instance, so a user spread over N instances may hold N times as many; a
//!   shared count would outlive crashed instances. A client may send
//!   `websocket.frames_per_second` frames on average, in bursts of `websocket.frame_burst`;
//!   frames past that are not read but answered `RATE_LIMITED`, and a client that sends a
//!   whole burst more without slowing down is closed (1008).
//! - **Shutdown** closes every connection with 1001 once the replies running here are
//!   stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, Message, ProtocolError};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::follow::follow_into;
use super::metrics::GaugeGuard;
use super::service::{ChatError, Service};
use super::wire::{self, Inbox, Incoming, Outbox, Refused};
use crate::config::WebSocketSettings;
use crate::platform::Platform;
use crate::platform::http::{
    AppError, AuthUser, ErrorCode, SessionCheck, TokenKeys, bearer_token, charge_user,
};
use crate::platform::realtime::{Missed, Subscription};

/// The sub-protocol that carries a token: `Sec-WebSocket-Protocol: bearer, <token>`.
const BEARER_PROTOCOL: &str = "bearer";
/// Replies a connection may follow through `resume` at once.
const MAX_FOLLOWED: usize = 8;
/// Replies whose tokens a connection tracks; more are forgotten (the client can resume).
const MAX_TRACKED: usize = 64;
/// A `ref` longer than this is cut.
const MAX_REF: usize = 64;
/// How long a closing connection may take to send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The longest payload of a control frame (RFC 6455 §5.5): a pong echoes at most this much.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Open connections by account, on this instance.
type OpenCounts = Arc<Mutex<HashMap<Uuid, usize>>>;

/// The open connections of this instance, so shutdown can close them and each account's
/// count stays under `websocket.max_per_user`.
#[derive(Clone)]
pub struct Sockets {
    settings: WebSocketSettings,
    closing: CancellationToken,
    tasks: TaskTracker,
    open: OpenCounts,
}

/// A connection's place in its account's count, given back when the connection ends.
struct Slot {
    open: OpenCounts,
    user: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl Sockets {
    pub fn new(settings: WebSocketSettings) -> Self {
        Self {
            settings,
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            open: Arc::default(),
        }
    }

    /// A place for one more connection of `user`, unless they hold the most allowed.
    fn claim(&self, user: Uuid) -> Option<Slot> {
        let cap = self.settings.max_per_user;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(user).or_insert(0);
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            open: self.open.clone(),
            user,
        })
    }

    /// Closes every connection (1001) and waits for them to go, up to `grace`.
    pub async fn close_all(&self, grace: Duration) {
        self.closing.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
    }
}

/// Whether a browser page at `Origin` may open a connection: our own origin, or one the
/// configuration allows. No `Origin` means no browser, hence no cross-site page.
fn origin_allowed(request: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let (Ok(url), Some(host)) = (
        url::Url::parse(origin),
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let Some(origin_host) = url.host_str() else {
        return false;
    };
    let authority = match url.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.to_owned(),
    };
    authority.eq_ignore_ascii_case(host)
}

/// The token offered as the sub-protocols `bearer, <token>`.
fn protocol_token(request: &HttpRequest) -> Option<String> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let at = offered.iter().position(|p| *p == BEARER_PROTOCOL)?;
    offered.get(at + 1).map(|t| (*t).to_owned())
}

/// The WebSocket (DESIGN.md §2): the access token comes as `Authorization`, as the
/// `Sec-WebSocket-Protocol` pair `bearer, <token>`, or in a first `auth` frame.
#[utoipa::path(get, path = "/ws", tag = "chat",
    security((), ("bearer" = [])),
    responses((status = 101, description = "Upgraded: JSON frames both ways (`send`, `resume`, \
        `stop`… in; `token`, `message`, `subscription`… out).")))]
pub async fn connect(
    request: HttpRequest,
    body: web::Payload,
    service: web::Data<Service>,
    sockets: web::Data<Sockets>,
    platform: web::Data<Platform>,
    keys: web::Data<TokenKeys>,
    sessions: web::Data<dyn SessionCheck>,
) -> Result<HttpResponse, AppError> {
    if !origin_allowed(&request, &platform.settings.http.cors_origins) {
        return Err(AppError::forbidden(
            "Pages from this origin may not open a connection.",
        ));
    }
    let in_protocol = protocol_token(&request);
    let token = bearer_token(&request)
        .map(str::to_owned)
        .or(in_protocol.clone());
    let user = match token {
        Some(token) => Some(AuthUser::from_token(&keys, &**sessions, &token).await?),
        None => None,
    };
    let slot = match &user {
        Some(user) => Some(
            sockets
                .claim(user.user_id)
                .ok_or_else(too_many_connections)?,
        ),
        None => None,
    };
    let settings = &sockets.settings;
    let (response, outbox, inbox) = wire::accept(
        &request,
        body.into_inner(),
        in_protocol.is_some().then_some(BEARER_PROTOCOL),
        settings.send_queue,
        settings.max_frame_bytes,
    )
    .map_err(|_| AppError::bad_request("This address only speaks WebSocket."))?;
    let mut connection = Connection {
        _open: service.metrics().socket(),
        service,
        platform: platform.into_inner(),
        keys: keys.into_inner(),
        sessions: sessions.into_inner(),
        user: None,
        live: None,
        outbox,
        inbox,
        followed: HashSet::new(),
        followers: None,
        seen: HashMap::new(),
        missed_pongs: 0,
        budget: FrameBudget::new(settings),
        sockets: sockets.clone(),
        slot,
    };
    if let Some(user) = user {
        connection.authenticated(user);
    }
    // The future itself is the task: wrapping it in an `async move` block would store the
    // connection twice (the block's captures beside the future they were moved into).
    let run = connection.run();
    actix_web::rt::spawn(sockets.tasks.track_future(run));
    Ok(response)
}

/// The answer to one connection too many.
fn too_many_connections() -> AppError {
    AppError::new(
        ErrorCode::RateLimited,
        "This account has too many connections open; close one first.",
    )
    .retry_after(5)
}

/// The frames a client may still send now: a token bucket.
struct FrameBudget {
    /// Frames per second added back; 0 means no limit.
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    /// Frames refused since the last one accepted.
    refused: u32,
}

/// What the budget says about one more frame.
enum Verdict {
    Read,
    Refuse,
    Disconnect,
}

impl FrameBudget {
    fn new(settings: &WebSocketSettings) -> Self {
        let burst = f64::from(settings.frame_burst.max(1));
        Self {
            rate: f64::from(settings.frames_per_second),
            burst,
            tokens: burst,
            at: Instant::now(),
            refused: 0,
        }
    }

    fn take(&mut self) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Read;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused = 0;
            return Verdict::Read;
        }
        self.refused += 1;
        if f64::from(self.refused) > self.burst {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

/// What a frame from a follower (a `resume`) carries.
enum Followed {
    /// A frame, as the socket sends it.
    Frame(String),
    /// The follower of this reply ended.
    Done(Uuid),
}

/// Why a connection ends.
enum End {
    /// The client closed, went away or was too slow: nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthFrame {
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MessageFrame {
    conversation_id: Uuid,
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StopFrame {
    conversation_id: Uuid,
    message_id: Option<Uuid>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResumeFrame {
    message_id: Uuid,
    after_seq: Option<i32>,
}

/// The parts of a live event a connection looks at (the rest is forwarded as it is).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LiveEvent {
    #[serde(rename = "type")]
    kind: String,
    message_id: Option<Uuid>,
    seq: Option<i32>,
    message: Option<LiveMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LiveMessage {
    id: Uuid,
    conversation_id: Uuid,
    status: String,
    seq: i32,
}

/// A reply seen announced: its conversation and the last token sent.
#[derive(Clone, Copy)]
struct Seen {
    conversation: Uuid,
    sent: i32,
}

/// One open connection: the state its task keeps while the client is idle. It is what
/// every idle connection costs, so it holds shared parts by reference, allocates nothing
/// until something happens, and its task is one future: the frames for the client go
/// straight into the answer's queue (`wire.rs`, unallocated while empty), and the work a
/// frame or a ping starts runs in a boxed future, so the loop's own state is what waiting
/// takes.
struct Connection {
    service: web::Data<Service>,
    platform: Arc<Platform>,
    keys: Arc<TokenKeys>,
    sessions: Arc<dyn SessionCheck>,
    user: Option<AuthUser>,
    live: Option<Subscription>,
    /// Where frames go to the client: at most `websocket.send_queue` wait for the socket.
    outbox: Outbox,
    /// What the client sends.
    inbox: Inbox,
    /// Replies a `resume` follower is sending; their live frames are left to it.
    followed: HashSet<Uuid>,
    /// What the followers send, made with the first one (most connections never resume).
    followers: Option<(mpsc::Sender<Followed>, mpsc::Receiver<Followed>)>,
    /// Replies seen announced, and how far they were sent.
    seen: HashMap<Uuid, Seen>,
    missed_pongs: u32,
    budget: FrameBudget,
    sockets: web::Data<Sockets>,
    /// This connection's place in its account's count, once it knows the account.
    slot: Option<Slot>,
    _open: GaugeGuard,
}

/// `{type:"error", code, message, ref?}`.
fn error_frame(code: ErrorCode, message: &str, reference: Option<&str>) -> Value {
    let mut frame = json!({ "type": "error", "code": code, "message": message });
    if let Some(reference) = reference {
        frame["ref"] = json!(reference);
    }
    frame
}

/// The next frame of a follower, or never when there is none.
async fn next_followed(
    followers: &mut Option<(mpsc::Sender<Followed>, mpsc::Receiver<Followed>)>,
) -> Followed {
    match followers {
        Some((_, receiver)) => match receiver.recv().await {
            Some(item) => item,
            // Cannot happen while we hold a sender; wait like an empty channel.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The next live event, or never when not subscribed yet.
async fn next_live(live: &mut Option<Subscription>) -> Result<Arc<str>, Missed> {
    match live {
        Some(live) => live.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// The connection's task. Not an `async fn`: one would keep its arguments and the
    /// locals they are moved into side by side; the `async move` block uses `self` in place.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn run(mut self) -> impl Future<Output = ()> + 'static {
        async move {
            let settings = &self.sockets.settings;
            let ping_every = Duration::from_millis(settings.ping_interval_ms.max(1));
            let auth_deadline =
                Instant::now() + Duration::from_millis(settings.auth_timeout_ms.max(1));
            let mut next_ping = Instant::now() + ping_every;
            // One timer serves both the authentication deadline and the pings.
            let wake_at = |authenticated: bool, next_ping: Instant| {
                if authenticated {
                    next_ping
                } else {
                    auth_deadline.min(next_ping)
                }
            };
            let timer = tokio::time::sleep_until(wake_at(self.user.is_some(), next_ping));
            tokio::pin!(timer);
            let end = loop {
                let step = tokio::select! {
                    () = self.sockets.closing.cancelled() => Err(End::Close(CloseCode::Away, "the server is restarting")),
                    () = &mut timer => {
                        let now = Instant::now();
                        let step = if self.user.is_none() && now >= auth_deadline {
                            Err(End::Close(CloseCode::Policy, "no authentication"))
                        } else if now >= next_ping {
                            next_ping = now + ping_every;
                            Box::pin(self.tick()).await
                        } else {
                            Ok(())
                        };
                        timer.as_mut().reset(wake_at(self.user.is_some(), next_ping));
                        step
                    }
                    message = self.inbox.recv() => match message {
                        Some(Ok(message)) => Box::pin(self.received(message)).await,
                        Some(Err(ProtocolError::Overflow)) => {
                            Err(End::Close(CloseCode::Size, "frame too large"))
                        }
                        Some(Err(_)) => Err(End::Close(CloseCode::Protocol, "unreadable frame")),
                        None => Err(End::Gone),
                    },
                    event = next_live(&mut self.live) => match event {
                        // The user's sessions ended (account closed): check this one now.
                        Ok(text) if text.contains(r#""type":"session.ended""#) => {
                            Box::pin(self.check_session()).await
                        }
                        event => self.live_event(event),
                    },
                    item = next_followed(&mut self.followers) => self.follower_item(item),
                };
                if let Err(end) = step {
                    break end;
                }
            };
            if let End::Close(code, description) = end {
                let reason = CloseReason {
                    code,
                    description: Some(description.to_owned()),
                };
                // A full queue means a client that does not read: it gets no close frame.
                if self.send(Message::Close(Some(reason))).is_ok() {
                    let _ =
                        Box::pin(tokio::time::timeout(CLOSE_GRACE, self.outbox.flushed())).await;
                }
            }
        }
    }

    fn authenticated(&mut self, user: AuthUser) {
        self.live = Some(self.service.subscribe(user.user_id));
        self.user = Some(user);
    }

    /// Queues a frame; a client that lets its queue fill is disconnected.
    fn send(&mut self, message: Message) -> Result<(), End> {
        self.outbox.send(message).map_err(|refused| {
            if refused == Refused::Full {
                tracing::info!("disconnecting a WebSocket client that does not keep up");
            }
            End::Gone
        })
    }

    fn text(&mut self, text: String) -> Result<(), End> {
        self.send(Message::Text(text.into()))
    }

    fn error(
        &mut self,
        code: ErrorCode,
        message: &str,
        reference: Option<&str>,
    ) -> Result<(), End> {
        self.text(error_frame(code, message, reference).to_string())
    }

    /// An API error as an `error` frame: the envelope's code, message and details (which,
    /// like the envelope's, never carry a cause).
    fn app_error(&mut self, error: &AppError, reference: Option<&str>) -> Result<(), End> {
        if let Some(cause) = error.cause() {
            tracing::error!(error = %cause, "a WebSocket frame failed");
        }
        let mut frame = error_frame(error.code(), error.message(), reference);
        if let Some(details) = error.details() {
            frame["details"] = details.clone();
        }
        self.text(frame.to_string())
    }

    /// Closes the connection (1008) when its session has ended.
    async fn check_session(&self) -> Result<(), End> {
        if let Some(user) = &self.user {
            match self.sessions.is_active(user.user_id, user.session_id).await {
                Ok(false) => return Err(End::Close(CloseCode::Policy, "the session has ended")),
                Ok(true) => {}
                Err(_) => tracing::warn!("could not check a WebSocket's session"),
            }
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), End> {
        if self.missed_pongs >= 2 {
            return Err(End::Close(CloseCode::Policy, "no pong"));
        }
        self.check_session().await?;
        self.missed_pongs += 1;
        self.send(Message::Ping(Bytes::new()))
    }

    async fn received(&mut self, message: Incoming) -> Result<(), End> {
        // What the client sends counts against its budget; its pongs and close do not.
        if !matches!(message, Incoming::Pong(_) | Incoming::Close) {
            match self.budget.take() {
                Verdict::Read => {}
                // A refused ping gets no pong and no error: it was not read.
                Verdict::Refuse if matches!(message, Incoming::Ping(_)) => return Ok(()),
                Verdict::Refuse => {
                    return self.error(
                        ErrorCode::RateLimited,
                        "Too many frames; slow down. This one was not read.",
                        None,
                    );
                }
                Verdict::Disconnect => {
                    return Err(End::Close(CloseCode::Policy, "too many frames"));
                }
            }
        }
        match message {
            Incoming::Text(text) => {
                self.missed_pongs = 0;
                self.frame(&text).await
            }
            Incoming::Binary(_) => self.error(
                ErrorCode::UnsupportedMediaType,
                "Frames are JSON text; binary frames are not understood.",
                None,
            ),
            Incoming::Ping(bytes) => self.send(Message::Pong(
                bytes.slice(..bytes.len().min(MAX_CONTROL_PAYLOAD)),
            )),
            Incoming::Pong(_) => {
                self.missed_pongs = 0;
                Ok(())
            }
            Incoming::Close => Err(End::Close(CloseCode::Normal, "goodbye")),
        }
    }

    /// One JSON frame from the client.
    async fn frame(&mut self, text: &str) -> Result<(), End> {
        let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(text) else {
            return self.error(
                ErrorCode::BadRequest,
                "A frame must be a JSON object.",
                None,
            );
        };
        let reference = match frame.remove("ref") {
            Some(Value::String(r)) => Some(r.chars().take(MAX_REF).collect::<String>()),
            _ => None,
        };
        let reference = reference.as_deref();
        let kind = match frame.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => {
                return self.error(
                    ErrorCode::BadRequest,
                    "A frame needs a \"type\".",
                    reference,
                );
            }
        };
        let body = Value::Object(frame);
        if self.user.is_none() {
            if kind != "auth" {
                self.error(
                    ErrorCode::Unauthorized,
                    "Authenticate first: {\"type\":\"auth\",\"token\":…}.",
                    reference,
                )?;
                return Err(End::Close(CloseCode::Policy, "no authentication"));
            }
            let auth: AuthFrame = match serde_json::from_value(body) {
                Ok(auth) => auth,
                Err(error) => return self.unreadable(&kind, &error, reference),
            };
            return match AuthUser::from_token(&self.keys, &*self.sessions, &auth.token).await {
                Ok(user) => {
                    let Some(slot) = self.sockets.claim(user.user_id) else {
                        self.app_error(&too_many_connections(), reference)?;
                        return Err(End::Close(CloseCode::Policy, "too many connections"));
                    };
                    self.slot = Some(slot);
                    self.authenticated(user);
                    Ok(())
                }
                Err(error) => {
                    self.app_error(&error, reference)?;
                    Err(End::Close(CloseCode::Policy, "no authentication"))
                }
            };
        }
        match kind.as_str() {
            "ping" => self.text(json!({ "type": "pong" }).to_string()),
            "message" => match serde_json::from_value::<MessageFrame>(body) {
                Ok(frame) => self.message(frame, reference).await,
                Err(error) => self.unreadable(&kind, &error, reference),
            },
            "stop" => match serde_json::from_value::<StopFrame>(body) {
                Ok(frame) => self.stop(frame, reference).await,
                Err(error) => self.unreadable(&kind, &error, reference),
            },
            "resume" => match serde_json::from_value::<ResumeFrame>(body) {
                Ok(frame) => self.resume(frame, reference).await,
                Err(error) => self.unreadable(&kind, &error, reference),
            },
            "auth" => self.error(
                ErrorCode::BadRequest,
                "This connection is already authenticated.",
                reference,
            ),
            _ => self.error(
                ErrorCode::BadRequest,
                "Unknown frame type; expected message, stop, resume or ping.",
                reference,
            ),
        }
    }

    fn unreadable(
        &mut self,
        kind: &str,
        error: &serde_json::Error,
        reference: Option<&str>,
    ) -> Result<(), End> {
        self.error(
            ErrorCode::ValidationError,
            &format!("A \"{kind}\" frame could not be read: {error}."),
            reference,
        )
    }

    fn chat_error(&mut self, error: ChatError, reference: Option<&str>) -> Result<(), End> {
        self.app_error(&AppError::from(error), reference)
    }

    async fn message(&mut self, frame: MessageFrame, reference: Option<&str>) -> Result<(), End> {
        let Some(user) = self.user.clone() else {
            return Ok(());
        };
        // A message over a socket costs what `POST …/messages` costs.
        if let Err(refused) = charge_user(&self.platform, user.user_id, &user.tier).await {
            return self.app_error(&refused, reference);
        }
        match self
            .service
            .send(user.user_id, frame.conversation_id, frame.content)
            .await
        {
            // Its frames come back through the live events, as they do to every other
            // connection of the user.
            Ok(_) => {
                self.service.metrics().message_sent(&user.tier);
                Ok(())
            }
            Err(error) => self.chat_error(error, reference),
        }
    }

    async fn stop(&mut self, frame: StopFrame, reference: Option<&str>) -> Result<(), End> {
        let Some(user) = self.user.clone() else {
            return Ok(());
        };
        let stopped = match frame.message_id {
            Some(message) => {
                self.service
                    .stop(user.user_id, frame.conversation_id, message)
                    .await
            }
            None => {
                self.service
                    .stop_current(user.user_id, frame.conversation_id)
                    .await
            }
        };
        match stopped {
            Ok(()) => Ok(()),
            Err(error) => self.chat_error(error, reference),
        }
    }

    async fn resume(&mut self, frame: ResumeFrame, reference: Option<&str>) -> Result<(), End> {
        let Some(user) = self.user.clone() else {
            return Ok(());
        };
        let message = frame.message_id;
        if self.followed.contains(&message) {
            return Ok(());
        }
        if self.followed.len() >= MAX_FOLLOWED {
            return self.error(
                ErrorCode::Conflict,
                "Too many replies are being resumed on this connection at once.",
                reference,
            );
        }
        // Subscribe before reading, so nothing is published unheard.
        let live = self.service.subscribe(user.user_id);
        let conversation = match self.service.reply_conversation(user.user_id, message).await {
            Ok(conversation) => conversation,
            Err(error) => return self.chat_error(error, reference),
        };
        self.start_following(conversation, message, frame.after_seq.unwrap_or(0), live);
        Ok(())
    }

    /// Hands the reply to a follower that sends it from piece `after` to its end.
    fn start_following(
        &mut self,
        conversation: Uuid,
        message: Uuid,
        after: i32,
        live: Subscription,
    ) {
        self.followed.insert(message);
        self.seen.remove(&message);
        let capacity = self.sockets.settings.send_queue.max(1);
        let (frames, mut receiver) = mpsc::channel(capacity);
        follow_into(
            self.service.get_ref().clone(),
            conversation,
            message,
            after.max(0),
            live,
            None,
            frames,
        );
        let out = self
            .followers
            .get_or_insert_with(|| mpsc::channel(capacity))
            .0
            .clone();
        actix_web::rt::spawn(async move {
            while let Some(frame) = receiver.recv().await {
                if out.send(Followed::Frame(frame.live_text())).await.is_err() {
                    return;
                }
            }
            let _ = out.send(Followed::Done(message)).await;
        });
    }

    fn follower_item(&mut self, item: Followed) -> Result<(), End> {
        match item {
            Followed::Frame(text) => self.text(text),
            Followed::Done(message) => {
                self.followed.remove(&message);
                Ok(())
            }
        }
    }

    /// A live event of the user's: forwarded as it is, except tokens this connection must
    /// not send (not announced here, already sent, or left to a follower).
    fn live_event(&mut self, event: Result<Arc<str>, Missed>) -> Result<(), End> {
        let text = match event {
            Ok(text) => text,
            // Fell behind: the replies under way continue from the database.
            Err(Missed::Lagged(_)) => {
                let behind: Vec<(Uuid, Seen)> = self.seen.drain().collect();
                for (message, seen) in behind {
                    self.follow_from(message, seen);
                }
                return Ok(());
            }
            Err(Missed::Closed) => return Err(End::Close(CloseCode::Away, "shutting down")),
        };
        let Ok(event) = serde_json::from_str::<LiveEvent>(&text) else {
            return Ok(());
        };
        match event.kind.as_str() {
            "token" => {
                let (Some(message), Some(seq)) = (event.message_id, event.seq) else {
                    return Ok(());
                };
                if self.followed.contains(&message) {
                    return Ok(());
                }
                let Some(seen) = self.seen.get_mut(&message) else {
                    return Ok(());
                };
                if seq <= seen.sent {
                    return Ok(());
                }
                if seq > seen.sent + 1 {
                    // Missed pieces: a follower sends them from the database, then goes on.
                    let seen = *seen;
                    self.follow_from(message, seen);
                    return Ok(());
                }
                seen.sent = seq;
                self.text(text.to_string())
            }
            "message" => {
                let Some(message) = event.message else {
                    return Ok(());
                };
                if self.followed.contains(&message.id) {
                    return Ok(());
                }
                if message.status == "streaming" {
                    if self.seen.len() >= MAX_TRACKED {
                        self.seen.clear();
                    }
                    let seen = Seen {
                        conversation: message.conversation_id,
                        sent: message.seq,
                    };
                    self.seen.insert(message.id, seen);
                } else {
                    self.seen.remove(&message.id);
                }
                self.text(text.to_string())
            }
            _ => self.text(text.to_string()),
        }
    }

    /// Continues a reply this connection was sending, from the database.
    fn follow_from(&mut self, message: Uuid, seen: Seen) {
        let Some(user) = &self.user else {
            return;
        };
        let live = self.service.subscribe(user.user_id);
        self.start_following(seen.conversation, message, seen.sent, live);
    }
}
