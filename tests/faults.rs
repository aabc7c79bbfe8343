//! Fault tests: the real binary as a child process, with its dependencies failing under it.
//!
//! - PostgreSQL crashes under load and comes back: 503s with the envelope while it is gone,
//!   none that hangs, recovery on its own, and every acknowledged write still there.
//! - Redis goes away and comes back: the API keeps answering, login keeps its limit,
//!   realtime stays on this instance, `/ready` says so, and all returns with Redis.
//! - The language model is unreachable or goes silent: replies fail with a reason within the
//!   configured timeouts and nothing is left counted as open.
//! - SIGTERM with in-flight requests, replies streaming and 1,000 WebSockets.
//! - Started with a low soft limit on open files, the server raises it and holds more
//!   sockets than that limit would allow.
//!
//! The tests take turns (a lock): each measures time, and two cores shared with another's
//! load would blur what they measure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use companion::platform::db::WAIT_WHILE_DOWN;
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::chat::{LUNA, fake_settings, paced_model, words};
use support::fake_llm::{End, FakeModel, Reply};
use support::process::{PrivatePostgres, PrivateRedis, Server, free_port};
use support::ws::{Socket, authorized_to, closed, next, send};
use support::{TestDb, eventually};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The database pool's connect timeout in the test environment (config/test.toml).
const DB_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

async fn status_of(server: &Server, path: &str) -> u16 {
    server
        .client
        .get(server.url(path))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// The error object of an answer that must be the envelope with `status` and `code`.
async fn envelope(response: reqwest::Response, status: u16, code: &str) -> Value {
    support::assert_error(response, status, code).await
}

/// The value of the sample `name` (with its labels, as exported) on `/metrics`.
async fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// One request of the load: when it started, how long it took and how it ended.
struct Outcome {
    create: bool,
    started: Instant,
    took: Duration,
    ended: Ended,
}

enum Ended {
    /// 2xx; a conversation it created (owner's token, id).
    Done(Option<(String, String)>),
    /// 503 with the envelope.
    Unavailable,
    /// Anything else: what it was.
    Wrong(String),
}

/// A user's share of the load until `stop`: create a conversation, read the profile, again.
async fn load(server: Arc<Server>, token: String, stop: CancellationToken) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut create = true;
    while !stop.is_cancelled() {
        let started = Instant::now();
        let request = if create {
            server
                .client
                .post(server.url("/api/v1/conversations"))
                .json(&json!({"characterId": LUNA}))
        } else {
            server.client.get(server.url("/api/v1/users/profile"))
        };
        let answer = request
            .bearer_auth(&token)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let ended = match answer {
            Err(error) => Ended::Wrong(format!("no answer: {error}")),
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await.unwrap_or_default();
                let created = body["conversation"]["id"]
                    .as_str()
                    .map(|id| (token.clone(), id.to_owned()));
                Ended::Done(created)
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                let message = body["error"]["message"].as_str().unwrap_or_default();
                if status == 503
                    && body["error"]["code"] == "SERVICE_UNAVAILABLE"
                    && !message.is_empty()
                {
                    Ended::Unavailable
                } else {
                    Ended::Wrong(format!("{status} {body}"))
                }
            }
        };
        outcomes.push(Outcome {
            create,
            started,
            took: started.elapsed(),
            ended,
        });
        create = !create;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashing_under_load_costs_503s_never_a_hang_nor_an_acknowledged_write() {
    let _turn = TURNS.lock().await;
    let postgres = PrivatePostgres::start().await;
    let server = Arc::new(Server::start(&[("DATABASE_URL", postgres.url())]).await);
    eventually(Duration::from_secs(30), || async {
        (status_of(&server, "/ready").await == 200).then_some(())
    })
    .await;
    let mut tokens = Vec::new();
    for i in 0..6 {
        tokens.push(server.register(&format!("load{i}@example.com")).await);
    }

    let stop = CancellationToken::new();
    let users: Vec<_> = tokens
        .iter()
        .map(|token| tokio::spawn(load(server.clone(), token.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    postgres.crash().await;
    let down_at = Instant::now();
    // While it is gone the instance says it is not ready, and why.
    let ready = eventually(Duration::from_secs(5), || async {
        let response = server.client.get(server.url("/ready")).send().await.ok()?;
        (response.status() == 503).then_some(response)
    })
    .await;
    let error = envelope(ready, 503, "SERVICE_UNAVAILABLE").await;
    assert_eq!(error["details"]["checks"]["database"]["status"], "failed");
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;

    postgres.start_again().await;
    let back_at = Instant::now();
    // The instance finds it again by itself: ready, and writing.
    eventually(Duration::from_secs(5), || async {
        (status_of(&server, "/ready").await == 200).then_some(())
    })
    .await;
    let recovered = back_at.elapsed();
    assert!(
        recovered <= Duration::from_secs(5),
        "ready again {recovered:?} after PostgreSQL"
    );
    // The load goes on past the five seconds the instance has to recover.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(back_at.elapsed())).await;
    stop.cancel();
    let outcomes: Vec<Outcome> = join_all(users)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();

    let unavailable = outcomes
        .iter()
        .filter(|o| matches!(o.ended, Ended::Unavailable))
        .count();
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap();
    eprintln!(
        "{} requests, {unavailable} answered 503, slowest {slowest:?}; ready {recovered:?} after \
         PostgreSQL came back",
        outcomes.len()
    );
    for o in outcomes
        .iter()
        .filter(|o| o.took > Duration::from_millis(900))
    {
        eprintln!(
            "SLOW create={} started {:?} after the crash, took {:?}, done={}",
            o.create,
            o.started.saturating_duration_since(down_at),
            o.took,
            matches!(o.ended, Ended::Done(_))
        );
    }
    let wrong: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| match &o.ended {
            Ended::Wrong(what) => Some(what),
            _ => None,
        })
        .collect();
    assert!(wrong.is_empty(), "answers other than 2xx or 503: {wrong:?}");
    assert!(unavailable > 0, "the load met the outage");
    // A request waits for a connection at most the connect timeout, and once one could not
    // be had, at most WAIT_WHILE_DOWN: one that meets the outage twice waits both.
    assert!(
        slowest < DB_CONNECT_TIMEOUT + WAIT_WHILE_DOWN + Duration::from_millis(500),
        "no request hung: the slowest took {slowest:?}"
    );
    let late_failures = outcomes
        .iter()
        .filter(|o| o.started > back_at + Duration::from_secs(5))
        .filter(|o| !matches!(o.ended, Ended::Done(_)))
        .count();
    assert_eq!(late_failures, 0, "every request succeeds once recovered");
    let after = outcomes
        .iter()
        .filter(|o| o.started > back_at + Duration::from_secs(5))
        .count();
    assert!(after > 0, "requests ran after the recovery");

    // Every conversation whose creation was acknowledged is there.
    let created: Vec<&(String, String)> = outcomes
        .iter()
        .filter_map(|o| match &o.ended {
            Ended::Done(Some(created)) => Some(created),
            _ => None,
        })
        .collect();
    assert!(created.len() > 10, "{} writes", created.len());
    let stored = postgres.column("SELECT id::text FROM chat.conversations");
    for (token, id) in &created {
        assert!(
            stored.contains(id),
            "acknowledged conversation {id} is lost"
        );
        let read = server
            .client
            .get(server.url(&format!("/api/v1/conversations/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
    }
}

/// Sends `content` in conversation `id` over `socket` and returns the frames up to the
/// reply's final message.
async fn converse(socket: &mut Socket, id: &str, content: &str) -> Vec<Value> {
    send(
        socket,
        json!({"type": "message", "conversationId": id, "content": content}),
    )
    .await;
    let mut frames = Vec::new();
    loop {
        let frame = next(socket).await;
        let done = frame["type"] == "message"
            && frame["message"]["role"] == "assistant"
            && frame["message"]["status"] != "streaming";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_api_answers_login_stays_limited_and_all_returns_with_it() {
    let _turn = TURNS.lock().await;
    let db = TestDb::fresh().await;
    let mut redis = PrivateRedis::start().await;
    let server = Server::start(&[
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis.url()),
        (
            "COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE",
            "8".to_owned(),
        ),
        ("COMPANION__RATELIMIT__LOGIN_PER_MINUTE", "3".to_owned()),
    ])
    .await;
    eventually(Duration::from_secs(10), || async {
        (redis.subscribers().await == 1).then_some(())
    })
    .await;
    let (token, id, mut socket) = ready_to_talk(&server, "ann@example.com").await;
    let profile = || {
        server
            .client
            .get(server.url("/api/v1/users/profile"))
            .bearer_auth(&token)
            .send()
    };

    redis.stop().await;
    let error = envelope(
        server
            .client
            .get(server.url("/ready"))
            .send()
            .await
            .unwrap(),
        503,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    assert_eq!(error["details"]["checks"]["redis"]["status"], "failed");
    assert_eq!(error["details"]["checks"]["database"]["status"], "ok");

    // General traffic flows, past the plan's budget of 8 a minute (the limiter fails open).
    for _ in 0..12 {
        assert_eq!(profile().await.unwrap().status(), 200);
    }
    // Login keeps its limit of 3 a minute, counted by this instance.
    let login = || {
        server
            .client
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"email": "ann@example.com", "password": "not the password"}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(login().await.unwrap().status(), 401);
    }
    envelope(login().await.unwrap(), 429, "RATE_LIMITED").await;
    // A reply reaches the user's socket from this instance.
    let frames = converse(&mut socket, &id, "Are you there?").await;
    assert_eq!(frames.last().unwrap()["message"]["status"], "complete");
    assert!(frames.iter().any(|f| f["type"] == "token"));

    redis.start_again().await;
    eventually(Duration::from_secs(10), || async {
        (status_of(&server, "/ready").await == 200).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        (redis.subscribers().await == 1).then_some(())
    })
    .await;
    // Replies reach the socket through Redis again.
    let frames = converse(&mut socket, &id, "And now?").await;
    assert_eq!(frames.last().unwrap()["message"]["status"], "complete");
    // Limits hold again: the new Redis counts from zero (the message above counted) and
    // refuses past 8.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(profile().await.unwrap().status().as_u16());
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    assert!((1..8).contains(&allowed), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    drop(db);
}

/// A user with a conversation and an open socket on `server`.
async fn ready_to_talk(server: &Server, email: &str) -> (String, String, Socket) {
    let token = server.register(email).await;
    let id = server.conversation(&token).await;
    let (socket, _) = tokio_tungstenite::connect_async(authorized_to(server.port, &token))
        .await
        .unwrap();
    (token, id, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_silent_model_fails_the_reply_in_time_and_leaks_nothing() {
    let _turn = TURNS.lock().await;
    let db = TestDb::fresh().await;
    let timeouts = [
        ("COMPANION__LLM__CONNECT_TIMEOUT_MS", "500".to_owned()),
        ("COMPANION__LLM__FIRST_TOKEN_TIMEOUT_MS", "1000".to_owned()),
        ("COMPANION__LLM__IDLE_TIMEOUT_MS", "1000".to_owned()),
        ("COMPANION__LLM__TOTAL_TIMEOUT_MS", "4000".to_owned()),
    ];
    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"I was saying \"}}]}\n\n";
    // Headers then silence; some text then silence; a slow trickle that outlasts the total.
    let silent =
        FakeModel::start(|_| Reply::new("text/event-stream", Vec::new()).then(End::Hang)).await;
    let stalls = FakeModel::start(move |_| {
        Reply::new("text/event-stream", vec![first.as_bytes().to_vec()]).then(End::Hang)
    })
    .await;
    let trickle = paced_model(&words(100), Duration::from_millis(500)).await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let cases = [
        (nowhere.as_str(), "llm_unreachable", Duration::from_secs(2)),
        (
            silent.url.as_str(),
            "llm_first_token_timeout",
            Duration::from_secs(1),
        ),
        (
            stalls.url.as_str(),
            "llm_idle_timeout",
            Duration::from_secs(1),
        ),
        (
            trickle.url.as_str(),
            "llm_total_timeout",
            Duration::from_secs(4),
        ),
    ];
    for (i, (url, code, limit)) in cases.into_iter().enumerate() {
        let mut vars = vec![("DATABASE_URL", db.url.clone())];
        vars.extend(fake_settings(url));
        vars.extend(timeouts.iter().cloned());
        let server = Server::start(&vars).await;
        let (token, id, mut socket) = ready_to_talk(&server, &format!("u{i}@example.com")).await;

        let started = Instant::now();
        let frames = converse(&mut socket, &id, "Hello?").await;
        let took = started.elapsed();
        let reply = &frames.last().unwrap()["message"];
        assert_eq!(reply["status"], "failed", "{code}: {reply}");
        assert_eq!(reply["failure"]["code"], code, "{reply}");
        assert!(
            reply["failure"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(
            took < limit + Duration::from_secs(1),
            "{code}: failed after {took:?}"
        );
        // What it wrote before it stalled is kept.
        if code == "llm_idle_timeout" {
            assert_eq!(reply["content"], "I was saying ");
        }
        // The same over HTTP, for a second message: the request ends with the failed reply.
        let answer = server
            .client
            .post(server.url(&format!("/api/v1/conversations/{id}/messages")))
            .bearer_auth(&token)
            .json(&json!({"content": "Still there?"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["reply"]["failure"]["code"], code, "{answer}");

        let errors = format!("virtual_companion_ai_upstream_errors_total{{code=\"{code}\"}}");
        assert_eq!(metric(&server, &errors).await, Some(2.0));
        assert_eq!(
            metric(&server, "virtual_companion_ai_streaming_generations").await,
            Some(0.0)
        );
        drop(socket);
        eventually(Duration::from_secs(5), || async {
            let open = metric(&server, "virtual_companion_websocket_connections").await;
            (open == Some(0.0)).then_some(())
        })
        .await;
    }
    // Every connection the server held open to a silent model was closed.
    eventually(Duration::from_secs(5), || async {
        (silent.closed_by_client() == silent.connections()
            && stalls.closed_by_client() == stalls.connections())
        .then_some(())
    })
    .await;
    assert_eq!(silent.connections(), 2);
    assert_eq!(stalls.connections(), 2);
    drop(db);
}

/// A multipart upload of a small PNG whose body arrives in two halves `pause` apart.
fn slow_upload(server: &Server, token: &str, pause: Duration) -> reqwest::RequestBuilder {
    let boundary = "fault-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nimage\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend(support::images::png(64, 0));
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let second = body.split_off(body.len() / 2);
    let halves = futures_util::stream::iter([(body, Duration::ZERO), (second, pause)]).then(
        |(bytes, pause)| async move {
            tokio::time::sleep(pause).await;
            Ok::<_, std::io::Error>(bytes)
        },
    );
    server
        .client
        .post(server.url("/api/v1/media/upload"))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(halves))
}

/// `count` WebSockets to `server`, a hundred at a time, signed in with `tokens` in turn; each
/// shown to be live by a round trip.
async fn open_sockets(server: &Server, tokens: &[String], count: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(100) {
        let opened = join_all((batch * 100..count.min(batch * 100 + 100)).map(|i| {
            let request = authorized_to(server.port, &tokens[i % tokens.len()]);
            async move {
                let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                send(&mut socket, json!({"type": "ping"})).await;
                assert_eq!(next(&mut socket).await["type"], "pong");
                socket
            }
        }))
        .await;
        sockets.extend(opened);
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_keeps_replies_closes_sockets_and_exits_zero() {
    let _turn = TURNS.lock().await;
    const SOCKETS: usize = 1000;
    const USERS: usize = 4;
    let grace = Duration::from_secs(10);
    let pieces = words(400);
    let model = paced_model(&pieces, Duration::from_millis(25)).await;
    let db = TestDb::fresh().await;
    let mut vars = vec![
        ("DATABASE_URL", db.url.clone()),
        ("COMPANION__SERVER__SHUTDOWN_TIMEOUT_SECS", "10".to_owned()),
        ("COMPANION__WEBSOCKET__MAX_PER_USER", "0".to_owned()),
    ];
    vars.extend(fake_settings(&model.url));
    let mut server = Server::start(&vars).await;
    let mut tokens = Vec::new();
    for i in 0..USERS {
        tokens.push(server.register(&format!("u{i}@example.com")).await);
    }

    // 1,000 sockets, each shown to be live by a round trip.
    let mut sockets = open_sockets(&server, &tokens, SOCKETS).await;
    assert_eq!(
        metric(&server, "virtual_companion_websocket_connections").await,
        Some(SOCKETS as f64)
    );

    // Replies streaming: three waited for as JSON, one as server-sent events.
    let mut conversations = Vec::new();
    for token in &tokens {
        conversations.push((token.clone(), server.conversation(token).await));
    }
    let replies: Vec<_> = conversations
        .iter()
        .enumerate()
        .map(|(i, (token, id))| {
            let mut request = server
                .client
                .post(server.url(&format!("/api/v1/conversations/{id}/messages")))
                .bearer_auth(token)
                .json(&json!({"content": "Tell me a long story"}));
            if i == USERS - 1 {
                request = request.header("accept", "text/event-stream");
            }
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect();
    eventually(Duration::from_secs(10), || async {
        let written = db_count(
            &db,
            "SELECT count(*) FROM chat.messages WHERE status = 'streaming' AND content <> ''",
        );
        (written == USERS as i64).then_some(())
    })
    .await;
    // An upload in the middle of its body.
    let upload = tokio::spawn(slow_upload(&server, &tokens[0], Duration::from_millis(1500)).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.terminate().await;
    let terminated = Instant::now();

    let codes = join_all(sockets.iter_mut().map(|socket| async move {
        tokio::time::timeout(grace, closed(socket))
            .await
            .ok()
            .map(|c| c.0)
    }))
    .await;
    let away = codes
        .iter()
        .filter(|c| **c == Some(CloseCode::Away))
        .count();
    assert_eq!(away, SOCKETS, "every socket closed with 1001: {codes:?}");

    let uploaded = upload.await.unwrap().unwrap();
    assert_eq!(uploaded.status(), 201, "the upload in flight completed");
    let mut answered = Vec::new();
    for reply in replies {
        answered.push(reply.await.unwrap());
    }
    let status = server.exited(grace).await;
    let took = terminated.elapsed();
    assert_eq!(status.code(), Some(0), "exit status");
    assert!(took < grace, "exited {took:?} after SIGTERM");

    // Each reply is stored as interrupted with the text it had, and its request said so.
    let whole = pieces.concat();
    for (i, (status, body)) in answered.iter().enumerate() {
        let (_, id) = &conversations[i];
        let stored = db_row(
            &db,
            &format!(
                "SELECT status::text, content FROM chat.messages WHERE conversation_id = '{id}' \
                 AND role = 'assistant' AND parent_id IS NOT NULL"
            ),
        );
        let (stored_status, text) = (&stored[0], &stored[1]);
        assert_eq!(stored_status, "interrupted");
        assert!(
            !text.is_empty() && text.len() < whole.len() && whole.starts_with(text.as_str()),
            "kept the text it had: {text:?}"
        );
        if i == USERS - 1 {
            assert_eq!(*status, 200);
            let last = body
                .split("\n\n")
                .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data:")))
                .last()
                .unwrap();
            let last: Value = serde_json::from_str(last.trim()).unwrap();
            assert_eq!(last["status"], "interrupted", "{last}");
            assert_eq!(last["content"], text.as_str());
        } else {
            assert_eq!(*status, 201, "{body}");
            let body: Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["reply"]["status"], "interrupted");
            assert_eq!(body["reply"]["content"], text.as_str());
        }
    }
}

/// The first row `sql` returns, as text.
fn db_row(db: &TestDb, sql: &str) -> Vec<String> {
    let sql = sql.to_owned();
    db.with_client(move |client| {
        let row = client.query_one(&sql, &[]).unwrap();
        (0..row.len())
            .map(|i| row.get::<_, Option<String>>(i).unwrap_or_default())
            .collect()
    })
}

fn db_count(db: &TestDb, sql: &str) -> i64 {
    db.with_client({
        let sql = sql.to_owned();
        move |client| client.query_one(&sql, &[]).unwrap().get(0)
    })
}

/// The soft limit on open files a service manager hands a process is often 1,024, while
/// each socket is a file. The server raises its soft limit to the hard one at start, so a
/// server started with a soft limit of 256 holds 400 WebSockets (and says so in its log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_raises_its_open_file_limit_to_the_hard_limit() {
    let _turn = TURNS.lock().await;
    const SOCKETS: usize = 400;
    let db = TestDb::fresh().await;
    let server = Server::start_with_open_files(
        &[
            ("DATABASE_URL", db.url.clone()),
            ("COMPANION__WEBSOCKET__MAX_PER_USER", "0".to_owned()),
            ("COMPANION__TELEMETRY__LOG_LEVEL", "info".to_owned()),
        ],
        256,
        4096,
    )
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(&open_files[3..5], ["4096", "4096"], "{limits}");

    let token = server.register("many@example.com").await;
    let _sockets = open_sockets(&server, &[token], SOCKETS).await;
    assert_eq!(
        metric(&server, "virtual_companion_websocket_connections").await,
        Some(SOCKETS as f64)
    );
    let log = server.log();
    let said = log
        .lines()
        .find(|l| l.contains("open file limit"))
        .unwrap_or_else(|| panic!("no open file limit in the log: {log}"));
    assert!(said.contains("4096"), "{said}");
}
