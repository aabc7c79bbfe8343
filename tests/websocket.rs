//! The live connection `GET /api/v1/ws` through a real WebSocket client: replies stream to
//! every connection of the user, on any instance; a client that drops resumes without gap or
//! duplicate; bad frames and bad handshakes are refused clearly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::TestApp;
use support::chat::{LUNA, paced_model, spawn_with_model, start, words};
use support::fake_llm::{End, FakeModel, Reply, openai_events};
use support::ws::{Socket, closed, connect, next, open, refused, send, ws_request};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

const WAIT: Duration = Duration::from_secs(10);

/// Frames until the final `message` of `reply` (any reply, when `None`).
async fn until_final(socket: &mut Socket, reply: Option<&str>) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = next(socket).await;
        let done = frame["type"] == "message"
            && frame["message"]["role"] == "assistant"
            && frame["message"]["status"] != "streaming"
            && reply.is_none_or(|id| frame["message"]["id"] == id);
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// The text of the token frames of `reply`, checking their `seq` rise by one from `after`.
fn text_after(frames: &[Value], reply: &str, after: i64) -> String {
    let mut seq = after;
    let mut text = String::new();
    for frame in frames
        .iter()
        .filter(|f| f["type"] == "token" && f["messageId"] == reply)
    {
        let at = frame["seq"].as_i64().unwrap();
        assert!(at > seq, "token {at} after {seq}: a duplicate");
        // A catch-up frame may cover several pieces; a live one covers exactly one.
        text.push_str(frame["delta"].as_str().unwrap());
        seq = at;
    }
    text
}

fn final_message(frames: &[Value]) -> &Value {
    &frames.last().unwrap()["message"]
}

#[tokio::test]
async fn replies_reach_every_socket_and_a_dropped_one_resumes_without_gap_or_duplicate() {
    let pieces = words(40);
    let fake = paced_model(&pieces, Duration::from_millis(15)).await;
    let app = spawn_with_model(&fake.url, &[]).await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;

    let mut tab = connect(&app, &ann).await;
    // A second tab authenticates as a browser can: the token as a sub-protocol.
    let mut request = ws_request(&app);
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("bearer, {}", ann.token)).unwrap(),
    );
    let (mut other_tab, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");

    send(
        &mut tab,
        json!({"type": "message", "conversationId": id, "content": "Count for me"}),
    )
    .await;
    // The user's message, then the reply announced, then its tokens.
    let first = next(&mut tab).await;
    assert_eq!(first["type"], "message");
    assert_eq!(first["message"]["role"], "user");
    assert_eq!(first["message"]["content"], "Count for me");
    let announced = next(&mut tab).await;
    assert_eq!(announced["message"]["status"], "streaming");
    let reply = announced["message"]["id"].as_str().unwrap().to_owned();
    let mut before = Vec::new();
    while before.len() < 5 {
        let frame = next(&mut tab).await;
        assert_eq!(frame["type"], "token");
        assert_eq!(frame["conversationId"], id);
        before.push(frame);
    }
    assert_eq!(before.last().unwrap()["seq"], 5);
    // The tab goes away mid-reply; the reply goes on without it.
    drop(tab);
    tokio::time::sleep(Duration::from_millis(60)).await;

    // It comes back, authenticating with its first frame, and resumes after piece 5.
    let mut back = open(ws_request(&app)).await;
    send(&mut back, json!({"type": "auth", "token": ann.token})).await;
    send(
        &mut back,
        json!({"type": "resume", "messageId": reply, "afterSeq": 5}),
    )
    .await;
    let rest = until_final(&mut back, Some(&reply)).await;
    let last = final_message(&rest);
    assert_eq!(last["status"], "complete");
    let whole = format!(
        "{}{}",
        text_after(&before, &reply, 0),
        text_after(&rest, &reply, 5)
    );
    assert_eq!(whole, pieces.concat());
    assert_eq!(whole, last["content"].as_str().unwrap());

    // The other tab saw it all, live.
    let seen = until_final(&mut other_tab, Some(&reply)).await;
    assert_eq!(text_after(&seen, &reply, 0), pieces.concat());
    assert_eq!(
        seen.iter().filter(|f| f["type"] == "token").count(),
        pieces.len()
    );

    // Resuming a finished reply from the start gets the whole text, then the message.
    send(
        &mut back,
        json!({"type": "resume", "messageId": reply, "afterSeq": 0}),
    )
    .await;
    let again = until_final(&mut back, Some(&reply)).await;
    assert_eq!(text_after(&again, &reply, 0), pieces.concat());
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_connection_stays_open() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let (bobs, _) = start(&app, &bob, LUNA, Some("Hello")).await;
    let bobs_reply = app
        .get_auth(
            &format!("/api/v1/conversations/{bobs}/messages"),
            &bob.token,
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mine, _) = start(&app, &ann, LUNA, None).await;
    let count = |conversation: &str| {
        app.query_one(&format!(
            "SELECT count(*) FROM chat.messages WHERE conversation_id = '{conversation}'"
        ))
        .unwrap()
    };
    let stored = (count(&mine), count(&bobs));
    let mut socket = connect(&app, &ann).await;

    let cases = [
        (json!("not an object"), "BAD_REQUEST"),
        (json!({"content": "no type"}), "BAD_REQUEST"),
        (json!({"type": "dance"}), "BAD_REQUEST"),
        (
            json!({"type": "message", "content": "where to?"}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"type": "message", "conversationId": mine, "content": "hi", "admin": true}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"type": "message", "conversationId": mine, "content": "   "}),
            "VALIDATION_ERROR",
        ),
        (
            json!({"type": "message", "conversationId": mine, "content": "x".repeat(33 * 1024)}),
            "PAYLOAD_TOO_LARGE",
        ),
        (
            json!({"type": "message", "conversationId": bobs, "content": "hi"}),
            "NOT_FOUND",
        ),
        (json!({"type": "stop", "conversationId": bobs}), "NOT_FOUND"),
        (json!({"type": "auth", "token": ann.token}), "BAD_REQUEST"),
    ];
    for (i, (frame, code)) in cases.iter().enumerate() {
        let mut frame = frame.clone();
        if frame.is_object() {
            frame["ref"] = json!(format!("case-{i}"));
        }
        send(&mut socket, frame).await;
        let error = next(&mut socket).await;
        assert_eq!(error["type"], "error", "case {i}");
        assert_eq!(error["code"], *code, "case {i}: {error}");
        if i > 0 {
            assert_eq!(error["ref"], format!("case-{i}"));
        }
    }
    socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await["code"], "BAD_REQUEST");
    socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await["code"], "UNSUPPORTED_MEDIA_TYPE");

    // Someone else's reply cannot be resumed, and the answer is the one for no reply at all.
    send(
        &mut socket,
        json!({"type": "resume", "messageId": bobs_reply, "afterSeq": 0}),
    )
    .await;
    let theirs = next(&mut socket).await;
    send(
        &mut socket,
        json!({"type": "resume", "messageId": uuid::Uuid::now_v7(), "afterSeq": 0}),
    )
    .await;
    let nobodys = next(&mut socket).await;
    assert_eq!(theirs["code"], "NOT_FOUND");
    assert_eq!(theirs, nobodys);
    assert!(!theirs.to_string().contains(&bobs_reply));

    // Still open and working; nothing was stored in either conversation.
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await, json!({"type": "pong"}));
    assert_eq!((count(&mine), count(&bobs)), stored);

    // A frame sent in three fragments, a ping between them, is read as one.
    let fragments = [
        (r#"{"type":"#, OpCode::Data(Data::Text), false),
        (r#""ping","ref""#, OpCode::Data(Data::Continue), false),
        (r#":"split"}"#, OpCode::Data(Data::Continue), true),
    ];
    for (i, (piece, opcode, last)) in fragments.into_iter().enumerate() {
        socket
            .send(Message::Frame(Frame::message(piece, opcode, last)))
            .await
            .unwrap();
        if i == 0 {
            socket.send(Message::Ping("between".into())).await.unwrap();
        }
    }
    assert_eq!(next(&mut socket).await, json!({"type": "pong"}));

    // A frame over the size limit closes the connection with 1009.
    socket
        .send(Message::Text("x".repeat(70 * 1024).into()))
        .await
        .unwrap();
    assert_eq!(closed(&mut socket).await.0, CloseCode::Size);
}

#[tokio::test]
async fn the_handshake_checks_the_origin_and_the_token() {
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__HTTP__CORS_ORIGINS", "https://app.example.com"),
        ("COMPANION__WEBSOCKET__AUTH_TIMEOUT_MS", "300"),
    ])
    .await;
    let ann = app.register("ann@example.com").await;

    let with = |name: &'static str, value: &str| {
        let mut request = ws_request(&app);
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).unwrap());
        request
    };
    // A page from another site cannot open a connection, even with a valid token.
    let mut foreign = with("origin", "https://evil.example.net");
    foreign.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", ann.token)).unwrap(),
    );
    let (status, body) = refused(foreign).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    // The configured origin and our own are fine.
    let mut allowed = with("origin", "https://app.example.com");
    allowed.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", ann.token)).unwrap(),
    );
    let mut socket = open(allowed).await;
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await["type"], "pong");
    let own = format!("http://127.0.0.1:{}", app.port);
    let mut same_site = open(with("origin", &own)).await;
    send(&mut same_site, json!({"type": "auth", "token": ann.token})).await;
    send(&mut same_site, json!({"type": "ping"})).await;
    assert_eq!(next(&mut same_site).await["type"], "pong");

    // A bad token in the header is refused before the upgrade.
    let (status, body) = refused(with("authorization", "Bearer not.a.token")).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");

    // A token in the URL is not a credential: that connection still has to authenticate.
    let url = format!(
        "ws://127.0.0.1:{}/api/v1/ws?token={}&access_token={}",
        app.port, ann.token, ann.token
    );
    let mut in_url = open(url.into_client_request().unwrap()).await;
    send(&mut in_url, json!({"type": "ping"})).await;
    assert_eq!(next(&mut in_url).await["code"], "UNAUTHORIZED");
    assert_eq!(closed(&mut in_url).await.0, CloseCode::Policy);

    // A bad token in the first frame gets an error and the connection closes.
    let mut bad = open(ws_request(&app)).await;
    send(&mut bad, json!({"type": "auth", "token": "forged"})).await;
    assert_eq!(next(&mut bad).await["code"], "UNAUTHORIZED");
    assert_eq!(closed(&mut bad).await.0, CloseCode::Policy);

    // Saying nothing closes it after the authentication timeout.
    let mut silent = open(ws_request(&app)).await;
    assert_eq!(closed(&mut silent).await.0, CloseCode::Policy);
}

#[tokio::test]
async fn a_socket_on_one_instance_receives_a_reply_started_through_another() {
    let pieces = words(12);
    let fake = paced_model(&pieces, Duration::from_millis(5)).await;
    let db = support::TestDb::fresh().await;
    let url = db.url.clone();
    let redis = support::redis_url();
    let mut vars: Vec<(&str, String)> = support::chat::fake_settings(&fake.url);
    vars.push(("REDIS_URL", redis));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let builder = || companion::Application::builder(support::test_settings(&url, &vars));
    let a = TestApp::start(builder(), Some(db)).await;
    let b = TestApp::start(builder(), None).await;
    a.platform.realtime.listening().await;
    b.platform.realtime.listening().await;
    let ann = a.register("ann@example.com").await;
    let (id, _) = start(&b, &ann, LUNA, None).await;

    let mut on_a = connect(&a, &ann).await;
    // A round trip proves the socket is subscribed before the message is sent.
    send(&mut on_a, json!({"type": "ping"})).await;
    assert_eq!(next(&mut on_a).await["type"], "pong");
    let sent = b
        .send_auth(
            reqwest::Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
            &ann.token,
            &json!({"content": "Across instances"}),
        )
        .await;
    assert_eq!(sent.status(), 201);
    let answer: Value = sent.json().await.unwrap();
    let reply = answer["reply"]["id"].as_str().unwrap();

    let frames = until_final(&mut on_a, Some(reply)).await;
    assert_eq!(frames[0]["message"]["content"], "Across instances");
    assert_eq!(text_after(&frames, reply, 0), pieces.concat());
    assert_eq!(
        final_message(&frames)["content"],
        answer["reply"]["content"]
    );
    drop(on_a);
    // B first: A owns the database.
    drop(b);
    drop(a);
}

#[tokio::test]
async fn stop_over_the_socket_cancels_the_upstream_request() {
    let started = String::from_utf8(openai_events(&["Once "], "\n\n", (1, 1))).unwrap();
    let cut = started.find("\"stop\"").unwrap();
    let head = started.as_bytes()[..started[..cut].rfind("data: ").unwrap()].to_vec();
    let fake = FakeModel::start(move |_| {
        Reply::new("text/event-stream", vec![head.clone()]).then(End::Hang)
    })
    .await;
    let app = spawn_with_model(&fake.url, &[("COMPANION__LLM__IDLE_TIMEOUT_MS", "60000")]).await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let mut socket = connect(&app, &ann).await;
    send(
        &mut socket,
        json!({"type": "message", "conversationId": id, "content": "Tell me a story"}),
    )
    .await;
    loop {
        if next(&mut socket).await["type"] == "token" {
            break;
        }
    }
    send(&mut socket, json!({"type": "stop", "conversationId": id})).await;
    let frames = until_final(&mut socket, None).await;
    let last = final_message(&frames);
    assert_eq!(last["status"], "stopped");
    assert_eq!(last["content"], "Once ");
    support::eventually(WAIT, || async {
        (fake.closed_by_client() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_and_an_ended_session_are_disconnected() {
    let app = TestApp::spawn_with_vars(&[("COMPANION__WEBSOCKET__PING_INTERVAL_MS", "100")]).await;
    let ann = app.register("ann@example.com").await;

    // This client never reads, so it never answers a ping.
    let mut silent = connect(&app, &ann).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (code, reason) = closed(&mut silent).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Policy, "no pong"));

    // One that reads (and so answers pings) stays, until its session is logged out.
    let mut socket = connect(&app, &ann).await;
    let reader = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let end = closed(&mut socket).await;
        (end, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!reader.is_finished(), "a live client was disconnected");
    let logout = app
        .send_auth(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            &ann.token,
            &json!({}),
        )
        .await;
    assert!(logout.status().is_success());
    let ((code, reason), _) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "the session has ended")
    );
}

/// A client that keeps sending but never reads: the answers the server owes it pile up
/// in the socket's buffers, then in its queue of `websocket.send_queue` frames, and then the
/// server lets it go instead of holding more. (Each frame here is refused with an `error`
/// frame of ~200 bytes, so a few megabytes of answers are owed.)
#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_once_its_queue_is_full() {
    const FRAMES: usize = 50_000;
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__WEBSOCKET__SEND_QUEUE", "16"),
        ("COMPANION__WEBSOCKET__FRAMES_PER_SECOND", "0"),
        ("COMPANION__WEBSOCKET__PING_INTERVAL_MS", "60000"),
    ])
    .await;
    let ann = app.register("ann@example.com").await;
    // A small receive buffer, so what the server may park in the kernel is small too.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .unwrap();
    let (mut socket, _) =
        tokio_tungstenite::client_async(support::ws::authorized(&app, &ann), stream)
            .await
            .unwrap();
    let frame = Message::Text(
        json!({ "type": "nope", "ref": "r".repeat(64) })
            .to_string()
            .into(),
    );
    let mut sent = 0;
    let sending = tokio::time::timeout(Duration::from_secs(60), async {
        while sent < FRAMES {
            if socket.feed(frame.clone()).await.is_err() {
                return;
            }
            sent += 1;
            if sent % 500 == 0 && socket.flush().await.is_err() {
                return;
            }
        }
        let _ = socket.flush().await;
    })
    .await;
    assert!(sending.is_ok(), "the server stopped reading the client");
    // Now read: what the server wrote before it let go, then the end of the connection.
    let mut answers = 0;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(_))) => answers += 1,
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open ({answers} answers read)"
    );
    assert!(
        answers < sent,
        "all {sent} frames were answered: the server held everything for a client that did not read"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away_and_metrics_count_the_traffic() {
    let mut app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let mut socket = connect(&app, &ann).await;
    send(
        &mut socket,
        json!({"type": "message", "conversationId": id, "content": "Hello there"}),
    )
    .await;
    let frames = until_final(&mut socket, None).await;
    assert_eq!(final_message(&frames)["status"], "complete");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for expected in [
        "virtual_companion_messages_sent_total{user_tier=\"free\"} 1",
        "virtual_companion_ai_generation_duration_seconds_count 1",
        "virtual_companion_ai_generation_duration_seconds_bucket{le=\"0.1\"}",
        "virtual_companion_ai_time_to_first_token_seconds_count 1",
        "virtual_companion_websocket_connections 1",
        "virtual_companion_ai_streaming_generations 0",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    let tokens = metrics
        .lines()
        .find_map(|l| l.strip_prefix("virtual_companion_ai_tokens_generated_total "))
        .unwrap();
    assert!(tokens.parse::<u64>().unwrap() > 0);

    let stopping = tokio::spawn(async move {
        app.stop().await.unwrap();
        app
    });
    assert_eq!(closed(&mut socket).await.0, CloseCode::Away);
    drop(stopping.await.unwrap());
}
