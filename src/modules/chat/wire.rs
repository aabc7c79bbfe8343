//! The WebSocket transport under `socket.rs`: actix-http's handshake and frame codec, and one
//! small queue that carries a connection's frames to its socket.
//!
//! - **Out.** [`Outbox::send`] puts a frame in a queue shared with the `101` answer's body.
//!   The body is polled by actix-http when the socket can take more; it encodes every frame
//!   waiting into one write. The queue holds at most `capacity` frames: past that the client
//!   is not reading, and `send` says so. A close frame is the last one written; when the
//!   [`Outbox`] is dropped the body ends after what is queued, and the connection with it.
//! - **In.** [`Inbox::recv`] reads the request body (the socket after the upgrade), decodes
//!   frames, joins a message sent in continuation frames (refused past `max_message` bytes)
//!   and checks that text is UTF-8. It ends when the client closes or the socket goes: actix
//!   drops the answer's body then, and the body's drop tells the inbox.
//!
//! Why not actix-ws, which does the same: it puts a Tokio channel of 32 frames and a oneshot
//! between the connection and the body, about 2 KiB allocated for every connection however
//! idle it is. This queue is one `VecDeque` (unallocated while empty) behind a mutex, about
//! 150 bytes. The protocol itself (handshake, framing, masking, control frames) is
//! actix-http's.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use actix_http::ws::{Codec, Frame, Item, Message, ProtocolError};
use actix_web::body::{BodyStream, MessageBody};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio_util::codec::{Decoder, Encoder};

use crate::platform::realtime::give_back_burst;

/// A message from the client, continuation frames joined.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close,
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// `capacity` frames already wait: the client does not read.
    Full,
    /// The socket is gone, or a close frame was already sent.
    Gone,
}

/// What the connection and its answer's body share.
#[derive(Default)]
struct State {
    /// Frames waiting for the socket.
    frames: VecDeque<Message>,
    /// The body's task, waiting for frames.
    writer: Option<Waker>,
    /// The connection's task, waiting in [`Outbox::flushed`].
    flusher: Option<Waker>,
    /// The connection's task, waiting in [`Inbox::recv`] (told when the socket goes).
    reader: Option<Waker>,
    /// The body was dropped: the socket is gone.
    gone: bool,
    /// No more frames: a close frame was queued, or the connection dropped its outbox.
    finished: bool,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps the waker of the task polling now, cloning it only when it changed.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

/// Accepts a WebSocket handshake (400-worthy `Err` when the request is not one): the `101`
/// answer, selecting `protocol` when given, and the connection's two ends.
pub fn accept(
    request: &HttpRequest,
    payload: Payload,
    protocol: Option<&'static str>,
    capacity: usize,
    max_message: usize,
) -> Result<(HttpResponse, Outbox, Inbox), actix_web::Error> {
    let mut response = actix_http::ws::handshake(request.head())?;
    if let Some(protocol) = protocol {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let shared = Shared::default();
    let body = Body {
        shared: shared.clone(),
        codec: Codec::new(),
    };
    let response = response.message_body(BodyStream::new(body).boxed())?;
    let outbox = Outbox {
        shared: shared.clone(),
        capacity: capacity.max(1),
    };
    Ok((
        response.into(),
        outbox,
        Inbox::new(payload, shared, max_message),
    ))
}

/// The connection's way to its client.
pub struct Outbox {
    shared: Shared,
    capacity: usize,
}

impl Outbox {
    /// Queues a frame for the socket.
    pub fn send(&self, message: Message) -> Result<(), Refused> {
        let mut state = lock(&self.shared);
        if state.gone || state.finished {
            return Err(Refused::Gone);
        }
        if state.frames.len() >= self.capacity {
            return Err(Refused::Full);
        }
        if matches!(message, Message::Close(_)) {
            state.finished = true;
        }
        state.frames.push_back(message);
        wake(&mut state.writer);
        Ok(())
    }

    /// Waits until every queued frame went to the socket, or the socket is gone.
    pub async fn flushed(&self) {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if state.frames.is_empty() || state.gone {
                return Poll::Ready(());
            }
            register(&mut state.flusher, cx);
            Poll::Pending
        })
        .await;
    }
}

impl Drop for Outbox {
    /// The connection is over: the body ends, writing only a close frame already queued.
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        if !matches!(state.frames.back(), Some(Message::Close(_))) {
            state.frames.clear();
        }
        state.finished = true;
        wake(&mut state.writer);
    }
}

/// The `101` answer's body: the frames of the queue, encoded.
struct Body {
    shared: Shared,
    codec: Codec,
}

impl Stream for Body {
    type Item = Result<Bytes, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut state = lock(&this.shared);
        let mut out = BytesMut::new();
        while let Some(message) = state.frames.pop_front() {
            let close = matches!(message, Message::Close(_));
            if let Err(error) = this.codec.encode(message, &mut out) {
                return Poll::Ready(Some(Err(error)));
            }
            if close {
                state.frames.clear();
                break;
            }
        }
        give_back_burst(&mut state.frames);
        wake(&mut state.flusher);
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(out.freeze())));
        }
        if state.finished {
            return Poll::Ready(None);
        }
        register(&mut state.writer, cx);
        Poll::Pending
    }
}

impl Drop for Body {
    /// actix-http drops the body when the socket is done with: the connection learns it.
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.gone = true;
        state.frames = VecDeque::new();
        wake(&mut state.reader);
        wake(&mut state.flusher);
    }
}

/// A message arriving in continuation frames.
struct Joining {
    text: bool,
    pieces: BytesMut,
}

/// What the client sends.
pub struct Inbox {
    payload: Payload,
    shared: Shared,
    /// Bytes read and not yet decoded (unallocated between frames).
    buffer: BytesMut,
    codec: Codec,
    joining: Option<Joining>,
    max_message: usize,
    ended: bool,
}

impl Inbox {
    fn new(payload: Payload, shared: Shared, max_message: usize) -> Self {
        Self {
            payload,
            shared,
            buffer: BytesMut::new(),
            codec: Codec::new().max_size(max_message),
            joining: None,
            max_message,
            ended: false,
        }
    }

    /// The next message; `None` once the client closed or the socket is gone. After an
    /// error nothing more is read.
    pub async fn recv(&mut self) -> Option<Result<Incoming, ProtocolError>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming, ProtocolError>>> {
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(frame)) => {
                    if self.buffer.is_empty() {
                        // Let go of the read buffer the bytes came in.
                        self.buffer = BytesMut::new();
                    }
                    match self.join(frame) {
                        Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                        Ok(None) => continue,
                        Err(error) => return Poll::Ready(Some(Err(self.fail(error)))),
                    }
                }
                Ok(None) => {}
                Err(error) => return Poll::Ready(Some(Err(self.fail(error)))),
            }
            if self.ended {
                return Poll::Ready(None);
            }
            {
                let mut state = lock(&self.shared);
                if state.gone {
                    drop(state);
                    self.ended = true;
                    self.buffer = BytesMut::new();
                    return Poll::Ready(None);
                }
                register(&mut state.reader, cx);
            }
            match Pin::new(&mut self.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if self.buffer.is_empty() {
                        self.buffer = BytesMut::from(bytes);
                    } else {
                        self.buffer.extend_from_slice(&bytes);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(Err(
                        self.fail(ProtocolError::Io(io::Error::other(error)))
                    )));
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        self.ended = true;
        self.buffer = BytesMut::new();
        self.joining = None;
        error
    }

    /// A whole message, or `None` while a fragmented one is still arriving.
    fn join(&mut self, frame: Frame) -> Result<Option<Incoming>, ProtocolError> {
        let (first, piece, last) = match frame {
            Frame::Text(bytes) => return utf8(bytes).map(|t| Some(Incoming::Text(t))),
            Frame::Binary(bytes) => return Ok(Some(Incoming::Binary(bytes))),
            Frame::Ping(bytes) => return Ok(Some(Incoming::Ping(bytes))),
            Frame::Pong(bytes) => return Ok(Some(Incoming::Pong(bytes))),
            Frame::Close(_) => return Ok(Some(Incoming::Close)),
            Frame::Continuation(Item::FirstText(piece)) => (Some(true), piece, false),
            Frame::Continuation(Item::FirstBinary(piece)) => (Some(false), piece, false),
            Frame::Continuation(Item::Continue(piece)) => (None, piece, false),
            Frame::Continuation(Item::Last(piece)) => (None, piece, true),
        };
        // The codec checks the order (a first frame, then continuations, then a last one).
        let joining = match (first, &mut self.joining) {
            (Some(text), _) => self.joining.insert(Joining {
                text,
                pieces: BytesMut::new(),
            }),
            (None, Some(joining)) => joining,
            (None, None) => return Err(ProtocolError::ContinuationNotStarted),
        };
        if joining.pieces.len() + piece.len() > self.max_message {
            return Err(ProtocolError::Overflow);
        }
        joining.pieces.extend_from_slice(&piece);
        if !last {
            return Ok(None);
        }
        let (is_text, whole) = (joining.text, std::mem::take(&mut joining.pieces).freeze());
        self.joining = None;
        Ok(Some(if is_text {
            Incoming::Text(utf8(whole)?)
        } else {
            Incoming::Binary(whole)
        }))
    }
}

/// A text frame's payload, which must be UTF-8.
fn utf8(bytes: Bytes) -> Result<ByteString, ProtocolError> {
    ByteString::try_from(bytes)
        .map_err(|error| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, error)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_http::ws::{CloseCode, CloseReason};
    use actix_web::body::BoxBody;
    use actix_web::error::PayloadError;
    use actix_web::test::TestRequest;
    use futures_util::StreamExt;
    use futures_util::stream;

    use super::*;

    const MAX: usize = 64;

    fn request() -> HttpRequest {
        TestRequest::get()
            .insert_header((header::UPGRADE, "websocket"))
            .insert_header((header::CONNECTION, "Upgrade"))
            .insert_header((header::SEC_WEBSOCKET_VERSION, "13"))
            .insert_header((header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="))
            .to_http_request()
    }

    /// What a client sends: masked frames, as many as given, then a socket that stays open.
    fn client_frames(messages: Vec<Message>) -> Payload {
        let mut codec = Codec::new().client_mode();
        let mut bytes = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut bytes).unwrap();
        }
        // One byte at a time: frames arrive cut anywhere.
        let pieces: Vec<Result<Bytes, PayloadError>> = bytes
            .freeze()
            .chunks(1)
            .map(|b| Ok(Bytes::copy_from_slice(b)))
            .collect();
        Payload::Stream {
            payload: Box::pin(stream::iter(pieces).chain(stream::pending())),
        }
    }

    fn open(payload: Payload, capacity: usize) -> (BoxBody, Outbox, Inbox) {
        let (response, outbox, inbox) =
            accept(&request(), payload, Some("bearer"), capacity, MAX).unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(
            response
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .unwrap(),
            "bearer"
        );
        (response.into_body(), outbox, inbox)
    }

    /// The frames the body writes next, decoded as the client would.
    async fn written(body: &mut BoxBody) -> Option<Vec<Frame>> {
        let bytes = poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)).await?;
        let mut bytes = BytesMut::from(bytes.unwrap());
        let mut codec = Codec::new().client_mode();
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut bytes).unwrap() {
            frames.push(frame);
        }
        assert!(bytes.is_empty());
        Some(frames)
    }

    fn piece(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[actix_web::test]
    async fn messages_are_read_whole_and_fragments_joined() {
        let (_body, _outbox, mut inbox) = open(
            client_frames(vec![
                Message::Text("hello".into()),
                Message::Continuation(Item::FirstText(piece("hé"))),
                Message::Ping(piece("p")),
                Message::Continuation(Item::Continue(piece("l"))),
                Message::Continuation(Item::Last(piece("lo"))),
                Message::Binary(piece("raw")),
                Message::Continuation(Item::FirstBinary(piece("a"))),
                Message::Continuation(Item::Last(piece("b"))),
                Message::Pong(piece("q")),
                Message::Close(None),
            ]),
            8,
        );
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(inbox.recv().await.unwrap().unwrap());
        }
        assert_eq!(
            got,
            [
                Incoming::Text("hello".into()),
                // A control frame may come between the fragments of a message.
                Incoming::Ping(piece("p")),
                Incoming::Text("héllo".into()),
                Incoming::Binary(piece("raw")),
                Incoming::Binary(piece("ab")),
                Incoming::Pong(piece("q")),
                Incoming::Close,
            ]
        );
    }

    #[actix_web::test]
    async fn oversized_and_broken_messages_are_refused() {
        let big = "x".repeat(MAX / 2 + 1);
        fn raw(bytes: &'static [u8]) -> Payload {
            Payload::Stream {
                payload: Box::pin(
                    stream::iter([Ok(Bytes::from_static(bytes))]).chain(stream::pending()),
                ),
            }
        }
        let cases = [
            // Two fragments, each allowed, together too large.
            (
                client_frames(vec![
                    Message::Continuation(Item::FirstText(piece(&big))),
                    Message::Continuation(Item::Last(piece(&big))),
                ]),
                true,
            ),
            // One frame too large.
            (
                client_frames(vec![Message::Text("x".repeat(MAX + 1).into())]),
                true,
            ),
            // A text frame (opcode 1) of one byte, 0xff, masked with zeros: not UTF-8.
            (raw(&[0x81, 0x81, 0, 0, 0, 0, 0xff]), false),
            // A last continuation frame (opcode 0) with no first one.
            (raw(&[0x80, 0x81, 0, 0, 0, 0, b'x']), false),
        ];
        for (i, (payload, overflow)) in cases.into_iter().enumerate() {
            let (_body, _outbox, mut inbox) = open(payload, 8);
            let error = inbox.recv().await.unwrap().unwrap_err();
            assert_eq!(
                matches!(error, ProtocolError::Overflow),
                overflow,
                "case {i}: {error:?}"
            );
            // Nothing more is read after an error.
            assert!(inbox.recv().await.is_none(), "case {i}");
        }
    }

    #[actix_web::test]
    async fn frames_go_out_in_order_and_a_close_frame_is_the_last() {
        let (mut body, outbox, _inbox) = open(client_frames(vec![]), 4);
        outbox.send(Message::Text("one".into())).unwrap();
        outbox.send(Message::Ping(Bytes::new())).unwrap();
        let frames = written(&mut body).await.unwrap();
        assert_eq!(
            frames,
            [Frame::Text(piece("one")), Frame::Ping(Bytes::new())]
        );
        outbox.flushed().await;
        let reason = CloseReason {
            code: CloseCode::Away,
            description: Some("bye".to_owned()),
        };
        outbox.send(Message::Close(Some(reason.clone()))).unwrap();
        assert_eq!(
            outbox.send(Message::Text("late".into())),
            Err(Refused::Gone)
        );
        drop(outbox);
        assert_eq!(
            written(&mut body).await.unwrap(),
            [Frame::Close(Some(reason))]
        );
        assert!(
            written(&mut body).await.is_none(),
            "the body ends after a close"
        );
    }

    #[actix_web::test]
    async fn a_client_that_does_not_read_fills_the_queue() {
        let (mut body, outbox, _inbox) = open(client_frames(vec![]), 3);
        for i in 0..3 {
            outbox.send(Message::Text(i.to_string().into())).unwrap();
        }
        assert_eq!(outbox.send(Message::Text("4".into())), Err(Refused::Full));
        assert_eq!(written(&mut body).await.unwrap().len(), 3);
        outbox.send(Message::Text("4".into())).unwrap();
        // A connection that ends without a close frame ends the body, unsent frames dropped.
        drop(outbox);
        assert!(written(&mut body).await.is_none());
    }

    #[actix_web::test]
    async fn the_connection_learns_when_the_socket_goes() {
        let (body, outbox, mut inbox) = open(client_frames(vec![]), 3);
        outbox.send(Message::Text("never written".into())).unwrap();
        let reader = actix_web::rt::spawn(async move { inbox.recv().await.is_none() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !reader.is_finished(),
            "an open, silent socket has nothing to read"
        );
        // actix-http drops the answer's body when the connection closes.
        drop(body);
        let ended = tokio::time::timeout(Duration::from_secs(5), reader).await;
        assert!(ended.unwrap().unwrap(), "the reader ends");
        tokio::time::timeout(Duration::from_secs(5), outbox.flushed())
            .await
            .unwrap();
        assert_eq!(outbox.send(Message::Text("x".into())), Err(Refused::Gone));
    }

    #[actix_web::test]
    async fn a_request_that_is_not_a_handshake_is_refused() {
        let plain = TestRequest::get().to_http_request();
        assert!(accept(&plain, client_frames(vec![]), None, 1, MAX).is_err());
    }
}
