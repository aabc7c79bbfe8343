//! OpenAI-compatible Chat Completions, streamed: `POST {base}/chat/completions` with
//! `stream: true` and `stream_options.include_usage`. The answer is Server-Sent Events
//! (parsed by `eventsource-stream`, which accepts `\n`, `\r\n` and `\r` line ends and events
//! split anywhere across network reads): `data: {json}` chunks with
//! `choices[0].delta.content` and `finish_reason`, a last chunk with `usage` whose `choices`
//! may be empty or null, then `data: [DONE]`.

use eventsource_stream::Eventsource;
use futures_util::{StreamExt, stream};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{
    Event, EventStream, LanguageModel, LlmError, Message, Request, Usage, drain, http_client,
    post_and_read,
};
use crate::config::LlmSettings;

pub struct OpenAi {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    retries: u32,
}

impl OpenAi {
    pub fn new(settings: &LlmSettings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: http_client(settings)?,
            url: format!(
                "{}/chat/completions",
                settings.base_url.trim_end_matches('/')
            ),
            model: settings.model.clone(),
            api_key: settings
                .api_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned()),
            retries: settings.retries,
        })
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// What the parser has learnt so far.
#[derive(Default)]
struct Progress {
    finish: Option<String>,
    usage: Option<Usage>,
}

impl Progress {
    fn finished(&mut self) -> Event {
        Event::Finished {
            reason: self.finish.take().unwrap_or_else(|| "stop".to_owned()),
            usage: self.usage.take(),
        }
    }

    /// The events one SSE `data` payload gives, and whether the reply is over.
    fn read(&mut self, data: &str) -> (Vec<Result<Event, LlmError>>, bool) {
        if data.trim() == "[DONE]" {
            return (vec![Ok(self.finished())], true);
        }
        let chunk: Chunk = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(error) => {
                tracing::warn!(%error, "unreadable chunk from the language model");
                return (vec![Err(LlmError::Garbled(error.to_string()))], true);
            }
        };
        if let Some(error) = chunk.error {
            tracing::warn!(%error, "the language model reported an error mid-stream");
            return (vec![Err(LlmError::Garbled("error event".into()))], true);
        }
        let mut events = Vec::new();
        if let Some(choice) = chunk.choices.as_ref().and_then(|c| c.first()) {
            if let Some(text) = choice.delta.as_ref().and_then(|d| d.content.as_ref())
                && !text.is_empty()
            {
                events.push(Ok(Event::Text(text.clone())));
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish = Some(reason.clone());
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            });
        }
        (events, false)
    }
}

impl LanguageModel for OpenAi {
    fn name(&self) -> &str {
        &self.model
    }

    fn stream(&self, request: Request) -> EventStream {
        // Serialized once, straight from the request (a `serde_json::Value` built first
        // copied every message of a long prompt).
        let body = Body {
            model: &self.model,
            messages: &request.messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            seed: request.seed,
            stop: &request.stop,
        };
        let mut http = self
            .client
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        post_and_read(http, self.retries, events)
    }
}

/// The body of `POST /chat/completions`.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    stream_options: StreamOptions,
    max_tokens: u32,
    temperature: f32,
    seed: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

fn events(response: reqwest::Response) -> EventStream {
    let sse = response.bytes_stream().eventsource();
    stream::unfold(Some((sse, Progress::default())), |state| async move {
        let (mut sse, mut progress) = state?;
        loop {
            match sse.next().await {
                Some(Ok(event)) => {
                    let (events, over) = progress.read(&event.data);
                    if over {
                        drain(sse);
                        return Some((events, None));
                    }
                    if !events.is_empty() {
                        return Some((events, Some((sse, progress))));
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "the language model's stream broke");
                    return Some((vec![Err(LlmError::Cut)], None));
                }
                // Some servers end without `[DONE]`: finished if a reason was given.
                None if progress.finish.is_some() => {
                    return Some((vec![Ok(progress.finished())], None));
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
    fn chunks_give_text_then_the_reason_and_usage_at_done() {
        let mut progress = Progress::default();
        let (events, over) =
            progress.read(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#);
        assert!(events.is_empty() && !over);
        let (events, _) = progress.read(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#);
        assert_eq!(events, vec![Ok(Event::Text("Hel".into()))]);
        let (events, _) = progress.read(r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#);
        assert!(events.is_empty());
        let (events, _) =
            progress.read(r#"{"choices":null,"usage":{"prompt_tokens":7,"completion_tokens":2}}"#);
        assert!(events.is_empty());
        let (events, over) = progress.read("[DONE]");
        assert!(over);
        assert_eq!(
            events,
            vec![Ok(Event::Finished {
                reason: "length".into(),
                usage: Some(Usage {
                    prompt_tokens: 7,
                    completion_tokens: 2
                })
            })]
        );
    }

    #[test]
    fn garbage_and_error_events_end_the_reply() {
        let (events, over) = Progress::default().read("not json");
        assert!(over && matches!(events[0], Err(LlmError::Garbled(_))));
        let (events, over) = Progress::default().read(r#"{"error":{"message":"overloaded"}}"#);
        assert!(over && matches!(events[0], Err(LlmError::Garbled(_))));
    }
}
