#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Backup and restore through the real binary (`companion admin backup --to`, `restore
//! --from`): every user's data comes back intact after the data is destroyed, and a person
//! erased after the backup stays erased.

mod support;

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};
use support::chat::{LUNA, start};
use support::process::companion;
use support::{PASSWORD, TestApp, TestDb, TestUser, eventually, test_settings};

/// A folder of the test's own, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(kind: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("companion-{kind}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `companion admin <args>` against the test's database and store; its output.
async fn admin(db_url: &str, store: &str, args: &[&str]) -> String {
    let out = companion()
        .env("COMPANION_ENV", "test")
        .env("DATABASE_URL", db_url)
        .env("COMPANION__STORAGE__URL", store)
        .arg("admin")
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "companion admin {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What a user sees of their data: profile, conversations and each one's messages, and
/// the bytes of their upload.
async fn everything(app: &TestApp, user: &TestUser, media: &str) -> Value {
    let get = |path: String| async move {
        let response = app.get_auth(&path, &user.token).await;
        assert_eq!(response.status(), 200, "{path}");
        response.json::<Value>().await.unwrap()
    };
    let mut profile = get("/api/v1/users/profile".to_owned()).await;
    // Changes with every login.
    profile.as_object_mut().unwrap().remove("lastLoginAt");
    let conversations = get("/api/v1/conversations".to_owned()).await;
    let mut histories = Vec::new();
    for conversation in conversations["content"].as_array().unwrap() {
        let id = conversation["id"].as_str().unwrap();
        histories.push(get(format!("/api/v1/conversations/{id}/messages")).await);
    }
    let file = app
        .get_auth(&format!("/api/v1/media/{media}"), &user.token)
        .await;
    assert_eq!(file.status(), 200);
    let bytes = file.bytes().await.unwrap().to_vec();
    json!({
        "profile": profile,
        "conversations": conversations,
        "histories": histories,
        "upload": bytes,
    })
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_brings_back_everyones_data_but_not_a_person_erased_since() {
    let store = Folder::new("store");
    let backups = Folder::new("backups");
    let store_url = format!("file://{}", store.0.display());
    let db = TestDb::fresh().await;
    let db_url = db.url.clone();
    let vars = [
        ("COMPANION__STORAGE__URL", store_url.as_str()),
        ("COMPANION__PRIVACY__DELETION_GRACE_DAYS", "0"),
    ];
    let builder = || companion::Application::builder(test_settings(&db_url, &vars));
    let mut app = TestApp::start(builder(), Some(db)).await;

    // Three people, each with a conversation (and its reply) and an upload.
    let mut people = Vec::new();
    for name in ["ann", "bob", "cat"] {
        let user = app.register(&format!("{name}@example.com")).await;
        start(&app, &user, LUNA, Some(&format!("Hello, I am {name}"))).await;
        let media = app.upload_png(&user).await;
        people.push((user, media));
    }
    let mut before = Vec::new();
    for (user, media) in &people {
        before.push(everything(&app, user, media).await);
    }

    let place = backups.0.join("2026-11-22");
    let place = place.to_str().unwrap();
    let said = admin(&db_url, &store_url, &["backup", "--to", place]).await;
    // Each upload is an original and its thumbnail.
    assert!(said.contains(", 6 files"), "{said}");
    // A second backup to the same place is refused: a backup is never overwritten.
    let again = companion()
        .env("COMPANION_ENV", "test")
        .env("DATABASE_URL", &db_url)
        .env("COMPANION__STORAGE__URL", &store_url)
        .args(["admin", "backup", "--to", place])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a backup"));

    // After the backup: cat erases their account; ann starts another conversation.
    let (cat, cat_media) = &people[2];
    let deleted = app
        .send_auth(
            Method::DELETE,
            "/api/v1/users/account",
            &cat.token,
            &json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(deleted.status(), 202);
    let cat_row = format!(
        "SELECT id::text FROM identity.users WHERE id = '{}'",
        cat.id
    );
    eventually(std::time::Duration::from_secs(20), || async {
        app.query_one(&cat_row).is_none().then_some(())
    })
    .await;
    let ledger = format!(
        "SELECT user_id::text FROM privacy_ledger.erased_accounts WHERE user_id = '{}'",
        cat.id
    );
    assert!(app.query_one(&ledger).is_some(), "the ledger names cat");
    start(&app, &people[0].0, LUNA, Some("After the backup")).await;

    // The data is destroyed: every schema of the application, and every file. The erasure
    // ledger, kept apart, survives.
    app.stop().await.unwrap();
    app.execute(
        "DO $$ DECLARE s text; BEGIN \
           FOR s IN SELECT nspname FROM pg_namespace WHERE nspname IN \
             ('identity', 'catalog', 'chat', 'media', 'privacy', 'billing', 'platform') LOOP \
             EXECUTE format('DROP SCHEMA %I CASCADE', s); \
           END LOOP; \
         END $$",
    );
    app.execute("DROP TABLE refinery_schema_history");
    std::fs::remove_dir_all(&store.0).unwrap();
    std::fs::create_dir_all(&store.0).unwrap();

    let said = admin(&db_url, &store_url, &["restore", "--from", place]).await;
    assert!(said.contains("erased again: 1 account"), "{said}");

    let again = TestApp::start(builder(), None).await;
    for (i, (user, media)) in people.iter().take(2).enumerate() {
        let relogged = again.login(&user.email, PASSWORD).await;
        assert_eq!(relogged.status(), 200, "{} logs in", user.email);
        let token = relogged.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let user = TestUser {
            token,
            ..user.clone()
        };
        assert_eq!(
            everything(&again, &user, media).await,
            before[i],
            "{}'s data as it was at the backup",
            user.email
        );
    }
    // Cat stays erased: no account, no login, no message, no file.
    assert!(app.query_one(&cat_row).is_none(), "cat's account is gone");
    assert_eq!(again.login(&cat.email, PASSWORD).await.status(), 401);
    let cat_messages = format!(
        "SELECT count(*)::text FROM chat.messages m JOIN chat.conversations c \
         ON c.id = m.conversation_id WHERE c.user_id = '{}'",
        cat.id
    );
    assert_eq!(app.query_one(&cat_messages).as_deref(), Some("0"));
    let files = files_under(&store.0);
    assert!(
        files.iter().all(|f| !f.contains(&cat.id)),
        "cat's files are gone: {files:?}"
    );
    let cat_media_row = format!("SELECT id::text FROM media.objects WHERE id = '{cat_media}'");
    assert!(app.query_one(&cat_media_row).is_none());
    assert!(
        app.query_one(&ledger).is_some(),
        "the ledger still names cat"
    );
    // Ann's and bob's files are back (an original and a thumbnail each).
    for (user, _) in people.iter().take(2) {
        let theirs = files.iter().filter(|f| f.contains(&user.id)).count();
        assert!(theirs >= 1, "{}'s files: {files:?}", user.email);
    }
}
