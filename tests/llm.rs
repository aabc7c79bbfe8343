//! The language-model adapters against fake models that speak the real wire formats over
//! real HTTP: OpenAI-compatible SSE and Ollama NDJSON, cut into awkward pieces, with every
//! line-end style, usage-only final chunks, refusals, garbage, silence and dropped
//! connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use companion::platform::llm::{
    Event, LanguageModel, LlmError, Message, Request, Role, Usage, from_settings,
};
use futures_util::StreamExt;
use support::fake_llm::{End, FakeModel, Reply, cut, ollama_lines, openai_events};

fn model(provider: &str, url: &str, extra: &[(&str, &str)]) -> Arc<dyn LanguageModel> {
    let mut vars = vec![
        ("COMPANION__LLM__PROVIDER", provider),
        ("COMPANION__LLM__BASE_URL", url),
        ("COMPANION__LLM__MODEL", "fake-model"),
        ("COMPANION__LLM__API_KEY", "sk-test-key"),
    ];
    vars.extend_from_slice(extra);
    let settings = support::test_settings("postgres://unused/db", &vars);
    from_settings(&settings.llm).unwrap()
}

fn request() -> Request {
    Request {
        messages: vec![
            Message::new(Role::System, "You are Luna."),
            Message::new(Role::User, "Hello!"),
        ]
        .into(),
        max_tokens: 64,
        temperature: 0.5,
        stop: vec!["\nUser:".into()],
        seed: 3,
        speaker: None,
    }
}

/// The text and the last event (or the error) of a whole reply.
async fn run(model: &dyn LanguageModel) -> (String, Result<Event, LlmError>) {
    let mut text = String::new();
    let mut stream = model.stream(request());
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Text(piece)) => text.push_str(&piece),
            other => {
                assert!(stream.next().await.is_none(), "nothing after the end");
                return (text, other);
            }
        }
    }
    panic!("the stream ended without a final event")
}

fn finished(prompt: u32, completion: u32) -> Result<Event, LlmError> {
    Ok(Event::Finished {
        reason: "stop".into(),
        usage: Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        }),
    })
}

#[tokio::test]
async fn openai_streams_are_read_whatever_the_line_ends_and_the_cuts() {
    let texts = ["Hel", "lo, ", "tra", "veller — ☾", "!"];
    for sep in ["\n\n", "\r\n\r\n", "\r\r"] {
        for size in [1, 7, 64, 4096] {
            let body = openai_events(&texts, sep, (11, 5));
            let fake = FakeModel::start(move |_| {
                Reply::new("text/event-stream", cut(&body, size)).paced(Duration::ZERO)
            })
            .await;
            let (text, end) = run(&*model("openai", &fake.url, &[])).await;
            assert_eq!(text, texts.concat(), "sep {sep:?}, cut {size}");
            assert_eq!(end, finished(11, 5), "sep {sep:?}, cut {size}");
        }
    }
}

#[tokio::test]
async fn openai_gets_the_request_it_expects() {
    let body = openai_events(&["ok"], "\n\n", (1, 1));
    let fake = FakeModel::start(move |_| Reply::new("text/event-stream", vec![body.clone()])).await;
    assert!(run(&*model("openai", &fake.url, &[])).await.1.is_ok());
    let sent = &fake.requests()[0];
    assert_eq!(sent["model"], "fake-model");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["stop"][0], "\nUser:");
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][1]["content"], "Hello!");
}

#[tokio::test]
async fn a_usage_chunk_with_null_choices_and_no_done_still_finishes() {
    let body = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
                data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n\
                data: {\"choices\":null,\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
    let fake = FakeModel::start(move |_| Reply::new("text/event-stream", vec![body.into()])).await;
    let (text, end) = run(&*model("openai", &fake.url, &[])).await;
    assert_eq!(text, "Hi");
    assert_eq!(
        end,
        Ok(Event::Finished {
            reason: "length".into(),
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 1
            })
        })
    );
}

#[tokio::test]
async fn ollama_lines_are_read_whatever_the_cuts() {
    let texts = ["Bon", "jour", " à toi", "."];
    for size in [1, 5, 4096] {
        let body = ollama_lines(&texts, (20, 4));
        let fake = FakeModel::start(move |_| {
            Reply::new("application/x-ndjson", cut(&body, size)).paced(Duration::ZERO)
        })
        .await;
        let (text, end) = run(&*model("ollama", &fake.url, &[])).await;
        assert_eq!(text, texts.concat(), "cut {size}");
        assert_eq!(end, finished(20, 4), "cut {size}");
        let sent = &fake.requests()[0];
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["options"]["num_predict"], 64);
    }
}

/// A model server that keeps its connections open is asked again on the same connection:
/// the next reply does not wait for a new TCP (or TLS) handshake. The body's end comes
/// 30 ms after the last event, so the reply has ended by then and its connection must still
/// be read to its end.
#[tokio::test]
async fn replies_reuse_the_connection_to_the_model() {
    let answers = [
        (
            "openai",
            openai_events(&["Hi"], "\n\n", (3, 1)),
            "text/event-stream",
        ),
        (
            "ollama",
            ollama_lines(&["Hi"], (3, 1)),
            "application/x-ndjson",
        ),
    ];
    for (provider, body, content_type) in answers {
        let fake = FakeModel::start(move |_| {
            Reply::new(content_type, cut(&body, 16))
                .paced(Duration::from_millis(2))
                .then(End::KeepAlive)
                .last_pause(Duration::from_millis(30))
        })
        .await;
        let model = model(provider, &fake.url, &[]);
        for _ in 0..3 {
            let (text, end) = run(&*model).await;
            assert_eq!(text, "Hi", "{provider}");
            assert_eq!(end, finished(3, 1), "{provider}");
            // The next message comes later: the end of this answer's body has been read
            // in the background by then.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(fake.requests().len(), 3, "{provider}");
        assert_eq!(
            fake.connections(),
            1,
            "{provider}: one connection for three replies"
        );
    }
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_is_an_error_after_the_text_so_far() {
    let body = openai_events(&["one ", "two ", "three"], "\n\n", (1, 3));
    let half = body[..body.len() / 2].to_vec();
    let fake = FakeModel::start(move |_| Reply::new("text/event-stream", vec![half.clone()])).await;
    let (text, end) = run(&*model("openai", &fake.url, &[])).await;
    assert!(!text.is_empty());
    assert_eq!(end, Err(LlmError::Cut));

    let lines = ollama_lines(&["a", "b"], (1, 2));
    let first_line = lines[..lines.iter().position(|&b| b == b'\n').unwrap() + 1].to_vec();
    let fake =
        FakeModel::start(move |_| Reply::new("application/x-ndjson", vec![first_line.clone()]))
            .await;
    let (text, end) = run(&*model("ollama", &fake.url, &[])).await;
    assert_eq!(text, "a");
    assert_eq!(end, Err(LlmError::Cut));
}

#[tokio::test]
async fn refusals_garbage_and_unreachable_models_are_clear_errors() {
    let fake =
        FakeModel::start(|_| Reply::status(429, r#"{"error":{"message":"slow down"}}"#)).await;
    let (_, end) = run(&*model("openai", &fake.url, &[])).await;
    let Err(LlmError::Refused { status, .. }) = end else {
        panic!("{end:?}")
    };
    assert_eq!(status, 429);
    // What the upstream said stays out of the message a user may see.
    assert!(
        !LlmError::Refused {
            status,
            detail: "slow down".into()
        }
        .to_string()
        .contains("slow")
    );

    let fake =
        FakeModel::start(|_| Reply::new("text/event-stream", vec![b"data: {oops\n\n".to_vec()]))
            .await;
    assert!(matches!(
        run(&*model("openai", &fake.url, &[])).await.1,
        Err(LlmError::Garbled(_))
    ));
    let fake =
        FakeModel::start(|_| Reply::new("application/x-ndjson", vec![b"<html>\n".to_vec()])).await;
    assert!(matches!(
        run(&*model("ollama", &fake.url, &[])).await.1,
        Err(LlmError::Garbled(_))
    ));

    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    assert_eq!(
        run(&*model("openai", &url, &[])).await.1,
        Err(LlmError::Unreachable)
    );
}

#[tokio::test]
async fn a_failed_connection_before_the_first_token_is_tried_again() {
    let body = openai_events(&["second time lucky"], "\n\n", (1, 3));
    let fake = FakeModel::start(move |n| {
        let reply = Reply::new("text/event-stream", vec![body.clone()]);
        if n == 0 { reply.then(End::Drop) } else { reply }
    })
    .await;
    let (text, end) = run(&*model("openai", &fake.url, &[])).await;
    assert_eq!(text, "second time lucky");
    assert!(end.is_ok());
    assert_eq!(fake.connections(), 2);
}

#[tokio::test]
async fn silence_times_out_and_closes_the_upstream_connection() {
    let timeouts = [
        ("COMPANION__LLM__FIRST_TOKEN_TIMEOUT_MS", "300"),
        ("COMPANION__LLM__IDLE_TIMEOUT_MS", "300"),
    ];
    // Headers, then nothing.
    let fake =
        FakeModel::start(|_| Reply::new("text/event-stream", Vec::new()).then(End::Hang)).await;
    let (_, end) = run(&*model("openai", &fake.url, &timeouts)).await;
    assert_eq!(end, Err(LlmError::FirstTokenTimeout));
    support::eventually(Duration::from_secs(5), || async {
        (fake.closed_by_client() == 1).then_some(())
    })
    .await;

    // Some text, then nothing.
    let start = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n".to_vec();
    let fake = FakeModel::start(move |_| {
        Reply::new("text/event-stream", vec![start.clone()]).then(End::Hang)
    })
    .await;
    let (text, end) = run(&*model("openai", &fake.url, &timeouts)).await;
    assert_eq!((text.as_str(), end), ("Hi", Err(LlmError::IdleTimeout)));
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_upstream_request() {
    // The role chunk and one text chunk, then silence.
    let body = String::from_utf8(openai_events(&["a "], "\n\n", (1, 3))).unwrap();
    let finish = body.find("\"stop\"").unwrap();
    let start = body.as_bytes()[..body[..finish].rfind("data: ").unwrap()].to_vec();
    let fake = FakeModel::start(move |_| {
        Reply::new("text/event-stream", vec![start.clone()]).then(End::Hang)
    })
    .await;
    let model = model("openai", &fake.url, &[]);
    let mut stream = model.stream(request());
    assert!(matches!(stream.next().await, Some(Ok(Event::Text(_)))));
    drop(stream);
    support::eventually(Duration::from_secs(5), || async {
        (fake.closed_by_client() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_offline_engine_is_the_default_and_says_what_it_is() {
    let settings = support::test_settings("postgres://unused/db", &[]);
    let model = from_settings(&settings.llm).unwrap();
    assert!(
        model.name().contains("not a language model"),
        "{}",
        model.name()
    );
    let (text, end) = run(&*model).await;
    assert!(!text.is_empty());
    assert!(end.is_ok());
}
