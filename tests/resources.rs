//! Resource consumption: what one client can make the server hold or do is bounded. Bodies
//! too large, too deep or too long; pages too big; requests that trickle in (slowloris);
//! too many WebSockets for one account; floods of frames. Each is refused with the envelope
//! (or a close code) and the server keeps serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::chat::{LUNA, start};
use support::ws::{Socket, authorized, closed, connect, next, open, refused, send, ws_request};
use support::{TestApp, assert_error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How many characters `user` owns.
fn characters_of(app: &TestApp, user: &str) -> String {
    app.query_one(&format!(
        "SELECT count(*) FROM catalog.characters WHERE owner_id = '{user}'"
    ))
    .unwrap()
}

#[tokio::test]
async fn bodies_too_large_too_deep_or_too_long_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let user = app.premium("big@example.com").await;
    let create = |body: String| {
        app.client
            .post(app.url("/api/v1/characters"))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // Over the JSON limit (256 KiB): refused before it is parsed.
    let large = json!({ "name": "Big", "description": "x".repeat(300 * 1024) }).to_string();
    assert_error(create(large).await.unwrap(), 413, "PAYLOAD_TOO_LARGE").await;

    // Nested 50,000 deep, well under the size limit: the parser's depth limit answers.
    let deep = format!(
        r#"{{"name":"Deep","extensions":{}{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    assert!(deep.len() < 256 * 1024);
    let error = assert_error(create(deep).await.unwrap(), 400, "BAD_REQUEST").await;
    assert!(
        !error.to_string().contains("recursion"),
        "the parser's words stay in the logs: {error}"
    );

    // 30,000 tags fit in the body but not in a character.
    let tags: Vec<String> = (0..30_000).map(|i| format!("t{i}")).collect();
    let long = json!({ "name": "Tagged", "tags": tags }).to_string();
    let error = assert_error(create(long).await.unwrap(), 422, "VALIDATION_ERROR").await;
    assert!(error["details"]["fields"]["tags"].is_string(), "{error}");

    // The same over the WebSocket: a deep frame is an error frame, the connection stays.
    let mut socket = connect(&app, &user).await;
    send_text(
        &mut socket,
        format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)),
    )
    .await;
    assert_eq!(next(&mut socket).await["code"], "BAD_REQUEST");
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut socket).await["type"], "pong");

    assert_eq!(characters_of(&app, &user.id), "0");
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn pages_are_capped_whatever_size_is_asked() {
    let app = TestApp::spawn().await;
    let user = app.register("pages@example.com").await;
    // The catalog caps the size it answers with (its README says so)…
    let listed = app
        .get_auth("/api/v1/characters?size=1000000", &user.token)
        .await;
    assert_eq!(listed.status(), 200);
    let page: Value = listed.json().await.unwrap();
    assert_eq!(page["size"], 100, "{page}");
    // …the other lists refuse it by name.
    for path in [
        "/api/v1/conversations?size=1000000",
        "/api/v1/media?size=1000000",
        "/api/v1/characters?page=1000000000000",
    ] {
        let response = app.get_auth(path, &user.token).await;
        assert_eq!(response.status(), 422, "{path}");
        let error = assert_error(response, 422, "VALIDATION_ERROR").await;
        let field = if path.contains("page=") {
            "page"
        } else {
            "size"
        };
        assert!(
            error["details"]["fields"][field].is_string(),
            "{path}: {error}"
        );
    }
    // History pages are cut to 200 messages rather than refused.
    let (conversation, _) = start(&app, &user, LUNA, None).await;
    let history = app
        .get_auth(
            &format!("/api/v1/conversations/{conversation}/messages?limit=1000000"),
            &user.token,
        )
        .await;
    assert_eq!(history.status(), 200);
    let page: Value = history.json().await.unwrap();
    assert!(page["messages"].as_array().unwrap().len() <= 200);
}

/// What the server sends on `stream` until it closes it, or until `patience` runs out.
async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(patience, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

async fn slow_server() -> TestApp {
    TestApp::spawn_with_vars(&[
        ("COMPANION__SERVER__REQUEST_HEAD_TIMEOUT_MS", "500"),
        ("COMPANION__SERVER__BODY_IDLE_TIMEOUT_MS", "500"),
        ("COMPANION__SERVER__BODY_TIMEOUT_SECS", "2"),
    ])
    .await
}

#[tokio::test]
async fn a_request_that_trickles_in_is_cut_off_with_408() {
    let app = slow_server().await;
    let address = format!("127.0.0.1:{}", app.port);

    // Headers that never end.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the connection is closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // A body that stops halfway.
    let login = r#"{"email":"slow@example.com","password":"a long and unusual passphrase"}"#;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        login.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&login.as_bytes()[..login.len() / 2])
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the connection is closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains(r#""code":"REQUEST_TIMEOUT""#), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );

    // A body that keeps coming, a byte at a time, too slowly to ever finish in time.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let drip = async {
        for byte in login.as_bytes() {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drip).await;
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut off at the total deadline, not at the end of the body"
    );

    // Meanwhile, and after, everyone else is served.
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn an_upload_that_stalls_gets_408_and_leaves_no_object() {
    let app = slow_server().await;
    let user = app.register("stall@example.com").await;
    let boundary = "x-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nimage\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    );
    let mut part = head.into_bytes();
    part.extend_from_slice(&support::images::png(64, 200_000)[..100_000]);
    let mut stream = TcpStream::connect(format!("127.0.0.1:{}", app.port))
        .await
        .unwrap();
    let request = format!(
        "POST /api/v1/media/upload HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: 500000\r\n\r\n",
        user.token
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&part).await.unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let objects = app.object_keys().await;
    assert!(objects.is_empty(), "no partial object: {objects:?}");
    let rows = app.query_one("SELECT count(*) FROM media.objects").unwrap();
    assert_eq!(rows, "0");
}

async fn send_text(socket: &mut Socket, text: String) {
    socket.send(Message::Text(text.into())).await.unwrap();
}

#[tokio::test]
async fn one_account_holds_a_bounded_number_of_websockets() {
    let app = TestApp::spawn_with_vars(&[("COMPANION__WEBSOCKET__MAX_PER_USER", "3")]).await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let mut open_ones = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(&app, &ann).await;
        send(&mut socket, json!({ "type": "ping" })).await;
        assert_eq!(next(&mut socket).await["type"], "pong");
        open_ones.push(socket);
    }

    // The fourth: refused at the handshake when the token comes with it…
    let (status, body) = refused(authorized(&app, &ann)).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // …and closed after its `auth` frame when it comes that way.
    let mut late = open(ws_request(&app)).await;
    send(
        &mut late,
        json!({ "type": "auth", "token": ann.token, "ref": "a" }),
    )
    .await;
    let error = next(&mut late).await;
    assert_eq!(error["code"], "RATE_LIMITED");
    assert_eq!(error["ref"], "a");
    assert_eq!(closed(&mut late).await.0, CloseCode::Policy);

    // Someone else is not affected.
    let mut bobs = connect(&app, &bob).await;
    send(&mut bobs, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut bobs).await["type"], "pong");

    // Closing one frees its place.
    let mut first = open_ones.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    let mut again = support::eventually(Duration::from_secs(5), || async {
        tokio_tungstenite::connect_async(authorized(&app, &ann))
            .await
            .ok()
            .map(|(socket, _)| socket)
    })
    .await;
    send(&mut again, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut again).await["type"], "pong");
}

#[tokio::test]
async fn a_flood_of_frames_is_refused_then_disconnected() {
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__WEBSOCKET__FRAMES_PER_SECOND", "1"),
        ("COMPANION__WEBSOCKET__FRAME_BURST", "10"),
    ])
    .await;
    let ann = app.register("ann@example.com").await;
    let (conversation, _) = start(&app, &ann, LUNA, None).await;
    let stored = || {
        app.query_one(&format!(
            "SELECT count(*) FROM chat.messages WHERE conversation_id = '{conversation}'"
        ))
        .unwrap()
    };
    let before = stored();
    let mut socket = connect(&app, &ann).await;
    // The burst is served…
    for _ in 0..10 {
        send(&mut socket, json!({ "type": "ping" })).await;
    }
    for _ in 0..10 {
        assert_eq!(next(&mut socket).await["type"], "pong");
    }
    // …what comes after it is not read…
    send(
        &mut socket,
        json!({ "type": "message", "conversationId": conversation, "content": "hi", "ref": "m" }),
    )
    .await;
    let refusal = next(&mut socket).await;
    assert_eq!(refusal["code"], "RATE_LIMITED", "{refusal}");
    // …and a client that keeps flooding is closed.
    let mut refusals = 1;
    let code = loop {
        if socket
            .send(Message::Text(json!({ "type": "ping" }).to_string().into()))
            .await
            .is_err()
        {
            break closed(&mut socket).await.0;
        }
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(frame["code"], "RATE_LIMITED", "{frame}");
                refusals += 1;
            }
            Some(Ok(Message::Close(Some(frame)))) => break frame.code,
            other => panic!("unexpected {other:?}"),
        }
        assert!(refusals < 100, "the flood is never cut off");
    };
    assert_eq!(code, CloseCode::Policy);
    assert_eq!(stored(), before, "the refused message was not stored");
    // The account itself is not blocked: a calm connection works.
    let mut calm = connect(&app, &ann).await;
    send(&mut calm, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut calm).await["type"], "pong");
}
