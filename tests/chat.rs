//! Conversations and the message tree through the public API, with replies from the
//! built-in engine or from fake models over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::chat::{LUNA, paced_model, spawn_with_model, start, words};
use support::fake_llm::{End, FakeModel, Reply, openai_events};
use support::{TestApp, TestUser, assert_error};
use uuid::Uuid;

async fn body(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn post(app: &TestApp, user: &TestUser, path: &str, json: Value) -> reqwest::Response {
    app.send_auth(Method::POST, path, &user.token, &json).await
}

async fn send(app: &TestApp, user: &TestUser, conversation: &str, text: &str) -> Value {
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let response = post(app, user, &path, json!({"content": text, "type": "text"})).await;
    assert_eq!(response.status(), 201);
    body(response).await
}

async fn history(app: &TestApp, user: &TestUser, conversation: &str, query: &str) -> Value {
    let path = format!("/api/v1/conversations/{conversation}/messages?{query}");
    let response = app.get_auth(&path, &user.token).await;
    assert_eq!(response.status(), 200);
    body(response).await
}

fn contents(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_conversation_starts_with_the_greeting_and_replies_come_from_the_offline_engine() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let (id, first) = start(&app, &ann, LUNA, None).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["role"], "assistant");
    assert_eq!(first[0]["status"], "complete");
    assert!(!first[0]["content"].as_str().unwrap().contains("{{"));

    let answer = send(
        &app,
        &ann,
        &id,
        "Do you ever watch the lighthouse at night?",
    )
    .await;
    assert_eq!(
        answer["userMessage"]["content"],
        "Do you ever watch the lighthouse at night?"
    );
    let reply = &answer["reply"];
    assert_eq!(reply["status"], "complete");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["parentId"], answer["userMessage"]["id"]);
    assert!(
        reply["content"].as_str().unwrap().contains("lighthouse"),
        "{reply}"
    );
    assert!(
        reply["model"]
            .as_str()
            .unwrap()
            .contains("not a language model")
    );
    assert!(reply["usage"]["completionTokens"].as_i64().unwrap() > 0);

    let page = history(&app, &ann, &id, "").await;
    assert_eq!(contents(&page).len(), 3);
    assert_eq!(page["hasMore"], false);
    assert_eq!(page["messages"][2]["id"], reply["id"]);

    // What the model was sent: the persona and the history, never the creator's notes.
    let prompt_path = format!(
        "/api/v1/conversations/{id}/messages/{}/prompt",
        reply["id"].as_str().unwrap()
    );
    let prompt = body(app.get_auth(&prompt_path, &ann.token).await).await;
    let system = prompt["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("Luna") && system.contains("Tester"),
        "{system}"
    );
    let last = prompt["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last["content"],
        "Do you ever watch the lighthouse at night?"
    );

    // Experience for the completed reply; the character counts the conversation.
    let profile = body(app.get_auth("/api/v1/users/profile", &ann.token).await).await;
    assert!(profile["experience"].as_i64().unwrap() > 0, "{profile}");
    let luna = body(app.get(&format!("/api/v1/characters/{LUNA}")).await).await;
    assert_eq!(luna["conversationCount"], 1);
}

#[tokio::test]
async fn regenerate_edit_select_and_delete_move_through_the_tree() {
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;
    let character = body(
        post(
            &app,
            &ann,
            "/api/v1/characters",
            json!({"name": "Echo",
            "personality": {"greeting": "Hello, {{user}}."},
            "alternateGreetings": ["Oh, it's you again."]}),
        )
        .await,
    )
    .await;
    let character = character["id"].as_str().unwrap();
    let (id, first) = start(&app, &ann, character, None).await;
    assert_eq!(first[0]["content"], "Hello, Tester.");
    assert_eq!(
        (
            first[0]["siblingCount"].as_i64(),
            first[0]["siblingIndex"].as_i64()
        ),
        (Some(2), Some(0))
    );

    let one = send(&app, &ann, &id, "first question about rivers").await;
    let reply_one = one["reply"]["id"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/conversations/{id}/messages");

    // A swipe: a new sibling of the reply, now the active one.
    let again = body(
        post(
            &app,
            &ann,
            &format!("{base}/{reply_one}/regenerate"),
            json!({}),
        )
        .await,
    )
    .await;
    let reply_two = again["reply"]["id"].as_str().unwrap().to_owned();
    assert_eq!(again["reply"]["parentId"], one["userMessage"]["id"]);
    assert_eq!(
        (
            again["reply"]["siblingCount"].as_i64(),
            again["reply"]["siblingIndex"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let page = history(&app, &ann, &id, "").await;
    assert_eq!(page["messages"][2]["id"], reply_two.as_str());

    // The swipes of either reply, oldest first, each with its place: what a client flips
    // through. Another user asking gets the 404 of a conversation that does not exist.
    let siblings = body(
        app.get_auth(&format!("{base}/{reply_two}/siblings"), &ann.token)
            .await,
    )
    .await;
    let swipes: Vec<_> = siblings["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["siblingIndex"].as_i64(),
                m["siblingCount"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        swipes,
        vec![
            (reply_one.clone(), Some(0), Some(2)),
            (reply_two.clone(), Some(1), Some(2))
        ]
    );
    let bob = app.register("bob@example.com").await;
    let stranger = app
        .get_auth(&format!("{base}/{reply_two}/siblings"), &bob.token)
        .await;
    assert_eq!(stranger.status(), 404);

    // Back to the first swipe.
    let selected =
        body(post(&app, &ann, &format!("{base}/{reply_one}/select"), json!({})).await).await;
    assert_eq!(selected["conversation"]["activeLeafId"], reply_one.as_str());
    assert_eq!(
        history(&app, &ann, &id, "").await["messages"][2]["id"],
        reply_one.as_str()
    );

    // An edit branches from the edited message's parent and gets its own reply.
    let user_one = one["userMessage"]["id"].as_str().unwrap();
    let edited = body(
        post(
            &app,
            &ann,
            &format!("{base}/{user_one}/edit"),
            json!({"content": "second thoughts about mountains"}),
        )
        .await,
    )
    .await;
    assert_eq!(edited["userMessage"]["parentId"], first[0]["id"]);
    assert_eq!(edited["userMessage"]["siblingCount"], 2);
    let now = contents(&history(&app, &ann, &id, "").await);
    assert_eq!(now[1], "second thoughts about mountains");
    assert!(now[2].contains("mountains"), "{now:?}");

    // The greeting's swipe is reachable too.
    let greetings = history(&app, &ann, &id, "").await["messages"][0].clone();
    assert_eq!(greetings["siblingCount"], 2);

    // Deleting the edited branch returns to the first one.
    let branch = edited["userMessage"]["id"].as_str().unwrap();
    let deleted = app
        .send_auth(
            Method::DELETE,
            &format!("{base}/{branch}"),
            &ann.token,
            &json!({}),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    let after = history(&app, &ann, &id, "").await;
    assert_eq!(contents(&after)[1], "first question about rivers");
    assert_eq!(after["messages"][1]["siblingCount"], 1);

    // Continue writes on after the reply's end.
    let last = after["messages"][2]["id"].as_str().unwrap().to_owned();
    let before = after["messages"][2]["content"].as_str().unwrap().to_owned();
    let continued = app
        .send_auth(
            Method::POST,
            &format!("{base}/{last}/continue"),
            &ann.token,
            &json!({}),
        )
        .await;
    assert_eq!(continued.status(), 200);
    let continued = body(continued).await;
    assert_eq!(continued["reply"]["id"], last.as_str());
    assert!(
        continued["reply"]["content"]
            .as_str()
            .unwrap()
            .starts_with(&before)
    );
    assert!(continued["reply"]["content"].as_str().unwrap().len() > before.len());
}

#[tokio::test]
async fn conversations_are_listed_with_summaries_and_are_private() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let (old, _) = start(&app, &ann, LUNA, None).await;
    let (recent, _) = start(
        &app,
        &ann,
        "01930000-0000-7000-8000-000000000002",
        Some("Hi Max"),
    )
    .await;
    send(&app, &ann, &old, "Back to you, Luna").await;

    let list = body(app.get_auth("/api/v1/conversations", &ann.token).await).await;
    assert_eq!(list["totalElements"], 2);
    let first = &list["content"][0];
    assert_eq!(first["id"], old.as_str(), "most recent activity first");
    assert_eq!(first["character"]["name"], "Luna");
    assert_eq!(first["messageCount"], 3);
    assert!(!first["lastMessagePreview"].as_str().unwrap().is_empty());
    assert_eq!(list["content"][1]["id"], recent.as_str());

    // Pinned first; archived ones leave the default list.
    let path = format!("/api/v1/conversations/{recent}");
    let pinned = app
        .send_auth(
            Method::PATCH,
            &path,
            &ann.token,
            &json!({"pinned": true, "title": "Max and me"}),
        )
        .await;
    assert_eq!(body(pinned).await["title"], "Max and me");
    let list = body(app.get_auth("/api/v1/conversations", &ann.token).await).await;
    assert_eq!(list["content"][0]["id"], recent.as_str());
    app.send_auth(Method::PATCH, &path, &ann.token, &json!({"archived": true}))
        .await;
    let list = body(app.get_auth("/api/v1/conversations", &ann.token).await).await;
    assert_eq!(list["totalElements"], 1);
    let archived = body(
        app.get_auth("/api/v1/conversations?archived=true", &ann.token)
            .await,
    )
    .await;
    assert_eq!(archived["content"][0]["id"], recent.as_str());

    // Bob sees none of it.
    assert_eq!(
        body(app.get_auth("/api/v1/conversations", &bob.token).await).await["totalElements"],
        0
    );
    let page = history(&app, &ann, &old, "").await;
    let message = page["messages"][1]["id"].as_str().unwrap().to_owned();
    let base = format!("/api/v1/conversations/{old}");
    for (method, path, json) in [
        (Method::GET, base.clone(), json!({})),
        (Method::PATCH, base.clone(), json!({"title": "mine"})),
        (Method::GET, format!("{base}/messages"), json!({})),
        (
            Method::POST,
            format!("{base}/messages"),
            json!({"content": "hi"}),
        ),
        (
            Method::POST,
            format!("{base}/messages/{message}/regenerate"),
            json!({}),
        ),
        (
            Method::POST,
            format!("{base}/messages/{message}/select"),
            json!({}),
        ),
        (
            Method::POST,
            format!("{base}/messages/{message}/stop"),
            json!({}),
        ),
        (
            Method::GET,
            format!("{base}/messages/{message}/prompt"),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("{base}/messages/{message}"),
            json!({}),
        ),
        (Method::DELETE, base.clone(), json!({})),
    ] {
        let response = app
            .send_auth(method.clone(), &path, &bob.token, &json)
            .await;
        assert_error(response, 404, "NOT_FOUND").await;
    }
    assert_eq!(
        contents(&history(&app, &ann, &old, "").await).len(),
        3,
        "nothing changed"
    );

    let deleted = app
        .send_auth(Method::DELETE, &base, &ann.token, &json!({}))
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get_auth(&base, &ann.token).await.status(), 404);
}

#[tokio::test]
async fn bad_messages_are_refused_and_store_nothing() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let path = format!("/api/v1/conversations/{id}/messages");
    for empty in ["", "   \n "] {
        assert_error(
            post(&app, &ann, &path, json!({"content": empty})).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
    }
    let huge = "x".repeat(32 * 1024 + 1);
    assert_error(
        post(&app, &ann, &path, json!({"content": huge})).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    assert_error(
        post(&app, &ann, &path, json!({"content": "hi", "type": "image"})).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_error(
        post(
            &app,
            &ann,
            &path,
            json!({"content": "hi", "role": "system"}),
        )
        .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    let unknown = format!("/api/v1/conversations/{}/messages", Uuid::now_v7());
    assert_error(
        post(&app, &ann, &unknown, json!({"content": "hi"})).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let nobody = json!({"characterId": Uuid::now_v7()});
    assert_error(
        post(&app, &ann, "/api/v1/conversations", nobody).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(contents(&history(&app, &ann, &id, "").await).len(), 1);
    assert_error(
        app.get_auth(&format!("{path}?before=nope"), &ann.token)
            .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
}

#[tokio::test]
async fn history_pages_walk_the_branch_with_a_cursor() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    for i in 0..6 {
        send(&app, &ann, &id, &format!("message number {i}")).await;
    }
    // 1 greeting + 6 × (message + reply) = 13 on the branch.
    let mut seen = Vec::new();
    let mut query = "limit=5".to_owned();
    loop {
        let page = history(&app, &ann, &id, &query).await;
        let mut texts = contents(&page);
        texts.extend(seen);
        seen = texts;
        match page["before"].as_str() {
            Some(cursor) => query = format!("limit=5&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 13);
    let all = contents(&history(&app, &ann, &id, "limit=200").await);
    assert_eq!(seen, all);
    assert_eq!(all[1], "message number 0");
    assert_eq!(all[11], "message number 5");
}

#[tokio::test]
async fn a_failing_model_fails_the_reply_keeps_the_message_and_allows_a_regenerate() {
    let body_ok = openai_events(&["Now ", "it ", "works."], "\n\n", (10, 3));
    let fake = FakeModel::start(move |n| match n {
        0 => Reply::status(500, r#"{"error":{"message":"internal secret detail"}}"#),
        1 => Reply::new("text/event-stream", vec![b"data: {not json\n\n".to_vec()]),
        _ => Reply::new("text/event-stream", vec![body_ok.clone()]),
    })
    .await;
    let app = spawn_with_model(&fake.url, &[]).await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;

    let answer = send(&app, &ann, &id, "Are you there?").await;
    assert_eq!(answer["reply"]["status"], "failed");
    assert_eq!(answer["reply"]["failure"]["code"], "llm_refused");
    assert!(!answer["reply"].to_string().contains("secret detail"));
    assert_eq!(answer["userMessage"]["content"], "Are you there?");

    let failed = answer["reply"]["id"].as_str().unwrap();
    let path = format!("/api/v1/conversations/{id}/messages/{failed}/regenerate");
    let garbled = body(post(&app, &ann, &path, json!({})).await).await;
    assert_eq!(garbled["reply"]["failure"]["code"], "llm_garbled");
    let fixed = body(post(&app, &ann, &path, json!({})).await).await;
    assert_eq!(fixed["reply"]["status"], "complete");
    assert_eq!(fixed["reply"]["content"], "Now it works.");
    assert_eq!(fixed["reply"]["usage"]["promptTokens"], 10);
    assert_eq!(fixed["reply"]["siblingCount"], 3);
    let sent = &fake.requests()[2];
    assert_eq!(
        sent["messages"].as_array().unwrap().last().unwrap()["content"],
        "Are you there?"
    );
}

#[tokio::test]
async fn stop_ends_the_reply_and_closes_the_upstream_request_and_one_reply_at_a_time() {
    let start_of = String::from_utf8(openai_events(&["I was saying "], "\n\n", (1, 1))).unwrap();
    let cut = start_of.find("\"stop\"").unwrap();
    let head = start_of.as_bytes()[..start_of[..cut].rfind("data: ").unwrap()].to_vec();
    let whole = openai_events(&["Fine."], "\n\n", (1, 1));
    let fake = FakeModel::start(move |n| {
        if n == 0 {
            Reply::new("text/event-stream", vec![head.clone()]).then(End::Hang)
        } else {
            Reply::new("text/event-stream", vec![whole.clone()])
        }
    })
    .await;
    let app = spawn_with_model(&fake.url, &[("COMPANION__LLM__IDLE_TIMEOUT_MS", "60000")]).await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let mut live = app.platform.realtime.subscribe(ann.id.parse().unwrap());

    // The send waits for its reply, so it runs beside the rest of the test.
    let sending = {
        let (app_url, token, id) = (app.address.clone(), ann.token.clone(), id.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{app_url}/api/v1/conversations/{id}/messages"))
                .bearer_auth(token)
                .json(&json!({"content": "Tell me a long story"}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The first piece arrives live, with the reply's id and a sequence number.
    let frame: Value = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .unwrap()
            .unwrap();
        let frame: Value = serde_json::from_str(&event).unwrap();
        if frame["type"] == "token" {
            break frame;
        }
    };
    assert_eq!(frame["seq"], 1);
    assert_eq!(frame["delta"], "I was saying ");
    let reply = frame["messageId"].as_str().unwrap().to_owned();

    // While it streams, a second message is refused and stores nothing.
    let path = format!("/api/v1/conversations/{id}/messages");
    assert_error(
        post(&app, &ann, &path, json!({"content": "hello?"})).await,
        409,
        "CONFLICT",
    )
    .await;
    let streaming = history(&app, &ann, &id, "").await;
    assert_eq!(streaming["messages"][2]["status"], "streaming");

    let stop = post(&app, &ann, &format!("{path}/{reply}/stop"), json!({})).await;
    assert_eq!(stop.status(), 202);
    let answer = tokio::time::timeout(Duration::from_secs(10), sending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer["reply"]["status"], "stopped");
    assert_eq!(answer["reply"]["content"], "I was saying ");
    support::eventually(Duration::from_secs(5), || async {
        (fake.closed_by_client() == 1).then_some(())
    })
    .await;
    // The final frame went out too, and the conversation is free again.
    let done: Value = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .unwrap()
            .unwrap();
        let frame: Value = serde_json::from_str(&event).unwrap();
        if frame["type"] == "message" {
            break frame;
        }
    };
    assert_eq!(done["message"]["status"], "stopped");
    let again = post(&app, &ann, &path, json!({"content": "hello?"})).await;
    assert_eq!(again.status(), 201);
    assert_eq!(body(again).await["reply"]["content"], "Fine.");
}

#[tokio::test]
async fn shutdown_marks_a_streaming_reply_interrupted_and_repair_frees_dead_ones() {
    let fake = FakeModel::start(|_| {
        let head = b"data: {\"choices\":[{\"delta\":{\"content\":\"Half a \"}}]}\n\n".to_vec();
        Reply::new("text/event-stream", vec![head]).then(End::Hang)
    })
    .await;
    let mut app = spawn_with_model(&fake.url, &[]).await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let sending = {
        let (app_url, token, id) = (app.address.clone(), ann.token.clone(), id.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{app_url}/api/v1/conversations/{id}/messages"))
                .bearer_auth(token)
                .json(&json!({"content": "Go on"}))
                .send()
                .await
        })
    };
    support::eventually(Duration::from_secs(10), || async {
        let content = app.query_one(&format!(
            "SELECT content FROM chat.messages WHERE conversation_id = '{id}' AND status = 'streaming'"
        ));
        (content.as_deref() == Some("Half a ")).then_some(())
    })
    .await;
    app.stop().await.unwrap();
    let _ = sending.await;
    let status = app.query_one(&format!(
        "SELECT status || ':' || content FROM chat.messages WHERE conversation_id = '{id}' AND role = 'assistant' AND parent_id IS NOT NULL"
    ));
    assert_eq!(status.as_deref(), Some("interrupted:Half a "));
    let free = app.query_one(&format!(
        "SELECT generating_id IS NULL FROM chat.conversations WHERE id = '{id}'"
    ));
    assert_eq!(free.as_deref(), Some("true"));

    // A reply whose process died without a word: repaired once its heartbeat is stale.
    let stale = Uuid::now_v7();
    app.execute(&format!(
        "INSERT INTO chat.messages (id, conversation_id, depth, role, content, status, heartbeat_at) \
         VALUES ('{stale}', '{id}', 0, 'assistant', 'lost', 'streaming', now() - interval '1 minute')"
    ));
    app.execute(&format!(
        "UPDATE chat.conversations SET generating_id = '{stale}' WHERE id = '{id}'"
    ));
    let url = app.db.as_ref().unwrap().url.clone();
    let settings = support::test_settings(&url, &[]);
    let restarted = TestApp::start(companion::Application::builder(settings), None).await;
    support::eventually(Duration::from_secs(10), || async {
        let status = app.query_one(&format!(
            "SELECT status FROM chat.messages WHERE id = '{stale}'"
        ));
        (status.as_deref() == Some("interrupted")).then_some(())
    })
    .await;
    drop(restarted);
}

/// Reads SSE events from `response` as (event, data) until `stop` says so or it ends.
async fn events(
    response: reqwest::Response,
    mut stop: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    use futures_util::StreamExt;
    assert_eq!(response.status().as_u16() / 100, 2);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut found = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
    {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(text) = line.strip_prefix("data: ") {
                    data.push_str(text);
                }
            }
            let data: Value = serde_json::from_str(&data).unwrap();
            let done = stop(&event, &data);
            found.push((event, data));
            if done {
                return found;
            }
        }
    }
    found
}

fn is_final_reply(event: &str, data: &Value) -> bool {
    event == "message" && data["role"] == "assistant"
}

/// The text of the token events, checking that their sequence numbers follow each other
/// from `after`.
fn tokens(found: &[(String, Value)], after: i64) -> String {
    let mut text = String::new();
    let mut last = after;
    for (event, data) in found.iter().filter(|(e, _)| e == "token") {
        let seq = data["seq"].as_i64().unwrap();
        assert!(seq > last, "{event}: seq {seq} after {last}");
        last = seq;
        text.push_str(data["delta"].as_str().unwrap());
    }
    text
}

#[tokio::test]
async fn a_reply_streams_as_server_sent_events() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/conversations/{id}/messages")))
        .bearer_auth(&ann.token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "Sing me something about the sea"}))
        .send()
        .await
        .unwrap();
    let found = events(response, is_final_reply).await;
    assert_eq!(found[0].0, "message");
    assert_eq!(found[0].1["role"], "user");
    let (_, last) = found.last().unwrap();
    assert_eq!(last["status"], "complete");
    let text = tokens(&found, 0);
    assert_eq!(text, last["content"].as_str().unwrap());
    assert!(
        found.iter().filter(|(e, _)| e == "token").count() > 3,
        "word by word"
    );
}

#[tokio::test]
async fn a_client_that_drops_mid_reply_reattaches_and_gets_exactly_the_rest() {
    let pieces = words(40);
    // One SSE event per network write, 15 ms apart.
    let fake = paced_model(&pieces, Duration::from_millis(15)).await;
    let app = spawn_with_model(&fake.url, &[]).await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/conversations/{id}/messages")))
        .bearer_auth(&ann.token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "Count for me"}))
        .send()
        .await
        .unwrap();
    let mut seen = 0;
    let first = events(response, |event, _| {
        seen += usize::from(event == "token");
        seen == 5
    })
    .await;
    // The connection is gone; the reply goes on without it.
    let reply = first.iter().find(|(e, _)| e == "token").unwrap().1["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = tokens(&first, 0);
    let after_seq = first.iter().rev().find(|(e, _)| e == "token").unwrap().1["seq"]
        .as_i64()
        .unwrap();
    assert_eq!(after_seq, 5);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let path = format!("/api/v1/conversations/{id}/messages/{reply}/stream?afterSeq={after_seq}");
    let again = app
        .client
        .get(app.url(&path))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    let rest = events(again, is_final_reply).await;
    let (_, last) = rest.last().unwrap();
    assert_eq!(last["status"], "complete");
    let whole = format!("{before}{}", tokens(&rest, after_seq));
    assert_eq!(whole, pieces.concat());
    assert_eq!(whole, last["content"].as_str().unwrap());

    // After the end, a re-attach from the start gets the whole text at once.
    let from_start = format!("/api/v1/conversations/{id}/messages/{reply}/stream");
    let late = app
        .client
        .get(app.url(&from_start))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    let late = events(late, is_final_reply).await;
    assert_eq!(tokens(&late, 0), pieces.concat());
    // Someone else's reply is not there at all.
    let theirs = app
        .client
        .get(app.url(&from_start))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_error(theirs, 404, "NOT_FOUND").await;
}

/// A prompt's history follows the active branch of a long conversation: across the several
/// ranges it is read in, past the swipes of other branches stored between its messages,
/// and past a parent whose id sorts above its child's (as when it was written by an
/// instance whose clock ran ahead).
#[tokio::test]
async fn the_prompt_carries_the_whole_active_branch_of_a_long_conversation() {
    const TURNS: usize = 300;
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let (id, first) = start(&app, &ann, LUNA, None).await;
    let greeting = first[0]["id"].as_str().unwrap().parse::<Uuid>().unwrap();

    // The branch: greeting, then TURNS messages; every seventh has an unchosen swipe
    // written right after it.
    let mut ids = Vec::new();
    let mut swipes = Vec::new();
    for turn in 0..TURNS {
        ids.push(Uuid::now_v7());
        if turn.is_multiple_of(7) {
            swipes.push((turn, Uuid::now_v7()));
        }
    }
    // One message written "later" than its own reply.
    ids[TURNS / 2] = Uuid::now_v7();
    let role = |turn: usize| {
        if turn.is_multiple_of(2) {
            "user"
        } else {
            "assistant"
        }
    };
    let parent = |turn: usize| if turn == 0 { greeting } else { ids[turn - 1] };
    let mut rows: Vec<String> = (0..TURNS)
        .map(|turn| {
            format!(
                "('{}', '{id}', '{}', {}, '{}', 'turn {turn}')",
                ids[turn],
                parent(turn),
                turn + 1,
                role(turn)
            )
        })
        .collect();
    rows.extend(swipes.iter().map(|&(turn, swipe)| {
        format!(
            "('{swipe}', '{id}', '{}', {}, '{}', 'swipe {turn}')",
            parent(turn),
            turn + 1,
            role(turn)
        )
    }));
    app.execute(&format!(
        "INSERT INTO chat.messages (id, conversation_id, parent_id, depth, role, content) VALUES {}",
        rows.join(", ")
    ));
    app.execute(&format!(
        "UPDATE chat.conversations SET active_leaf_id = '{}' WHERE id = '{id}'",
        ids[TURNS - 1]
    ));

    let answer = send(&app, &ann, &id, "Do you remember all of it?").await;
    let prompt_path = format!(
        "/api/v1/conversations/{id}/messages/{}/prompt",
        answer["reply"]["id"].as_str().unwrap()
    );
    let prompt = body(app.get_auth(&prompt_path, &ann.token).await).await;
    let sent: Vec<(String, String)> = prompt["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            let (role, content) = (m["role"].as_str(), m["content"].as_str());
            (role.unwrap().to_owned(), content.unwrap().to_owned())
        })
        .collect();
    let mut expected = vec![(
        "assistant".to_owned(),
        first[0]["content"].as_str().unwrap().to_owned(),
    )];
    expected.extend((0..TURNS).map(|turn| (role(turn).to_owned(), format!("turn {turn}"))));
    expected.push(("user".to_owned(), "Do you remember all of it?".to_owned()));
    assert_eq!(sent, expected);
}

/// The sample `virtual_companion_chat_warm_sends_total{outcome}` on `app`'s `/metrics`.
async fn warm_sends(app: &TestApp, outcome: &str) -> u64 {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let sample = format!("virtual_companion_chat_warm_sends_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&sample))
        .unwrap_or_else(|| panic!("no {sample} in the metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// A message as `role: content`.
fn role_content(message: &Value) -> String {
    let (role, content) = (message["role"].as_str(), message["content"].as_str());
    format!("{}: {}", role.unwrap(), content.unwrap())
}

/// The turns a reply was written from (its stored prompt without the system messages).
async fn prompt_turns(app: &TestApp, user: &TestUser, id: &str, reply: &Value) -> Vec<String> {
    let reply = reply["id"].as_str().unwrap();
    let path = format!("/api/v1/conversations/{id}/messages/{reply}/prompt");
    let prompt = body(app.get_auth(&path, &user.token).await).await;
    prompt["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .map(role_content)
        .collect()
}

/// The active branch as the history API shows it, oldest first, as `role: content`.
async fn branch_turns(app: &TestApp, user: &TestUser, id: &str) -> Vec<String> {
    let page = history(app, user, id, "limit=200").await;
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(role_content)
        .collect()
}

#[tokio::test]
async fn a_warm_conversation_sees_what_changed_through_another_instance() {
    let a = TestApp::spawn().await;
    let url = a.db.as_ref().unwrap().url.clone();
    let b = TestApp::start(
        companion::Application::builder(support::test_settings(&url, &[])),
        None,
    )
    .await;
    let ann = a.register("ann@example.com").await;
    let (id, _) = start(&a, &ann, LUNA, None).await;

    // The first message reads the conversation; its reply leaves it warm on A.
    send(&a, &ann, &id, "One").await;
    assert_eq!(warm_sends(&a, "miss").await, 1);
    let two = send(&a, &ann, &id, "Two").await;
    assert_eq!(warm_sends(&a, "hit").await, 1);
    let mut expected = branch_turns(&a, &ann, &id).await;
    expected.pop();
    assert_eq!(prompt_turns(&a, &ann, &id, &two["reply"]).await, expected);

    // Another user gets nothing from it, and leaves it in place.
    let bob = a.register("bob@example.com").await;
    let path = format!("/api/v1/conversations/{id}/messages");
    let refused = post(
        &a,
        &bob,
        &path,
        json!({"content": "Let me in", "type": "text"}),
    )
    .await;
    assert_eq!(refused.status(), 404);
    assert_eq!(warm_sends(&a, "hit").await, 1);

    // A message through B moves the branch; A's warm copy is out of date.
    send(&b, &ann, &id, "Three, through B").await;
    let four = send(&a, &ann, &id, "Four").await;
    assert_eq!(warm_sends(&a, "stale").await, 1);
    let mut expected = branch_turns(&a, &ann, &id).await;
    expected.pop();
    assert!(expected.contains(&"user: Three, through B".to_owned()));
    assert_eq!(prompt_turns(&a, &ann, &id, &four["reply"]).await, expected);
    // Nothing of the attempt from the stale copy was stored.
    assert_eq!(
        a.query_one(&format!(
            "SELECT count(*) FROM chat.messages WHERE conversation_id = '{id}' AND content = 'Four'"
        ))
        .as_deref(),
        Some("1")
    );

    // An edit through B starts another branch; A's warm copy still holds the old one.
    let five = send(&a, &ann, &id, "Five").await;
    assert_eq!(warm_sends(&a, "hit").await, 2);
    let five_id = five["userMessage"]["id"].as_str().unwrap();
    let edit = format!("/api/v1/conversations/{id}/messages/{five_id}/edit");
    let edited = post(&b, &ann, &edit, json!({"content": "Five, edited"})).await;
    assert_eq!(edited.status(), 201);
    let edited = body(edited).await;
    let six = send(&a, &ann, &id, "Six").await;
    assert_eq!(warm_sends(&a, "stale").await, 2);
    assert_eq!(six["userMessage"]["parentId"], edited["reply"]["id"]);
    let sent = prompt_turns(&a, &ann, &id, &six["reply"]).await;
    assert!(sent.contains(&"user: Five, edited".to_owned()), "{sent:?}");
    assert!(!sent.contains(&"user: Five".to_owned()), "{sent:?}");
}

#[tokio::test]
async fn a_reply_from_the_warm_state_is_written_from_the_prompt_the_database_gives() {
    // A small window, so that the history is cut as the conversation grows.
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__LLM__CONTEXT_TOKENS", "1500"),
        ("COMPANION__LLM__MAX_TOKENS", "100"),
    ])
    .await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let mut first_cut = None;
    for round in 0..10 {
        let text = format!(
            "Round {round}: {}",
            "a line of words to fill it ".repeat(22)
        );
        let sent = send(&app, &ann, &id, &text).await;
        let warm = prompt_turns(&app, &ann, &id, &sent["reply"]).await;
        if round == 0 {
            continue;
        }
        assert_eq!(warm_sends(&app, "hit").await, round);
        // Regenerating reads the same branch from the database.
        let reply = sent["reply"]["id"].as_str().unwrap();
        let path = format!("/api/v1/conversations/{id}/messages/{reply}/regenerate");
        let again = body(post(&app, &ann, &path, json!({})).await).await;
        let cold = prompt_turns(&app, &ann, &id, &again["reply"]).await;
        assert_eq!(warm, cold, "round {round}");
        assert_eq!(warm.last(), Some(&format!("user: {text}")));
        if first_cut.is_none() && !warm.iter().any(|t| t.starts_with("user: Round 0")) {
            first_cut = Some(round);
        }
    }
    assert!(first_cut.is_some(), "the window never cut the history");
}

#[tokio::test]
async fn a_warm_conversation_learns_of_character_edits_within_one_reply() {
    let app = TestApp::spawn().await;
    // Creating characters is a paid feature.
    let ann = app.premium("ann@example.com").await;
    let created = app
        .send_auth(
            Method::POST,
            "/api/v1/characters",
            &ann.token,
            &json!({"name": "Nova", "category": "sci-fi",
                    "description": "{{char}} keeps a lighthouse."}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let nova = body(created).await["id"].as_str().unwrap().to_owned();
    let (id, _) = start(&app, &ann, &nova, None).await;
    let system = |prompt: &Value| {
        prompt["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let prompt_of = |reply: Value| {
        let path = format!(
            "/api/v1/conversations/{id}/messages/{}/prompt",
            reply["id"].as_str().unwrap()
        );
        let (app, token) = (&app, ann.token.clone());
        async move { body(app.get_auth(&path, &token).await).await }
    };
    send(&app, &ann, &id, "One").await;
    let two = send(&app, &ann, &id, "Two").await;
    assert_eq!(warm_sends(&app, "hit").await, 1);
    assert!(system(&prompt_of(two["reply"].clone()).await).contains("keeps a lighthouse"));

    let path = format!("/api/v1/characters/{nova}");
    let edit = json!({"description": "{{char}} sails the northern sea."});
    let edited = app.send_auth(Method::PATCH, &path, &ann.token, &edit).await;
    assert_eq!(edited.status(), 200);
    // The reply under way when the edit lands may still use the old text; the next has the
    // new one.
    send(&app, &ann, &id, "Three").await;
    let four = send(&app, &ann, &id, "Four").await;
    assert_eq!(warm_sends(&app, "hit").await, 3);
    let four = system(&prompt_of(four["reply"].clone()).await);
    assert!(four.contains("sails the northern sea"), "{four}");

    // Once the character is gone, at most the reply under way is written; the next message
    // is refused as for a conversation never kept warm.
    let deleted = app
        .send_auth(Method::DELETE, &path, &ann.token, &json!({}))
        .await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let messages = format!("/api/v1/conversations/{id}/messages");
    let five = post(
        &app,
        &ann,
        &messages,
        json!({"content": "Five", "type": "text"}),
    )
    .await;
    assert!([201, 409].contains(&five.status().as_u16()));
    let six = post(
        &app,
        &ann,
        &messages,
        json!({"content": "Six", "type": "text"}),
    )
    .await;
    assert_error(six, 409, "CONFLICT").await;
}
