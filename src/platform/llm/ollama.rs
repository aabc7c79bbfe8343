//! Ollama's native chat API: `POST {base}/api/chat` answers newline-delimited JSON, one
//! object per piece (`message.content`), the last with `done: true`, `done_reason`,
//! `prompt_eval_count` and `eval_count`; a failure is an object with `error`.

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::io::StreamReader;

use super::{
    Event, EventStream, LanguageModel, LlmError, Message, Request, Usage, drain, http_client,
    post_and_read,
};
use crate::config::LlmSettings;

/// A line longer than this is not something Ollama sends.
const MAX_LINE: usize = 1024 * 1024;

pub struct Ollama {
    client: reqwest::Client,
    url: String,
    model: String,
    retries: u32,
}

impl Ollama {
    pub fn new(settings: &LlmSettings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: http_client(settings)?,
            url: format!("{}/api/chat", settings.base_url.trim_end_matches('/')),
            model: settings.model.clone(),
            retries: settings.retries,
        })
    }
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
    #[serde(default)]
    eval_count: Option<u32>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
}

/// The events of one NDJSON line, and whether the reply is over.
fn read(line: &str) -> (Vec<Result<Event, LlmError>>, bool) {
    if line.trim().is_empty() {
        return (Vec::new(), false);
    }
    let line: Line = match serde_json::from_str(line) {
        Ok(line) => line,
        Err(error) => {
            tracing::warn!(%error, "unreadable line from Ollama");
            return (vec![Err(LlmError::Garbled(error.to_string()))], true);
        }
    };
    if let Some(error) = line.error {
        tracing::warn!(%error, "Ollama reported an error");
        return (vec![Err(LlmError::Garbled("error line".into()))], true);
    }
    let mut events = Vec::new();
    if let Some(message) = line.message
        && !message.content.is_empty()
    {
        events.push(Ok(Event::Text(message.content)));
    }
    if line.done {
        let usage = match (line.prompt_eval_count, line.eval_count) {
            (None, None) => None,
            (prompt, completion) => Some(Usage {
                prompt_tokens: prompt.unwrap_or(0),
                completion_tokens: completion.unwrap_or(0),
            }),
        };
        events.push(Ok(Event::Finished {
            reason: line.done_reason.unwrap_or_else(|| "stop".to_owned()),
            usage,
        }));
    }
    (events, line.done)
}

impl LanguageModel for Ollama {
    fn name(&self) -> &str {
        &self.model
    }

    fn stream(&self, request: Request) -> EventStream {
        // Serialized once, straight from the request.
        let body = Body {
            model: &self.model,
            messages: &request.messages,
            stream: true,
            options: Options {
                num_predict: request.max_tokens,
                temperature: request.temperature,
                seed: request.seed,
                stop: &request.stop,
            },
        };
        let http = self.client.post(&self.url).json(&body);
        post_and_read(http, self.retries, lines)
    }
}

/// The body of `POST /api/chat`.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    options: Options<'a>,
}

#[derive(Serialize)]
struct Options<'a> {
    num_predict: u32,
    temperature: f32,
    seed: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
}

fn lines(response: reqwest::Response) -> EventStream {
    let bytes = response.bytes_stream().map_err(std::io::Error::other);
    let lines = FramedRead::new(
        StreamReader::new(bytes),
        LinesCodec::new_with_max_length(MAX_LINE),
    );
    stream::unfold(Some(lines), |state| async move {
        let mut lines = state?;
        loop {
            match lines.next().await {
                Some(Ok(line)) => {
                    let (events, over) = read(&line);
                    if over {
                        drain(lines);
                        return Some((events, None));
                    }
                    if !events.is_empty() {
                        return Some((events, Some(lines)));
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "Ollama's stream broke");
                    return Some((vec![Err(LlmError::Cut)], None));
                }
                None => return Some((vec![Err(LlmError::Cut)], None)),
            }
        }
    })
    .flat_map(stream::iter)
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_text_and_the_last_gives_reason_and_usage() {
        let (events, over) =
            read(r#"{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}"#);
        assert_eq!(events, vec![Ok(Event::Text("Hi".into()))]);
        assert!(!over);
        let (events, over) = read(
            r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length","prompt_eval_count":12,"eval_count":3}"#,
        );
        assert!(over);
        assert_eq!(
            events,
            vec![Ok(Event::Finished {
                reason: "length".into(),
                usage: Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 3
                })
            })]
        );
        assert!(matches!(read("{oops").0[0], Err(LlmError::Garbled(_))));
        assert!(matches!(
            read(r#"{"error":"model not found"}"#).0[0],
            Err(LlmError::Garbled(_))
        ));
    }
}
