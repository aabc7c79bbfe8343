//! Privacy's jobs survive `kill -9`: the server (the real binary, as a child process) is
//! killed in the middle of an export and of an erasure; a new one finishes the job with the
//! same end state and no side effect twice. The export is of an account with 100,000
//! messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::{PASSWORD, TestDb, eventually};
use tokio::process::{Child, Command};

const MESSAGES: u32 = 100_000;

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

/// The binary on `db`, with its objects under `objects` (on disk, so they outlive it).
async fn serve(db: &TestDb, objects: &std::path::Path, grace_days: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_companion"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "COMPANION_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("COMPANION_ENV", "test")
        .env("DATABASE_URL", &db.url)
        .env("PORT", port.to_string())
        .env(
            "COMPANION__STORAGE__URL",
            format!("file://{}", objects.display()),
        )
        .env("COMPANION__PRIVACY__DELETION_GRACE_DAYS", grace_days)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        // No idle connections kept: seeding takes longer than the server's keep-alive.
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
    };
    let ready = format!("{}/ready", server.base);
    eventually(Duration::from_secs(30), || async {
        let status = server.client.get(&ready).send().await.ok()?.status();
        (status == 200).then_some(())
    })
    .await;
    server
}

impl Server {
    async fn kill_9(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        self.child.wait().await.unwrap();
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// Registers an account and gives it one conversation of [`MESSAGES`] messages (a chain,
/// written straight into the database: the point is the job, not the chat).
async fn account_with_history(server: &Server, db: &TestDb, email: &str) -> (String, String) {
    let registered = server
        .post(
            "/api/v1/auth/register",
            None,
            json!({ "email": email, "password": PASSWORD, "displayName": "Heavy" }),
        )
        .await;
    assert_eq!(registered.status(), 201);
    let body: Value = registered.json().await.unwrap();
    let user = body["user"]["id"].as_str().unwrap().to_owned();
    let token = body["token"].as_str().unwrap().to_owned();
    let url = db.url.clone();
    let owner = user.clone();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!(
                "INSERT INTO chat.conversations (id, user_id, character_id, character_name, title) \
                 VALUES ('01930000-0000-7000-9000-000000000001', '{owner}', \
                         '01930000-0000-7000-8000-000000000001', 'Luna', 'A long talk'); \
                 INSERT INTO chat.messages (id, conversation_id, parent_id, depth, role, content) \
                 SELECT ('01930000-0000-7000-a000-' || lpad(to_hex(i), 12, '0'))::uuid, \
                        '01930000-0000-7000-9000-000000000001', \
                        CASE WHEN i > 1 THEN ('01930000-0000-7000-a000-' || lpad(to_hex(i - 1), 12, '0'))::uuid END, \
                        i - 1, CASE WHEN i % 2 = 0 THEN 'assistant' ELSE 'user' END, \
                        'message number ' || i || ': the tide comes in over the rocks below the lighthouse' \
                 FROM generate_series(1, {MESSAGES}) i;"
            ))
            .unwrap();
    })
    .join()
    .unwrap();
    (user, token)
}

fn query(db: &TestDb, sql: &str) -> String {
    let (url, sql) = (db.url.clone(), format!("SELECT ({sql})::text"));
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .query_one(&sql, &[])
            .unwrap()
            .get::<_, Option<String>>(0)
            .unwrap_or_default()
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn an_export_killed_midway_is_finished_by_the_next_server() {
    let db = TestDb::fresh().await;
    let objects = std::env::temp_dir().join(format!("companion-crash-{}", uuid::Uuid::new_v4()));
    let first = serve(&db, &objects, "30").await;
    let (_, token) = account_with_history(&first, &db, "heavy@example.com").await;
    let requested = first
        .post("/api/v1/users/data-export", Some(&token), json!({}))
        .await;
    assert_eq!(requested.status(), 202);
    let job: Value = requested.json().await.unwrap();
    let status_path = format!(
        "/api/v1/users/data-export/{}",
        job["jobId"].as_str().unwrap()
    );
    eventually(Duration::from_secs(30), || async {
        let status: Value = first.get(&status_path, &token).await.json().await.ok()?;
        (status["status"] == "running").then_some(())
    })
    .await;
    first.kill_9().await;
    let state = format!(
        "SELECT state FROM privacy.exports WHERE id = '{}'",
        job["jobId"].as_str().unwrap()
    );
    assert_eq!(
        query(&db, &state),
        "running",
        "killed in the middle, not after"
    );

    // The next server takes the job over once its lease runs out, and finishes it.
    let second = serve(&db, &objects, "30").await;
    let status: Value = eventually(Duration::from_secs(120), || async {
        let status: Value = second.get(&status_path, &token).await.json().await.ok()?;
        (status["status"] == "ready").then_some(status)
    })
    .await;
    let download = second
        .get(status["downloadUrl"].as_str().unwrap(), &token)
        .await;
    assert_eq!(download.status(), 200);
    let bytes = download.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut text = String::new();
    archive
        .by_name("conversations/01930000-0000-7000-9000-000000000001.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let conversation: Value = serde_json::from_str(&text).unwrap();
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), MESSAGES as usize);
    assert!(
        messages[41]["content"]
            .as_str()
            .unwrap()
            .starts_with("message number 42:")
    );
    assert_eq!(messages[41]["parentId"], messages[40]["id"]);
    assert!(archive.by_name("README.txt").is_ok() && archive.by_name("profile.json").is_ok());
    // Finished once: one expiry scheduled (enqueued with the ready mail, in one transaction),
    // and one archive in the store.
    let expiries = "SELECT count(*) FROM platform.jobs WHERE kind = 'privacy.export_expire'";
    assert_eq!(query(&db, expiries), "1");
    let user_dir = std::fs::read_dir(objects.join("exports"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let archives: Vec<_> = std::fs::read_dir(&user_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".zip"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    second.kill_9().await;
    let _ = std::fs::remove_dir_all(&objects);
}

#[tokio::test]
async fn an_erasure_killed_midway_is_finished_by_the_next_server() {
    let db = TestDb::fresh().await;
    let objects = std::env::temp_dir().join(format!("companion-crash-{}", uuid::Uuid::new_v4()));
    let first = serve(&db, &objects, "0").await;
    let (user, token) = account_with_history(&first, &db, "leaving@example.com").await;
    let deleted = first
        .client
        .delete(format!("{}/api/v1/users/account", first.base))
        .bearer_auth(&token)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let running = "SELECT state FROM privacy.erasures";
    let messages = format!(
        "SELECT count(*) FROM chat.messages m JOIN chat.conversations c ON c.id = m.conversation_id \
         WHERE c.user_id = '{user}'"
    );
    eventually(Duration::from_secs(30), || async {
        let started = query(&db, running) == "running";
        let partly = query(&db, &messages).parse::<u32>().unwrap() < MESSAGES;
        (started && partly).then_some(())
    })
    .await;
    first.kill_9().await;
    assert_eq!(
        query(&db, running),
        "running",
        "killed in the middle, not after"
    );
    assert_ne!(query(&db, &messages), "0");

    let second = serve(&db, &objects, "0").await;
    eventually(Duration::from_secs(120), || async {
        (query(&db, running) == "done").then_some(())
    })
    .await;
    assert_eq!(
        query(
            &db,
            &format!("SELECT count(*) FROM identity.users WHERE id = '{user}'")
        ),
        "0"
    );
    assert_eq!(
        query(
            &db,
            &format!("SELECT count(*) FROM chat.conversations WHERE user_id = '{user}'")
        ),
        "0"
    );
    assert_eq!(query(&db, "SELECT count(*) FROM chat.messages"), "0");
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM privacy.erasures WHERE user_id IS NOT NULL"
        ),
        "0"
    );
    assert_eq!(
        query(
            &db,
            &format!(
                "SELECT count(*) FROM identity.audit_log WHERE subject_id = '{user}' OR actor_id = '{user}'"
            )
        ),
        "0"
    );
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM identity.audit_log WHERE action = 'account.erased'"
        ),
        "1",
        "recorded once"
    );
    second.kill_9().await;
    let _ = std::fs::remove_dir_all(&objects);
}
