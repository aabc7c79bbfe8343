//! Following a reply as it is written, from any point: what SSE answers and re-attaches
//! (`afterSeq`) are built on, and what WebSocket `resume` uses.
//!
//! The reader subscribes to the user's live events first, then reads what the database
//! holds and sends the text after `afterSeq` as one catch-up piece. From then on it forwards
//! live pieces of this reply in order, skipping any it already sent. If a live piece skips
//! ahead (it missed some: it subscribed while they were being published, or it lagged),
//! it reads the database again until those pieces are stored (the generator stores at least
//! every 250 ms) and sends them first. When the reply ends it sends whatever is left and the
//! final message. So a reader always ends with exactly the whole text: no gap, no
//! duplicate, whichever instance writes the reply.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::service::{ChatError, Service};
use super::store::Progress;
use super::views::MessageView;
use crate::platform::realtime::{Missed, Subscription};

/// How long to wait for missing pieces to be stored before reading again.
const RETRY: Duration = Duration::from_millis(100);
/// With no live event for this long, read the database anyway (a lost Redis message).
const QUIET: Duration = Duration::from_secs(10);
/// Frames waiting for a slow reader before the reader is dropped.
const QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub enum Frame {
    /// The text after piece `seq - n` up to piece `seq` (one piece, or a catch-up).
    Token {
        conversation_id: Uuid,
        message_id: Uuid,
        seq: i32,
        delta: String,
    },
    /// A whole message: a user message that started the reply, or the reply at its end.
    Message(MessageView),
}

impl Frame {
    pub fn event(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Message(_) => "message",
        }
    }

    /// The frame as the WebSocket sends it: the data with its `type`, the same shape as the
    /// live events the engine publishes.
    pub fn live_text(&self) -> String {
        match self {
            Self::Token { .. } => {
                let mut data = self.data();
                data["type"] = json!("token");
                data.to_string()
            }
            Self::Message(message) => json!({ "type": "message", "message": message }).to_string(),
        }
    }

    /// The data of an SSE event.
    pub fn data(&self) -> Value {
        match self {
            Self::Token {
                conversation_id,
                message_id,
                seq,
                delta,
            } => json!({
                "conversationId": conversation_id, "messageId": message_id,
                "seq": seq, "delta": delta,
            }),
            Self::Message(message) => json!(message),
        }
    }
}

struct Reader {
    service: Service,
    conversation: Uuid,
    message: Uuid,
    sent: i32,
    /// Subscribed before the reply began, at its current end: nothing to catch up on.
    from_start: bool,
    frames: mpsc::Sender<Frame>,
}

impl Reader {
    fn new(
        service: Service,
        conversation: Uuid,
        message: Uuid,
        after: i32,
        frames: mpsc::Sender<Frame>,
    ) -> Self {
        Self {
            service,
            conversation,
            message,
            sent: after.max(0),
            from_start: false,
            frames,
        }
    }

    async fn progress(&self) -> Result<Progress, ChatError> {
        self.service.progress(self.conversation, self.message).await
    }

    /// Sends the stored text after what was sent; false when the reader went away.
    async fn catch_up(&mut self, progress: &Progress) -> bool {
        if progress.seq <= self.sent {
            return true;
        }
        let end_of = |seq: i32| -> usize {
            match usize::try_from(seq - 1) {
                Ok(index) => progress
                    .piece_ends
                    .get(index)
                    .and_then(|end| usize::try_from(*end).ok())
                    .unwrap_or(progress.content.len()),
                Err(_) => 0,
            }
        };
        let from = end_of(self.sent);
        let to = end_of(progress.seq);
        let delta = progress
            .content
            .get(from..to)
            .unwrap_or_default()
            .to_owned();
        self.sent = progress.seq;
        self.frames
            .send(Frame::Token {
                conversation_id: self.conversation,
                message_id: self.message,
                seq: progress.seq,
                delta,
            })
            .await
            .is_ok()
    }

    /// Catches up, then sends the final message. Called once the reply has ended.
    async fn finish(&mut self) -> Result<(), ChatError> {
        let progress = self.progress().await?;
        if !self.catch_up(&progress).await {
            return Ok(());
        }
        let view = self
            .service
            .message_view(self.conversation, self.message)
            .await?;
        let _ = self.frames.send(Frame::Message(view)).await;
        Ok(())
    }

    /// Reads the database until pieces up to `seq` are stored (or the reply ended), then
    /// catches up. Returns whether the reply ended.
    async fn fill_gap(&mut self, seq: i32) -> Result<Option<bool>, ChatError> {
        for _ in 0..50 {
            let progress = self.progress().await?;
            if progress.status != "streaming" {
                return Ok(Some(true));
            }
            if progress.seq >= seq {
                if !self.catch_up(&progress).await {
                    return Ok(None);
                }
                return Ok(Some(false));
            }
            tokio::time::sleep(RETRY).await;
        }
        // Still not stored: the generator is stuck; the next live event or the quiet
        // timer tries again.
        Ok(Some(false))
    }

    async fn run(mut self, mut live: Subscription) -> Result<(), ChatError> {
        if !self.from_start {
            let progress = self.progress().await?;
            if progress.status != "streaming" {
                return self.finish().await;
            }
            if !self.catch_up(&progress).await {
                return Ok(());
            }
        }
        let me = self.message;
        let is_me = |id: &Value| id.as_str().and_then(|id| id.parse::<Uuid>().ok()) == Some(me);
        loop {
            let event = tokio::select! {
                event = live.recv() => event,
                () = tokio::time::sleep(QUIET) => Err(Missed::Lagged(0)),
                () = self.frames.closed() => return Ok(()),
            };
            let frame: Value = match event {
                Ok(text) => match serde_json::from_str(&text) {
                    Ok(frame) => frame,
                    Err(_) => continue,
                },
                Err(Missed::Closed) => return Ok(()),
                // Fell behind or heard nothing for a while: the database knows.
                Err(Missed::Lagged(_)) => {
                    let progress = self.progress().await?;
                    if progress.status != "streaming" {
                        return self.finish().await;
                    }
                    if !self.catch_up(&progress).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            match frame["type"].as_str() {
                Some("token") if is_me(&frame["messageId"]) => {
                    let seq = frame["seq"]
                        .as_i64()
                        .and_then(|s| i32::try_from(s).ok())
                        .unwrap_or(0);
                    if seq <= self.sent {
                        continue;
                    }
                    if seq > self.sent + 1 {
                        match self.fill_gap(seq - 1).await? {
                            None => return Ok(()),
                            Some(true) => return self.finish().await,
                            Some(false) => {}
                        }
                        if seq != self.sent + 1 {
                            continue;
                        }
                    }
                    let delta = frame["delta"].as_str().unwrap_or_default().to_owned();
                    self.sent = seq;
                    let token = Frame::Token {
                        conversation_id: self.conversation,
                        message_id: self.message,
                        seq,
                        delta,
                    };
                    if self.frames.send(token).await.is_err() {
                        return Ok(());
                    }
                }
                // The reply's own announcement at its start is not its end.
                Some("message")
                    if is_me(&frame["message"]["id"])
                        && frame["message"]["status"] != "streaming" =>
                {
                    return self.finish().await;
                }
                _ => {}
            }
        }
    }
}

/// Frames of `message` after piece `after`, then its final message. Subscribe before the
/// reply can produce anything the reader must see, and hand the subscription in.
pub fn follow(
    service: Service,
    conversation: Uuid,
    message: Uuid,
    after: i32,
    live: Subscription,
    first: Option<Frame>,
) -> mpsc::Receiver<Frame> {
    let (frames, receiver) = mpsc::channel(QUEUE);
    follow_into(service, conversation, message, after, live, first, frames);
    receiver
}

/// [`follow`] for a reply this request just started, subscribed before it began, with
/// `after` its first piece to come: the database has nothing to add yet, so it is not read
/// before the first live piece.
pub fn follow_started(
    service: Service,
    conversation: Uuid,
    message: Uuid,
    after: i32,
    live: Subscription,
    first: Option<Frame>,
) -> mpsc::Receiver<Frame> {
    let (frames, receiver) = mpsc::channel(QUEUE);
    let mut reader = Reader::new(service, conversation, message, after, frames);
    reader.from_start = true;
    spawn_reader(reader, live, first);
    receiver
}

/// [`follow`], sending into `frames`; the sender is dropped when the reader ends.
pub fn follow_into(
    service: Service,
    conversation: Uuid,
    message: Uuid,
    after: i32,
    live: Subscription,
    first: Option<Frame>,
    frames: mpsc::Sender<Frame>,
) {
    let reader = Reader::new(service, conversation, message, after, frames);
    spawn_reader(reader, live, first);
}

fn spawn_reader(reader: Reader, live: Subscription, first: Option<Frame>) {
    tokio::spawn(async move {
        if let Some(first) = first
            && reader.frames.send(first).await.is_err()
        {
            return;
        }
        let message = reader.message;
        if let Err(error) = reader.run(live).await {
            tracing::warn!(%error, %message, "stopped following a reply");
        }
    });
}
