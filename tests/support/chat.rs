//! Helpers for the chat tests (HTTP and WebSocket).

use std::time::Duration;

use serde_json::{Value, json};

use super::fake_llm::{FakeModel, Reply, openai_events};
use super::{TestApp, TestUser};

/// Luna, a public starter character.
pub const LUNA: &str = "01930000-0000-7000-8000-000000000001";

/// Starts a conversation with `character` and returns its id and first messages.
pub async fn start(
    app: &TestApp,
    user: &TestUser,
    character: &str,
    initial: Option<&str>,
) -> (String, Vec<Value>) {
    let mut request = json!({ "characterId": character });
    if let Some(text) = initial {
        request["initialMessage"] = json!(text);
    }
    let response = app
        .send_auth(
            reqwest::Method::POST,
            "/api/v1/conversations",
            &user.token,
            &request,
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["conversation"]["id"].as_str().unwrap().to_owned();
    (id, created["messages"].as_array().unwrap().clone())
}

/// Settings that make replies come from the OpenAI-compatible model at `url`.
pub fn fake_settings(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("COMPANION__LLM__PROVIDER", "openai".to_owned()),
        ("COMPANION__LLM__BASE_URL", url.to_owned()),
        ("COMPANION__LLM__MODEL", "fake-model".to_owned()),
        ("COMPANION__LLM__FIRST_TOKEN_TIMEOUT_MS", "2000".to_owned()),
    ]
}

/// A server whose replies come from the model at `url`, with `extra` settings.
pub async fn spawn_with_model(url: &str, extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars = fake_settings(url);
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_with_vars(&vars).await
}

/// `n` pieces `w0 `, `w1 `, … : what a paced model says.
pub fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i} ")).collect()
}

/// `pieces` as OpenAI SSE events, one per element (one network write each when paced).
pub fn sse_events(pieces: &[String]) -> Vec<Vec<u8>> {
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let body = openai_events(&refs, "\n\n", (5, u32::try_from(pieces.len()).unwrap()));
    String::from_utf8(body)
        .unwrap()
        .split_inclusive("\n\n")
        .map(|e| e.as_bytes().to_vec())
        .collect()
}

/// A model that streams `pieces` as OpenAI SSE, one event per network write, `pause`
/// apart, to every request.
pub async fn paced_model(pieces: &[String], pause: Duration) -> FakeModel {
    let events = sse_events(pieces);
    FakeModel::start(move |_| Reply::new("text/event-stream", events.clone()).paced(pause)).await
}
