//! Language models behind one trait: given role/content messages and options, a stream of
//! text pieces that ends with a finish reason and the token usage.
//!
//! - `openai`: any OpenAI-compatible Chat Completions server, streamed as SSE.
//! - `ollama`: Ollama's native `/api/chat`, streamed as NDJSON.
//! - `offline`: the built-in scripted persona responder (the default): no network, the same
//!   reply for the same seed, and a model name that says what it is.
//!
//! Every adapter is wrapped in [`timed`]: a first-token, an idle and a total timeout, so a
//! silent upstream ends the reply with an error instead of hanging it. Dropping the stream
//! cancels the upstream request (the HTTP connection is closed).
//!
//! A reply that ends normally leaves its connection to the client's pool: what follows the
//! last event (a chunked body's end) is read in the background ([`drain`]), so the next
//! reply to the same server starts on an open connection instead of a new TCP (and TLS)
//! handshake.

mod offline;
mod ollama;
mod openai;
mod timing;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::{LlmProvider, LlmSettings};

pub use offline::OfflineEngine;
pub use timing::{Timeouts, timed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a request. Its text is shared (a conversation's history goes into every
/// prompt without being copied), and so is its JSON form (`{"role": …, "content": …}`, the
/// same for every adapter and for a stored prompt): made the first time the message is
/// serialized, then written as it is, so a history sent with every reply is encoded once.
#[derive(Clone)]
pub struct Message {
    pub role: Role,
    pub content: Arc<str>,
    json: Arc<OnceLock<Box<RawValue>>>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<Arc<str>>) -> Self {
        Self {
            role,
            content: content.into(),
            json: Arc::default(),
        }
    }

    fn encoded(&self) -> Result<&RawValue, serde_json::Error> {
        if let Some(json) = self.json.get() {
            return Ok(json);
        }
        #[derive(Serialize)]
        struct Plain<'a> {
            role: Role,
            content: &'a str,
        }
        let json = serde_json::value::to_raw_value(&Plain {
            role: self.role,
            content: &self.content,
        })?;
        Ok(self.json.get_or_init(|| json))
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.encoded()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role && self.content == other.content
    }
}

impl Eq for Message {}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("role", &self.role)
            .field("content", &self.content)
            .finish()
    }
}

/// What the offline engine speaks from. Real models read the same things in the prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Speaker {
    pub name: String,
    pub user_name: String,
    pub greeting: String,
    pub tone: String,
    pub traits: Vec<String>,
    pub interests: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Request {
    /// Shared, so a caller can keep what it sent (chat stores a reply's prompt after the
    /// request left) without copying it.
    pub messages: Arc<[Message]>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub stop: Vec<String>,
    /// Makes the offline engine (and models that honour a seed) repeatable.
    pub seed: u64,
    pub speaker: Option<Speaker>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A piece of the reply, in order.
    Text(String),
    /// The last event: why the reply ended (`stop`, `length`, …) and what it cost, when the
    /// model said.
    Finished {
        reason: String,
        usage: Option<Usage>,
    },
}

/// Why a reply failed. The `Display` text is for the person chatting: it never carries what
/// the upstream said (that goes to the log), since it may hold keys or internal addresses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("the language model could not be reached")]
    Unreachable,
    #[error("the language model did not start answering in time")]
    FirstTokenTimeout,
    #[error("the language model stopped sending in the middle of the reply")]
    IdleTimeout,
    #[error("the reply took longer than allowed")]
    TotalTimeout,
    #[error("the language model refused the request (HTTP {status})")]
    Refused { status: u16, detail: String },
    #[error("the language model's answer could not be read")]
    Garbled(String),
    #[error("the language model's answer ended before it was finished")]
    Cut,
}

impl LlmError {
    /// Every code [`LlmError::code`] can return (metrics start each at zero).
    pub const CODES: [&'static str; 7] = [
        "llm_unreachable",
        "llm_first_token_timeout",
        "llm_idle_timeout",
        "llm_total_timeout",
        "llm_refused",
        "llm_garbled",
        "llm_cut",
    ];

    /// A stable code for the failed message's reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable => "llm_unreachable",
            Self::FirstTokenTimeout => "llm_first_token_timeout",
            Self::IdleTimeout => "llm_idle_timeout",
            Self::TotalTimeout => "llm_total_timeout",
            Self::Refused { .. } => "llm_refused",
            Self::Garbled(_) => "llm_garbled",
            Self::Cut => "llm_cut",
        }
    }
}

pub type EventStream = BoxStream<'static, Result<Event, LlmError>>;

pub trait LanguageModel: Send + Sync {
    /// The model, as people and logs see it.
    fn name(&self) -> &str;

    /// Starts a reply. The stream yields text pieces, then `Finished`, or an error; nothing
    /// after either. Dropping it cancels the upstream request.
    fn stream(&self, request: Request) -> EventStream;
}

/// A rough token count (about four characters per token for English text). Prompt budgets
/// only need an estimate; the upstream reports the real usage.
pub fn estimate_tokens(text: &str) -> u32 {
    estimate_tokens_of(u64::try_from(text.chars().count()).unwrap_or(u64::MAX))
}

/// [`estimate_tokens`] of a text whose length in characters is known already.
pub fn estimate_tokens_of(chars: u64) -> u32 {
    u32::try_from(chars).unwrap_or(u32::MAX).div_ceil(4)
}

#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client for the language model: {0}")]
pub struct LlmBuildError(#[from] reqwest::Error);

/// The configured model, wrapped in the configured timeouts.
pub fn from_settings(settings: &LlmSettings) -> Result<Arc<dyn LanguageModel>, LlmBuildError> {
    let timeouts = Timeouts {
        first_token: Duration::from_millis(settings.first_token_timeout_ms),
        idle: Duration::from_millis(settings.idle_timeout_ms),
        total: Duration::from_millis(settings.total_timeout_ms),
    };
    let inner: Arc<dyn LanguageModel> = match settings.provider {
        LlmProvider::Offline => Arc::new(OfflineEngine::new(Duration::from_millis(
            settings.offline_word_delay_ms,
        ))),
        LlmProvider::Openai => Arc::new(openai::OpenAi::new(settings)?),
        LlmProvider::Ollama => Arc::new(ollama::Ollama::new(settings)?),
    };
    Ok(Arc::new(timing::Timed { inner, timeouts }))
}

/// The HTTP client the remote adapters share: connect timeout from the settings, no overall
/// timeout (streams are timed by [`timed`]).
fn http_client(settings: &LlmSettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .build()
}

/// Sends `request`, trying again (up to `retries` more times, with a short pause) when the
/// connection itself fails; any answer, even an error status, is returned as is.
async fn send_with_retries(
    request: reqwest::RequestBuilder,
    retries: u32,
) -> Result<reqwest::Response, LlmError> {
    let mut attempt = 0;
    loop {
        let Some(this) = request.try_clone() else {
            return Err(LlmError::Unreachable);
        };
        match this.send().await {
            Ok(response) => return Ok(response),
            Err(error) if attempt < retries && (error.is_connect() || error.is_request()) => {
                attempt += 1;
                tracing::warn!(%error, attempt, "language model connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(error) => {
                tracing::warn!(%error, "language model unreachable");
                return Err(LlmError::Unreachable);
            }
        }
    }
}

/// How long what follows an answer's last event may take to arrive before its connection is
/// given up (closed, not pooled).
const DRAIN_FOR: Duration = Duration::from_secs(1);

/// How many more reads an answer may take after its last event (a server streaming on
/// after `[DONE]` is not waited for).
const DRAIN_READS: usize = 16;

/// Reads the rest of an answer whose last event was seen, in the background: once its body
/// has ended, the HTTP client keeps the connection for the next request. The reply's stream
/// ends at once; nothing read here is used.
fn drain<S>(rest: S)
where
    S: futures_util::Stream + Send + Unpin + 'static,
{
    use futures_util::StreamExt;
    tokio::spawn(async move {
        let rest = rest.take(DRAIN_READS).for_each(|_| async {});
        let _ = tokio::time::timeout(DRAIN_FOR, rest).await;
    });
}

/// Sends `request` (with [`send_with_retries`]) and reads a successful answer with `read`;
/// an error status or a failed connection becomes the stream's only item.
fn post_and_read(
    request: reqwest::RequestBuilder,
    retries: u32,
    read: fn(reqwest::Response) -> EventStream,
) -> EventStream {
    use futures_util::{StreamExt, stream};
    stream::once(async move {
        let response = send_with_retries(request, retries).await?;
        if !response.status().is_success() {
            return Err(refused(response).await);
        }
        Ok(response)
    })
    .flat_map(move |response| match response {
        Err(error) => stream::iter([Err(error)]).boxed(),
        Ok(response) => read(response),
    })
    .boxed()
}

/// An error status: the upstream's explanation goes to the log, a short one to the caller.
async fn refused(response: reqwest::Response) -> LlmError {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let detail: String = body.chars().take(500).collect();
    tracing::warn!(status, %detail, "language model refused the request");
    LlmError::Refused { status, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_written_as_role_and_content_however_often_and_by_its_clones() {
        let message = Message::new(Role::User, "Say \"hi\"\nthen go\u{1F319}");
        let want = r#"{"role":"user","content":"Say \"hi\"\nthen go🌙"}"#;
        assert_eq!(serde_json::to_string(&message).unwrap(), want);
        assert_eq!(serde_json::to_string(&message).unwrap(), want);
        let copy = message.clone();
        assert!(
            Arc::ptr_eq(&copy.json, &message.json),
            "clones share the encoding"
        );
        let list = vec![copy, Message::new(Role::System, "")];
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            serde_json::json!([
                {"role": "user", "content": "Say \"hi\"\nthen go🌙"},
                {"role": "system", "content": ""}
            ])
        );
    }
}
