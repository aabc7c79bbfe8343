#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Many instances: three `companion serve` processes on their own ports against one
//! PostgreSQL database and one Redis, as a PaaS runs them.
//!
//! - Started together on an empty database, they apply each migration once.
//! - A user's request budget is one budget across the instances.
//! - A reply started through C reaches the user's sockets on A and on B.
//! - Every job runs once, and a recurring job once per period, whichever instance takes it.
//! - C killed in the middle of a reply: the others mark the reply `interrupted` with the
//!   text it had, the conversation takes messages again and the job queue keeps working.
//!
//! Redis is a private server (so the test can count the instances subscribed to realtime and
//! no other test shares its keys); logs are JSON lines, which the test reads.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::chat::{fake_settings, sse_events, words};
use support::fake_llm::{FakeModel, Reply};
use support::process::{PrivateRedis, Server};
use support::ws::{Socket, authorized_to, next, send};
use support::{TestDb, eventually};

/// A free user's budget in this test (requests per minute).
const BUDGET: u32 = 30;
/// How often the media sweep, a recurring job, runs here.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// `llm.orphaned_reply_secs` here: the shortest allowed.
const ORPHANED_AFTER: Duration = Duration::from_secs(10);

/// The JSON log lines of every server.
fn log_lines(servers: &[&Server]) -> Vec<Value> {
    servers
        .iter()
        .flat_map(|s| {
            s.log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

/// Frames until the reply `id` ends (its final `message` frame); the text its tokens carried.
async fn reply_text(socket: &mut Socket, id: &str) -> (String, Value) {
    let mut text = String::new();
    loop {
        let frame = next(socket).await;
        if frame["type"] == "token" && frame["messageId"] == id {
            text.push_str(frame["delta"].as_str().unwrap());
        }
        if frame["type"] == "message"
            && frame["message"]["id"] == id
            && frame["message"]["status"] != "streaming"
        {
            return (text, frame["message"].clone());
        }
    }
}

async fn socket_on(server: &Server, token: &str) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(authorized_to(server.port, token))
        .await
        .unwrap();
    // A round trip: the socket is registered before anything is sent.
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await["type"], "pong");
    socket
}

async fn send_message(server: &Server, token: &str, conversation: &str, text: &str) -> Value {
    let sent = server
        .client
        .post(server.url(&format!("/api/v1/conversations/{conversation}/messages")))
        .bearer_auth(token)
        .json(&json!({ "content": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    sent.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_database_and_one_redis() {
    let db = TestDb::empty().await;
    let redis = PrivateRedis::start().await;
    // The second request to the model is the long reply C is killed in; the others are short.
    let short = words(8);
    let long = words(600);
    let model = {
        let (short, long) = (sse_events(&short), sse_events(&long));
        FakeModel::start(move |i| {
            if i == 1 {
                Reply::new("text/event-stream", long.clone()).paced(Duration::from_millis(50))
            } else {
                Reply::new("text/event-stream", short.clone()).paced(Duration::from_millis(5))
            }
        })
        .await
    };
    let mut vars = vec![
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis.url()),
        (
            "COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE",
            BUDGET.to_string(),
        ),
        ("COMPANION__MAIL__TRANSPORT", "log".to_owned()),
        (
            "COMPANION__MEDIA__SWEEP_INTERVAL_SECS",
            SWEEP_EVERY.as_secs().to_string(),
        ),
        (
            "COMPANION__LLM__ORPHANED_REPLY_SECS",
            ORPHANED_AFTER.as_secs().to_string(),
        ),
        ("COMPANION__TELEMETRY__LOG_FORMAT", "json".to_owned()),
        (
            "COMPANION__TELEMETRY__LOG_LEVEL",
            "warn,companion::app=info,companion::platform::mail=info,\
             companion::platform::jobs=debug"
                .to_owned(),
        ),
    ];
    vars.extend(fake_settings(&model.url));

    // Started together on an empty database.
    let mut servers = join_all((0..3).map(|_| Server::start(&vars))).await;
    let mut c = servers.pop().unwrap();
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let latest = companion::platform::migrate::latest_version();
    let mut history: Vec<i32> = db
        .query_column("SELECT version FROM refinery_schema_history")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    history.sort_unstable();
    let expected: Vec<i32> = (1..=latest).collect();
    assert_eq!(history, expected, "each migration recorded once");
    let lines = log_lines(&[&a, &b, &c]);
    let applied: Vec<_> = with_message(&lines, "migration applied")
        .iter()
        .map(|l| l["migration"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        applied.len(),
        latest as usize,
        "one instance applied each migration, once: {applied:?}"
    );
    assert_eq!(applied.iter().collect::<BTreeSet<_>>().len(), applied.len());
    eventually(Duration::from_secs(10), || async {
        (redis.subscribers().await == 3).then_some(())
    })
    .await;

    // One budget across the instances.
    let spender = a.register("spender@example.com").await;
    let started = Instant::now();
    let mut allowed = BTreeMap::new();
    let mut refused = BTreeSet::new();
    for i in 0..BUDGET * 3 / 2 {
        let server = [&a, &b, &c][i as usize % 3];
        let response = server
            .client
            .get(server.url("/api/v1/users/profile"))
            .bearer_auth(&spender)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => *allowed.entry(server.port).or_insert(0) += 1,
            429 => {
                refused.insert(server.port);
            }
            other => panic!("answer {other}"),
        }
    }
    let total: u32 = allowed.values().sum();
    // GCRA lets the whole budget through at once, then one request per 60/BUDGET seconds.
    let refilled = (started.elapsed().as_secs_f64() * f64::from(BUDGET) / 60.0).ceil() as u32;
    assert!(
        (BUDGET..=BUDGET + refilled).contains(&total),
        "{total} requests allowed for a budget of {BUDGET}: {allowed:?}"
    );
    assert_eq!(refused.len(), 3, "every instance refuses once it is spent");

    // A reply started through C reaches the user's sockets on A and on B.
    let ann = b.register("ann@example.com").await;
    let talk = c.conversation(&ann).await;
    let mut on_a = socket_on(&a, &ann).await;
    let mut on_b = socket_on(&b, &ann).await;
    let answer = send_message(&c, &ann, &talk, "Hello from C").await;
    let reply = answer["reply"]["id"].as_str().unwrap();
    for socket in [&mut on_a, &mut on_b] {
        let (text, last) = reply_text(socket, reply).await;
        assert_eq!(text, short.concat());
        assert_eq!(last["status"], "complete");
        assert_eq!(last["content"], short.concat());
    }

    // Jobs: every registration mailed its verification once, whichever instance ran it.
    let mut people = Vec::new();
    for (i, server) in [&a, &b, &c].iter().cycle().take(12).enumerate() {
        let email = format!("person{i}@example.com");
        server.register(&email).await;
        people.push(email);
    }
    let mail_jobs = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["message"] == "job done" && l["span"]["kind"] == "mail.send")
            .map(|l| l["span"]["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let everyone = people.len() + 2;
    let lines = eventually(Duration::from_secs(20), || async {
        let lines = log_lines(&[&a, &b, &c]);
        (mail_jobs(&lines).len() >= everyone).then_some(lines)
    })
    .await;
    let done = mail_jobs(&lines);
    assert_eq!(done.len(), everyone, "one run per mail job");
    assert_eq!(done.iter().collect::<BTreeSet<_>>().len(), everyone);
    let mailed: Vec<_> = with_message(&lines, "mail (log transport)")
        .iter()
        .map(|l| l["to"].as_str().unwrap().to_owned())
        .collect();
    for person in &people {
        let times = mailed.iter().filter(|to| *to == person).count();
        assert_eq!(times, 1, "{person} was mailed once");
    }
    let ran_on: BTreeSet<_> = [&a, &b, &c]
        .iter()
        .filter(|s| s.log().contains("\"kind\":\"mail.send\""))
        .map(|s| s.port)
        .collect();
    assert!(ran_on.len() >= 2, "the work was shared: {ran_on:?}");

    // The recurring sweep: each period taken once, by one instance, and run once.
    tokio::time::sleep(SWEEP_EVERY * 4).await;
    let lines = log_lines(&[&a, &b, &c]);
    let periods: Vec<i64> = with_message(&lines, "recurring job enqueued")
        .iter()
        .filter(|l| l["schedule"] == "media.sweep")
        .map(|l| l["period"].as_i64().unwrap())
        .collect();
    let distinct: BTreeSet<_> = periods.iter().copied().collect();
    assert_eq!(distinct.len(), periods.len(), "a period twice: {periods:?}");
    assert!(
        periods.len() >= 4,
        "the sweep runs every second: {periods:?}"
    );
    let (first, last) = (*distinct.first().unwrap(), *distinct.last().unwrap());
    assert_eq!(
        last - first + 1,
        i64::try_from(periods.len()).unwrap(),
        "no period skipped: {periods:?}"
    );
    let sweeps: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "job done" && l["span"]["kind"] == "media.sweep")
        .map(|l| l["span"]["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        sweeps.iter().collect::<BTreeSet<_>>().len(),
        sweeps.len(),
        "a sweep job ran twice"
    );
    assert!(
        sweeps.len() + 1 >= periods.len(),
        "{sweeps:?} for {periods:?}"
    );

    // C is killed in the middle of a long reply.
    let long_talk = c.conversation(&ann).await;
    let request = c
        .client
        .post(c.url(&format!("/api/v1/conversations/{long_talk}/messages")))
        .bearer_auth(&ann)
        .json(&json!({"content": "Tell me a long story"}));
    let in_flight = tokio::spawn(request.send());
    let streaming = format!(
        "SELECT content FROM chat.messages WHERE conversation_id = '{long_talk}' \
         AND role = 'assistant' AND status = 'streaming' AND content <> ''"
    );
    eventually(Duration::from_secs(10), || async {
        (!db.query_column(&streaming).is_empty()).then_some(())
    })
    .await;
    c.kill().await;
    let killed = Instant::now();
    assert!(in_flight.await.unwrap().is_err(), "C's answer was cut");

    let repaired = format!(
        "SELECT content FROM chat.messages WHERE conversation_id = '{long_talk}' \
         AND role = 'assistant' AND status = 'interrupted'"
    );
    let kept = eventually(ORPHANED_AFTER * 3, || async {
        db.query_column(&repaired).into_iter().next()
    })
    .await;
    let took = killed.elapsed();
    let whole = long.concat();
    assert!(
        !kept.is_empty() && kept.len() < whole.len() && whole.starts_with(&kept),
        "the reply kept the text it had: {kept:?}"
    );
    // Orphaned after ORPHANED_AFTER without a heartbeat, found by a check that runs as often.
    assert!(
        took < ORPHANED_AFTER * 2 + Duration::from_secs(3),
        "repaired {took:?} after the kill"
    );
    assert!(
        took >= ORPHANED_AFTER - Duration::from_secs(6),
        "a live reply's heartbeat is every 5 s; repaired after {took:?}"
    );
    // The conversation takes messages again, through A, and the reply reaches B.
    let answer = send_message(&a, &ann, &long_talk, "Are you still there?").await;
    let reply = answer["reply"]["id"].as_str().unwrap();
    let (text, last) = reply_text(&mut on_b, reply).await;
    assert_eq!(last["status"], "complete");
    assert_eq!(text, short.concat());

    // The queue still works without C: new mail goes out, nothing is dead or stuck.
    let late = "late@example.com";
    a.register(late).await;
    eventually(Duration::from_secs(20), || async {
        let lines = log_lines(&[&a, &b]);
        let mailed = with_message(&lines, "mail (log transport)")
            .iter()
            .any(|l| l["to"] == late);
        mailed.then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), || async {
        let stuck = db.query_column(
            "SELECT kind || ' ' || state FROM platform.jobs \
             WHERE state = 'dead' OR (state = 'running' AND locked_until < now())",
        );
        stuck.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        redis.subscribers().await,
        2,
        "C's realtime subscription went with it"
    );
}
