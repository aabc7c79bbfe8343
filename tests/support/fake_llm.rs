//! Language models played by a small HTTP server that speaks the real wire formats, written
//! byte by byte over TCP so a test decides exactly how the answer is cut into network reads,
//! which line ends it uses, and when the connection drops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How one request is answered.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Written one after the other, each followed by its pause, so they arrive as separate
    /// reads.
    pub pieces: Vec<(Vec<u8>, Duration)>,
    pub then: End,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Close the connection (the body ends at the close: no length, not chunked).
    Close,
    /// Keep the connection open, silent, until the client goes away.
    Hang,
    /// Accept and close at once, before any answer: a failed connection.
    Drop,
    /// Send the body chunked and keep the connection for the next request, as model
    /// servers do for clients that pool their connections.
    KeepAlive,
}

impl Reply {
    pub fn new(content_type: &'static str, pieces: Vec<Vec<u8>>) -> Self {
        Self {
            status: 200,
            content_type,
            pieces: pieces
                .into_iter()
                .map(|p| (p, Duration::from_millis(5)))
                .collect(),
            then: End::Close,
        }
    }

    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "application/json",
            pieces: vec![(body.as_bytes().to_vec(), Duration::ZERO)],
            then: End::Close,
        }
    }

    pub fn then(mut self, end: End) -> Self {
        self.then = end;
        self
    }

    pub fn paced(mut self, pause: Duration) -> Self {
        for piece in &mut self.pieces {
            piece.1 = pause;
        }
        self
    }

    /// The pause after the last piece (before the close, or the end of a chunked body).
    pub fn last_pause(mut self, pause: Duration) -> Self {
        if let Some(piece) = self.pieces.last_mut() {
            piece.1 = pause;
        }
        self
    }
}

/// The SSE body of an OpenAI-compatible streamed completion: a role chunk, one chunk per
/// text piece, the finish chunk, a usage-only chunk with `choices: []`, then `[DONE]`;
/// events separated by `sep` (`"\n\n"`, `"\r\n\r\n"` or `"\r\r"`).
pub fn openai_events(texts: &[&str], sep: &str, usage: (u32, u32)) -> Vec<u8> {
    let mut body = String::new();
    let mut event = |value: Value| {
        body.push_str("data: ");
        body.push_str(&value.to_string());
        body.push_str(sep);
    };
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
               "model": "fake", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    event(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    for text in texts {
        event(chunk(json!({"content": text}), Value::Null));
    }
    event(chunk(json!({}), json!("stop")));
    event(
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                 "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1,
                           "total_tokens": usage.0 + usage.1}}),
    );
    body.push_str("data: [DONE]");
    body.push_str(sep);
    body.into_bytes()
}

/// Ollama's NDJSON body: one line per text piece, then the `done` line.
pub fn ollama_lines(texts: &[&str], usage: (u32, u32)) -> Vec<u8> {
    let mut body = String::new();
    for text in texts {
        body.push_str(
            &json!({"model": "fake", "created_at": "2026-11-21T00:00:00Z",
                    "message": {"role": "assistant", "content": text}, "done": false})
            .to_string(),
        );
        body.push('\n');
    }
    body.push_str(
        &json!({"model": "fake", "message": {"role": "assistant", "content": ""}, "done": true,
                "done_reason": "stop", "prompt_eval_count": usage.0, "eval_count": usage.1})
        .to_string(),
    );
    body.push('\n');
    body.into_bytes()
}

/// `bytes` cut into pieces of `size` bytes (splitting JSON, `data:` prefixes and separators
/// anywhere).
pub fn cut(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

pub struct FakeModel {
    pub url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    connections: Arc<AtomicUsize>,
    closed_by_client: Arc<AtomicUsize>,
}

impl FakeModel {
    /// Serves `reply(n)` to the n-th connection (from 0).
    pub async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed_by_client = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(reply);
        let (seen, count, closed) = (
            requests.clone(),
            connections.clone(),
            closed_by_client.clone(),
        );
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let answer = reply(n);
                let (seen, closed) = (seen.clone(), closed.clone());
                tokio::spawn(async move { serve(socket, answer, seen, closed).await });
            }
        });
        Self {
            url,
            requests,
            connections,
            closed_by_client,
        }
    }

    /// The JSON bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The last JSON body received.
    pub fn last_request(&self) -> Option<Value> {
        self.requests.lock().unwrap().last().cloned()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many hanging answers saw their client close the connection.
    pub fn closed_by_client(&self) -> usize {
        self.closed_by_client.load(Ordering::SeqCst)
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Value> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < end + 4 + length {
            let read = socket.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        return serde_json::from_slice(&buffer[end + 4..end + 4 + length]).ok();
    }
}

async fn serve(
    mut socket: TcpStream,
    reply: Reply,
    seen: Arc<Mutex<Vec<Value>>>,
    closed: Arc<AtomicUsize>,
) {
    if reply.then == End::Drop {
        return;
    }
    let chunked = reply.then == End::KeepAlive;
    if chunked {
        // As model servers do for streamed answers: each piece leaves when written.
        socket.set_nodelay(true).ok();
    }
    loop {
        let Some(body) = read_request(&mut socket).await else {
            return;
        };
        seen.lock().unwrap().push(body);
        let framing = if chunked {
            "transfer-encoding: chunked"
        } else {
            "connection: close"
        };
        let head = format!(
            "HTTP/1.1 {} X\r\ncontent-type: {}\r\n{framing}\r\n\r\n",
            reply.status, reply.content_type
        );
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for (piece, pause) in &reply.pieces {
            let framed;
            let bytes = if chunked {
                framed = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                &framed
            } else {
                piece
            };
            if socket.write_all(bytes).await.is_err() || socket.flush().await.is_err() {
                return;
            }
            if !pause.is_zero() {
                tokio::time::sleep(*pause).await;
            }
        }
        if !chunked {
            break;
        }
        // The body's end: after the last piece's pause, as a server ends its response
        // once the text is all sent.
        if socket.write_all(b"0\r\n\r\n").await.is_err() {
            return;
        }
    }
    if reply.then == End::Hang {
        // Wait for the client to close its side.
        let mut byte = [0u8; 1];
        loop {
            match socket.read(&mut byte).await {
                Ok(0) | Err(_) => {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(_) => {}
            }
        }
    }
}
