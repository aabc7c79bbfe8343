//! The measuring half of `bench/chat.sh` (built as the example `chat_bench`).
//!
//! - `ttft`: starts a fake OpenAI-compatible model (the one the tests use) and a server that
//!   uses it, then alternates a streamed request straight to the model with a message sent
//!   through the server (`POST …/messages`, `Accept: text/event-stream`), timing each until
//!   its first piece of text, and prints both distributions and what the server adds (and,
//!   through the server, the time to the answer's head: the user's message is stored by
//!   then, so it shows whether the first token waited for storing or for the model). The
//!   request straight to the model is the one the server sent it for the previous message,
//!   so the model reads the same prompt either way.
//! - `tokens`: prints an access token for each `user session` line (for `idle`).
//! - `idle`: opens WebSocket connections with those tokens and holds them open, reading
//!   (so pings are answered), until killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/fake_llm.rs"]
#[allow(dead_code)]
mod fake_llm;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use companion::Settings;
use companion::platform::http::TokenKeys;
use fake_llm::{End, FakeModel, Reply, openai_events};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use uuid::Uuid;

/// Luna, a public starter character.
const LUNA: &str = "01930000-0000-7000-8000-000000000001";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Ttft {
        /// The server binary to start.
        #[arg(long)]
        server_bin: PathBuf,
        #[arg(long, default_value_t = 18093)]
        port: u16,
        /// Measured requests of each kind (after 30 of warm-up).
        #[arg(long, default_value_t = 500)]
        count: usize,
        /// Milliseconds between one round and the next (a person reads a reply before
        /// writing again; 0 sends at once, while the last reply's bookkeeping still runs).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        /// The fake model closes its connection after each answer, so every request to it
        /// opens a new one (the measure before session 35). By default it keeps connections
        /// open, as model servers do for clients that pool them.
        #[arg(long)]
        model_closes: bool,
    },
    Tokens {
        /// Lines `user-id session-id`.
        #[arg(long)]
        sessions: PathBuf,
    },
    Idle {
        /// `ws://host:port/api/v1/ws`
        #[arg(long)]
        url: String,
        /// One access token per line; connections take them in turn.
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
}

#[tokio::main]
async fn main() {
    match Cli::parse().command {
        Command::Ttft {
            server_bin,
            port,
            count,
            pause_ms,
            model_closes,
        } => {
            let end = if model_closes {
                End::Close
            } else {
                End::KeepAlive
            };
            ttft(
                &server_bin,
                port,
                count,
                Duration::from_millis(pause_ms),
                end,
            )
            .await
        }
        Command::Tokens { sessions } => tokens(&sessions),
        Command::Idle { url, tokens, count } => idle(&url, &tokens, count).await,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Reads `response` until `marker` appears (the time of that is returned), then to its end.
async fn first_then_rest(response: reqwest::Response, marker: &[u8], started: Instant) -> f64 {
    assert!(
        response.status().is_success(),
        "answer {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut seen = Vec::new();
    let mut first = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        if first.is_none() {
            seen.extend_from_slice(&chunk);
            if seen.windows(marker.len()).any(|w| w == marker) {
                first = Some(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    first.expect("the answer held no text")
}

async fn ttft(server_bin: &Path, port: u16, count: usize, pause: Duration, end: End) {
    let events = openai_events(&["Hello", " there, traveller."], "\n\n", (20, 4));
    let reply = Reply::new("text/event-stream", vec![events]);
    let reply = match end {
        // The body's end follows at once, so the connection is free again.
        End::KeepAlive => reply.paced(Duration::ZERO).then(end),
        _ => reply,
    };
    let fake = FakeModel::start(move |_| reply.clone()).await;
    let mut server = tokio::process::Command::new(server_bin)
        .arg("serve")
        .env("PORT", port.to_string())
        .env("COMPANION__LLM__PROVIDER", "openai")
        .env("COMPANION__LLM__BASE_URL", &fake.url)
        .env("COMPANION__LLM__MODEL", "fake")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    while client
        .get(format!("{base}/ready"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let registered: Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(
            &json!({"email": format!("ttft-{}@example.com", Uuid::now_v7()),
                      "password": "a long and unusual passphrase", "displayName": "Bench"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    let created: Value = client
        .post(format!("{base}/api/v1/conversations"))
        .bearer_auth(&token)
        .json(&json!({"characterId": LUNA}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = created["conversation"]["id"].as_str().unwrap().to_owned();
    let send_url = format!("{base}/api/v1/conversations/{conversation}/messages");
    let model_url = format!("{}/chat/completions", fake.url);
    // A request straight to the model carries what the server sent it for the previous
    // message (the whole prompt: persona and history), so both paths ask the model for the
    // same work and the difference is the server's own.
    let mut model_body = json!({"model": "fake", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hello"}]});

    let (mut direct, mut through, mut heads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..count + 30 {
        tokio::time::sleep(pause).await;
        let started = Instant::now();
        let response = client
            .post(&model_url)
            .json(&model_body)
            .send()
            .await
            .unwrap();
        let straight = first_then_rest(response, b"\"content\":\"Hello\"", started).await;
        let started = Instant::now();
        let response = client
            .post(&send_url)
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .json(&json!({"content": format!("Message {round}")}))
            .send()
            .await
            .unwrap();
        let head = started.elapsed().as_secs_f64() * 1000.0;
        let served = first_then_rest(response, b"event: token", started).await;
        if let Some(sent) = fake.last_request() {
            model_body = sent;
        }
        if round >= 30 {
            direct.push(straight);
            through.push(served);
            heads.push(head);
        }
    }
    server.kill().await.ok();
    let model_connections = fake.connections();
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    heads.sort_by(f64::total_cmp);
    let row = |name: &str, values: &[f64]| {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} |",
            percentile(values, 50.0),
            percentile(values, 99.0),
            values.iter().sum::<f64>() / values.len() as f64
        );
    };
    println!("{count} sends, one at a time, alternating; milliseconds to the first text");
    println!("| path | p50 | p99 | mean |");
    println!("|---|---|---|---|");
    row("straight from the fake model", &direct);
    row("through the server (SSE)", &through);
    row(
        "through the server: the answer's head (the message stored)",
        &heads,
    );
    println!(
        "| added by the server | {:.3} | {:.3} | |",
        percentile(&through, 50.0) - percentile(&direct, 50.0),
        percentile(&through, 99.0) - percentile(&direct, 99.0)
    );
    println!(
        "the fake model saw {model_connections} connections for {} requests",
        2 * (count + 30)
    );
}

fn tokens(sessions: &Path) {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let settings = Settings::load(Path::new("config"), &vars).expect("the configuration loads");
    let keys = TokenKeys::new(&settings.auth).expect("the signing key loads");
    let lines = std::fs::read_to_string(sessions).unwrap();
    let mut out = std::io::stdout().lock();
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let (user, session) = line.split_once(' ').expect("`user session` lines");
        let token = keys
            .issue_access(
                user.trim().parse().unwrap(),
                session.trim().parse().unwrap(),
                "user",
                "free",
                Duration::from_secs(3600),
            )
            .unwrap();
        writeln!(out, "{token}").unwrap();
    }
}

async fn idle(url: &str, tokens: &Path, count: usize) {
    let tokens: Vec<String> = std::fs::read_to_string(tokens)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let opened = stream::iter(0..count)
        .map(|i| {
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {}", tokens[i % tokens.len()])).unwrap(),
            );
            async move { tokio_tungstenite::connect_async(request).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut failed = 0;
    for socket in opened {
        match socket {
            // Reading answers the server's pings; an idle connection gets nothing else.
            Ok((mut socket, _)) => {
                tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} });
            }
            Err(_) => failed += 1,
        }
    }
    println!("open {} failed {failed}", count - failed);
    std::future::pending::<()>().await;
}
