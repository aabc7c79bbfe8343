//! Privacy: consents, the JSON export and the archive, account deletion and restore, the
//! erasure (proved complete against the database's own catalogue), and retention.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use futures_util::TryStreamExt;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::chat::{LUNA, start};
use support::images::png;
use support::{PASSWORD, TestApp, TestUser, assert_error, eventually};

const WAIT: Duration = Duration::from_secs(20);

async fn body(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn put_consents(app: &TestApp, user: &TestUser, consents: Value) -> reqwest::Response {
    app.send_auth(
        Method::PUT,
        "/api/v1/users/consents",
        &user.token,
        &consents,
    )
    .await
}

async fn delete_account(app: &TestApp, user: &TestUser, password: &str) -> reqwest::Response {
    app.send_auth(
        Method::DELETE,
        "/api/v1/users/account",
        &user.token,
        &json!({ "password": password }),
    )
    .await
}

/// A user with something in every module: a profile avatar, a public and a private
/// character (premium), a rating of `rates` (a character id), a conversation with a reply,
/// an uploaded picture, a consent. Returns (user, [character ids], conversation id, media id).
async fn seeded(
    app: &TestApp,
    email: &str,
    rates: Option<&str>,
) -> (TestUser, Vec<String>, String, String) {
    let user = app.premium(email).await;
    let form = Form::new().text("type", "image").part(
        "file",
        Part::bytes(png(8, 30))
            .file_name("me.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let uploaded = app.upload(&user, form).await;
    assert_eq!(uploaded.status(), 201);
    let media = body(uploaded).await["id"].as_str().unwrap().to_owned();
    let profile = app
        .send_auth(
            Method::PUT,
            "/api/v1/users/profile",
            &user.token,
            &json!({ "bio": format!("I like lighthouses ({email})"), "avatarMediaId": media }),
        )
        .await;
    assert_eq!(profile.status(), 200);
    let mut characters = Vec::new();
    for (name, visibility) in [("Public one", "public"), ("Secret one", "private")] {
        let created = app
            .send_auth(
                Method::POST,
                "/api/v1/characters",
                &user.token,
                &json!({ "name": name, "visibility": visibility, "avatarMediaId": media }),
            )
            .await;
        assert_eq!(created.status(), 201);
        characters.push(body(created).await["id"].as_str().unwrap().to_owned());
    }
    if let Some(rated) = rates {
        let rating = app
            .send_auth(
                Method::POST,
                &format!("/api/v1/characters/{rated}/rating"),
                &user.token,
                &json!({ "stars": 4 }),
            )
            .await;
        assert_eq!(rating.status(), 200);
    }
    let (conversation, _) = start(app, &user, LUNA, None).await;
    let sent = app
        .send_auth(
            Method::POST,
            &format!("/api/v1/conversations/{conversation}/messages"),
            &user.token,
            &json!({ "content": "Tell me about the sea", "type": "text" }),
        )
        .await;
    assert_eq!(sent.status(), 201);
    assert_eq!(
        put_consents(app, &user, json!({ "marketing": true }))
            .await
            .status(),
        200
    );
    (user, characters, conversation, media)
}

#[tokio::test]
async fn consents_start_withheld_and_keep_every_change() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let initial = body(app.get_auth("/api/v1/users/consents", &ann.token).await).await;
    assert_eq!(initial["marketing"], false);
    assert_eq!(initial["analytics"], false);
    assert_eq!(initial["tracking"], false);
    assert_eq!(initial["changedAt"]["marketing"], Value::Null);
    assert_eq!(initial["history"], json!([]));

    let given =
        body(put_consents(&app, &ann, json!({ "marketing": true, "tracking": false })).await).await;
    assert_eq!(given["marketing"], true);
    assert_eq!(given["tracking"], false);
    assert!(given["changedAt"]["marketing"].is_string());
    assert_eq!(given["changedAt"]["analytics"], Value::Null);
    // The same answer again is no change; a withdrawal is.
    put_consents(&app, &ann, json!({ "marketing": true })).await;
    let withdrawn = body(put_consents(&app, &ann, json!({ "marketing": false })).await).await;
    assert_eq!(withdrawn["marketing"], false);
    let history: Vec<(String, bool)> = withdrawn["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["purpose"].as_str().unwrap().to_owned(),
                e["granted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("marketing".to_owned(), true),
            ("tracking".to_owned(), false),
            ("marketing".to_owned(), false)
        ]
    );

    let error = assert_error(
        put_consents(&app, &ann, json!({ "marketing": "yes" })).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(error["details"]["fields"]["marketing"].is_string());
    let error = assert_error(
        put_consents(&app, &ann, json!({ "newsletter": true })).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(error["details"]["fields"]["newsletter"].is_string());
    assert_error(app.get("/api/v1/users/consents").await, 401, "UNAUTHORIZED").await;
    // Bob sees his own answers only.
    let bob = app.register("bob@example.com").await;
    let his = body(app.get_auth("/api/v1/users/consents", &bob.token).await).await;
    assert_eq!(his["history"], json!([]));
}

#[tokio::test]
async fn the_json_export_holds_every_module_part_and_nobody_else() {
    let app = TestApp::spawn().await;
    let (bob, bobs_characters, bobs_conversation, _) = seeded(&app, "bob@example.com", None).await;
    let (ann, characters, conversation, media) =
        seeded(&app, "ann@example.com", Some(&bobs_characters[0])).await;
    let response = app
        .get_auth("/api/v1/users/data-export?format=json", &ann.token)
        .await;
    assert_eq!(response.status(), 200);
    let export = body(response).await;
    assert_eq!(export["userId"], ann.id.as_str());
    let files = export["files"].as_object().unwrap();
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    for expected in [
        "profile.json",
        "sessions.json",
        "audit-log.json",
        "consents.json",
        "exports.json",
        "ratings.json",
        "media.json",
        &format!("characters/{}.json", characters[0]),
        &format!("characters/{}.json", characters[1]),
        &format!("conversations/{conversation}.json"),
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains(&bobs_conversation) || n.contains(&bobs_characters[0]))
    );
    assert_eq!(files["profile.json"]["email"], "ann@example.com");
    assert_eq!(
        files["profile.json"]["bio"],
        "I like lighthouses (ann@example.com)"
    );
    assert_eq!(
        files["ratings.json"][0]["characterId"],
        bobs_characters[0].as_str()
    );
    assert_eq!(files["ratings.json"][0]["stars"], 4);
    assert_eq!(files["consents.json"]["current"][0]["purpose"], "marketing");
    assert_eq!(
        files[&format!("characters/{}.json", characters[1])]["spec"],
        "chara_card_v3"
    );
    assert_eq!(
        files[&format!("characters/{}.json", characters[1])]["data"]["name"],
        "Secret one"
    );
    let chat = &files[&format!("conversations/{conversation}.json")];
    let messages = chat["messages"].as_array().unwrap();
    // Luna's two greetings (swipes of the first message), the message and its reply.
    assert_eq!(messages.len(), 4);
    let greetings: Vec<&Value> = messages
        .iter()
        .filter(|m| m["parentId"].is_null())
        .collect();
    assert_eq!(greetings.len(), 2, "both swipes");
    assert_eq!(messages[2]["content"], "Tell me about the sea");
    assert_eq!(messages[3]["parentId"], messages[2]["id"]);
    assert!(messages.iter().all(|m| m["createdAt"].is_string()));
    assert_eq!(files["media.json"][0]["id"], media.as_str());
    let actions: Vec<&str> = files["audit-log.json"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"auth.register") && actions.contains(&"profile.update"),
        "{actions:?}"
    );
    // Nothing secret: no password or token hash anywhere.
    let text = export.to_string();
    assert!(!text.contains("argon2") && !text.contains("passwordHash"));
    drop(bob);

    // Unknown formats are refused by name; anonymous callers get 401.
    let error = assert_error(
        app.get_auth("/api/v1/users/data-export?format=xml", &ann.token)
            .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(error["details"]["fields"]["format"].is_string());
    assert_error(
        app.get("/api/v1/users/data-export?format=json").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn an_account_too_large_for_json_is_pointed_to_the_archive() {
    let app =
        TestApp::spawn_with_vars(&[("COMPANION__PRIVACY__JSON_EXPORT_MAX_BYTES", "3000")]).await;
    let (ann, ..) = seeded(&app, "ann@example.com", None).await;
    let error = assert_error(
        app.get_auth("/api/v1/users/data-export?format=json", &ann.token)
            .await,
        409,
        "EXPORT_TOO_LARGE",
    )
    .await;
    assert_eq!(
        error["details"]["archive"],
        "POST /api/v1/users/data-export"
    );
}

async fn archive_of(app: &TestApp, user: &TestUser) -> (Value, Vec<u8>) {
    let requested = app
        .send_auth(
            Method::POST,
            "/api/v1/users/data-export",
            &user.token,
            &json!({}),
        )
        .await;
    assert_eq!(requested.status(), 202);
    let job = body(requested).await["jobId"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/users/data-export/{job}");
    let status = eventually(WAIT, || async {
        let status = body(app.get_auth(&path, &user.token).await).await;
        (status["status"] == "ready").then_some(status)
    })
    .await;
    let download = app
        .get_auth(status["downloadUrl"].as_str().unwrap(), &user.token)
        .await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "application/zip");
    let bytes = download.bytes().await.unwrap().to_vec();
    assert_eq!(status["size"], bytes.len());
    (status, bytes)
}

fn unzip(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        files.insert(file.name().unwrap().into_owned(), content);
    }
    files
}

#[tokio::test]
async fn the_archive_is_a_zip_of_every_file_once_a_day_and_only_for_its_owner() {
    let app = TestApp::spawn().await;
    let (ann, characters, conversation, media) = seeded(&app, "ann@example.com", None).await;
    let (status, bytes) = archive_of(&app, &ann).await;
    let files = unzip(&bytes);
    for expected in [
        "README.txt",
        "profile.json",
        "consents.json",
        "audit-log.json",
        "media.json",
        &format!("media/{media}.png"),
        &format!("characters/{}.json", characters[0]),
        &format!("characters/{}.png", characters[0]),
        &format!("conversations/{conversation}.json"),
    ] {
        assert!(
            files.contains_key(expected),
            "{expected} missing: {:?}",
            files.keys()
        );
    }
    assert!(
        files[&format!("media/{media}.png")] == png(8, 0),
        "the file as served"
    );
    let chat: Value =
        serde_json::from_slice(&files[&format!("conversations/{conversation}.json")]).unwrap();
    assert_eq!(chat["id"], conversation.as_str());
    assert_eq!(chat["messages"].as_array().unwrap().len(), 4);
    let card: Value =
        serde_json::from_slice(&files[&format!("characters/{}.json", characters[0])]).unwrap();
    assert_eq!(card["spec"], "chara_card_v3");
    let readme = String::from_utf8(files["README.txt"].clone()).unwrap();
    assert!(
        readme.contains("conversations/ (1 files)") && readme.contains("media/"),
        "{readme}"
    );
    let expires: chrono::DateTime<chrono::Utc> =
        status["expiresAt"].as_str().unwrap().parse().unwrap();
    let days = (expires - chrono::Utc::now()).num_hours();
    assert!((167..=168).contains(&days), "valid 7 days: {days} h");
    // The owner is told by email, once.
    let mail = eventually(WAIT, || async {
        app.outbox()
            .into_iter()
            .find(|m| m.to == ann.email && m.subject.contains("export is ready"))
    })
    .await;
    assert!(mail.body.contains("/#/profile"));

    // One a day.
    let again = app
        .send_auth(
            Method::POST,
            "/api/v1/users/data-export",
            &ann.token,
            &json!({}),
        )
        .await;
    assert_eq!(again.status(), 429);
    let wait: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 23 * 3600, "{wait}");

    // The owner's list of archives has it; nobody else sees it.
    let job = status["jobId"].as_str().unwrap();
    let listed = body(app.get_auth("/api/v1/users/data-exports", &ann.token).await).await;
    assert_eq!(listed["content"].as_array().unwrap().len(), 1);
    assert_eq!(listed["content"][0]["jobId"], job);
    assert_eq!(listed["content"][0]["status"], "ready");
    let bob = app.register("bob@example.com").await;
    let theirs = body(app.get_auth("/api/v1/users/data-exports", &bob.token).await).await;
    assert_eq!(theirs["content"], json!([]));
    assert_error(
        app.get_auth(&format!("/api/v1/users/data-export/{job}"), &bob.token)
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get_auth(
            &format!("/api/v1/users/data-export/{job}/download"),
            &bob.token,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    let sent = app
        .outbox()
        .iter()
        .filter(|m| m.subject.contains("export is ready"))
        .count();
    assert_eq!(sent, 1);
}

#[tokio::test]
async fn an_expired_archive_is_deleted_by_its_job() {
    let app = TestApp::spawn_with_vars(&[("COMPANION__PRIVACY__EXPORT_TTL_DAYS", "0")]).await;
    let ann = app.register("ann@example.com").await;
    let requested = body(
        app.send_auth(
            Method::POST,
            "/api/v1/users/data-export",
            &ann.token,
            &json!({}),
        )
        .await,
    )
    .await;
    let path = format!(
        "/api/v1/users/data-export/{}",
        requested["jobId"].as_str().unwrap()
    );
    eventually(WAIT, || async {
        (body(app.get_auth(&path, &ann.token).await).await["status"] == "expired").then_some(())
    })
    .await;
    assert_error(
        app.get_auth(&format!("{path}/download"), &ann.token).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let left: Vec<object_store::ObjectMeta> = app
        .platform
        .storage
        .store()
        .list(Some(&object_store::path::Path::from("exports")))
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn deleting_an_account_closes_it_at_once_and_restore_reopens_it() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let error = assert_error(
        delete_account(&app, &ann, "not my password").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(error["details"]["fields"]["password"].is_string());
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &ann.token)
            .await
            .status(),
        200
    );
    assert_error(
        app.send_auth(
            Method::DELETE,
            "/api/v1/users/account",
            &ann.token,
            &json!({}),
        )
        .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;

    let deleted = delete_account(&app, &ann, PASSWORD).await;
    assert_eq!(deleted.status(), 202);
    let scheduled: chrono::DateTime<chrono::Utc> = body(deleted).await["scheduledFor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let days = (scheduled - chrono::Utc::now()).num_hours();
    assert!((719..=720).contains(&days), "30 days of grace: {days} h");
    // Every session ended: the access token, the refresh token.
    assert_error(
        app.get_auth("/api/v1/users/profile", &ann.token).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let refreshed = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({ "refreshToken": ann.refresh_token }),
        )
        .await;
    assert_eq!(refreshed.status(), 401);
    // Login with the right password says the account can be restored; a wrong one learns nothing.
    let error = assert_error(
        app.login(&ann.email, PASSWORD).await,
        403,
        "ACCOUNT_PENDING_DELETION",
    )
    .await;
    assert_eq!(error["details"]["restore"], "/api/v1/users/account/restore");
    assert!(error["details"]["scheduledFor"].is_string());
    assert_error(
        app.login(&ann.email, "a wrong password here").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let erasures = format!(
        "SELECT count(*) FROM privacy.erasures WHERE user_id = '{}'",
        ann.id
    );
    assert_eq!(app.query_one(&erasures).unwrap(), "1");

    // Restore: wrong credentials are a login failure; the right ones reopen the account.
    let restore = |password: &'static str| {
        let body = json!({ "email": "ann@example.com", "password": password });
        let app = &app;
        async move { app.post_json("/api/v1/users/account/restore", &body).await }
    };
    assert_error(restore("a wrong password here").await, 401, "UNAUTHORIZED").await;
    let restored = restore(PASSWORD).await;
    assert_eq!(restored.status(), 200);
    let tokens = body(restored).await;
    let token = tokens["token"].as_str().unwrap();
    assert_eq!(
        app.get_auth("/api/v1/users/profile", token).await.status(),
        200
    );
    assert_eq!(
        app.query_one(&erasures).unwrap(),
        "0",
        "the erasure is called off"
    );
    assert_eq!(app.login(&ann.email, PASSWORD).await.status(), 200);
    // Restoring an open account is a conflict, not a second session.
    assert_error(restore(PASSWORD).await, 409, "CONFLICT").await;
    let actions = app.query_column(&format!(
        "SELECT action FROM identity.audit_log WHERE subject_id = '{}' ORDER BY occurred_at, id",
        ann.id
    ));
    assert!(
        actions.iter().any(|a| a == "account.deletion_requested"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "account.restore"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn closing_an_account_closes_its_live_connections_at_once() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let mut request = format!("ws://127.0.0.1:{}/api/v1/ws", app.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", ann.token)).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(delete_account(&app, &ann, PASSWORD).await.status(), 202);
    // Far sooner than the 20 s ping that would also notice.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket closes at once");
    assert_eq!(u16::from(closed.unwrap().code), 1008);
}

/// Tables with a column that refers to a person (by name, or a foreign key to
/// identity.users), as the database itself describes them.
fn tables_about_people(app: &TestApp) -> BTreeSet<String> {
    app.query_column(
        "SELECT DISTINCT table_schema || '.' || table_name FROM information_schema.columns \
         WHERE column_name IN ('user_id', 'owner_id', 'actor_id') \
           AND table_schema NOT IN ('pg_catalog', 'information_schema') \
         UNION \
         SELECT DISTINCT tc.table_schema || '.' || tc.table_name \
         FROM information_schema.table_constraints tc \
         JOIN information_schema.constraint_column_usage cu \
           ON cu.constraint_name = tc.constraint_name AND cu.constraint_schema = tc.constraint_schema \
         WHERE tc.constraint_type = 'FOREIGN KEY' \
           AND cu.table_schema = 'identity' AND cu.table_name = 'users'",
    )
    .into_iter()
    .collect()
}

#[tokio::test]
async fn every_table_about_people_is_claimed_by_some_module() {
    let app = TestApp::spawn().await;
    let about_people = tables_about_people(&app);
    // The query sees what it must (a blind query would prove nothing).
    for known in [
        "identity.sessions",
        "chat.conversations",
        "media.objects",
        "identity.audit_log",
    ] {
        assert!(
            about_people.contains(known),
            "{known} not found: {about_people:?}"
        );
    }
    let claimed: BTreeSet<String> = app
        .personal_data
        .iter()
        .flat_map(|share| share.coverage().tables.iter().map(|t| (*t).to_owned()))
        .collect();
    let unclaimed: Vec<&String> = about_people.difference(&claimed).collect();
    assert!(
        unclaimed.is_empty(),
        "tables about people that no PersonalData claims: {unclaimed:?}"
    );
    // And every claimed table exists.
    let existing: BTreeSet<String> = app
        .query_column(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        )
        .into_iter()
        .collect();
    let missing: Vec<&String> = claimed.difference(&existing).collect();
    assert!(missing.is_empty(), "claimed but absent: {missing:?}");
    let names: Vec<&str> = app.personal_data.iter().map(|s| s.name()).collect();
    assert_eq!(
        names.last(),
        Some(&"identity"),
        "the account goes last: {names:?}"
    );
}

/// Every Redis key that mentions one of `needles`.
async fn redis_keys_with(needles: &[String]) -> Vec<String> {
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.into_iter()
        .filter(|key| needles.iter().any(|n| key.contains(n.as_str())))
        .collect()
}

#[tokio::test]
async fn an_erasure_leaves_nothing_of_the_person_and_touches_no_one_else() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("companion:rl:{tag}:");
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__PRIVACY__DELETION_GRACE_DAYS", "0"),
        ("COMPANION__REDIS__URL", &support::redis_url()),
        ("COMPANION__RATELIMIT__KEY_PREFIX", &prefix),
        ("COMPANION__RATELIMIT__LOGIN_PER_MINUTE", "100"),
        ("COMPANION__PLANS__PREMIUM__REQUESTS_PER_MINUTE", "10000"),
        ("COMPANION__RATELIMIT__FORGOT_PASSWORD_PER_HOUR", "100"),
    ])
    .await;
    let ann_email = format!("ann-{tag}@example.com");
    let (bob, bobs_characters, bobs_conversation, bobs_media) =
        seeded(&app, &format!("bob-{tag}@example.com"), None).await;
    let (ann, characters, _, _) = seeded(&app, &ann_email, Some(&bobs_characters[0])).await;
    // Bob rates Ann's public character; Bob's own character has Ann's rating.
    let rated = app
        .send_auth(
            Method::POST,
            &format!("/api/v1/characters/{}/rating", characters[0]),
            &bob.token,
            &json!({ "stars": 5 }),
        )
        .await;
    assert_eq!(rated.status(), 200);
    let bobs_rating = |app: &TestApp| {
        app.query_one(&format!(
            "SELECT rating_sum || '/' || rating_count FROM catalog.characters WHERE id = '{}'",
            bobs_characters[0]
        ))
    };
    assert_eq!(bobs_rating(&app).unwrap(), "4/1");
    // Redis keys of Ann's: a cached character, login and reset counters, a revoked session.
    let detail = app
        .get(&format!("/api/v1/characters/{}", characters[0]))
        .await;
    assert_eq!(detail.status(), 200);
    assert_eq!(
        app.login(&ann_email, "a wrong password here")
            .await
            .status(),
        401
    );
    app.post_json(
        "/api/v1/auth/forgot-password",
        &json!({ "email": ann_email }),
    )
    .await;
    let second = app.relogin(&ann).await;
    let logout = app
        .send_auth(
            Method::POST,
            "/api/v1/auth/logout",
            &second.token,
            &json!({}),
        )
        .await;
    assert_eq!(logout.status(), 204);
    // An archive in the store.
    archive_of(&app, &ann).await;
    let sessions = app.query_column(&format!(
        "SELECT id FROM identity.sessions WHERE user_id = '{}'",
        ann.id
    ));
    let mut needles = vec![ann.id.clone(), ann_email.clone()];
    needles.extend(sessions.iter().cloned());
    needles.extend(characters.iter().cloned());
    let before = redis_keys_with(&needles).await;
    assert!(
        before.len() >= 4,
        "the test seeds Redis keys of Ann's: {before:?}"
    );
    let conversations = app.query_column(&format!(
        "SELECT id FROM chat.conversations WHERE user_id = '{}'",
        ann.id
    ));
    assert_eq!(conversations.len(), 1);

    // Grace 0: the erasure runs at once.
    assert_eq!(delete_account(&app, &ann, PASSWORD).await.status(), 202);
    let record =
        "SELECT state FROM privacy.erasures WHERE pseudonym IS NOT NULL AND state = 'done'";
    eventually(WAIT, || async {
        app.query_one(&format!("{record} LIMIT 1"))
    })
    .await;

    // The erasure ledger keeps Ann's bare id and when, nothing more: it is what erases her
    // again if an older backup is restored (tests/backup.rs).
    let ledger = app.query_column("SELECT user_id FROM privacy_ledger.erased_accounts");
    assert_eq!(ledger, std::slice::from_ref(&ann.id));
    let ledger_columns = app.query_column(
        "SELECT column_name FROM information_schema.columns \
         WHERE table_schema = 'privacy_ledger' ORDER BY column_name",
    );
    assert_eq!(ledger_columns, ["erased_at", "user_id"]);

    // Zero rows: every other table about people, by every column that can name Ann.
    for table in tables_about_people(&app)
        .into_iter()
        .filter(|t| t != "privacy_ledger.erased_accounts")
    {
        let columns = app.query_column(&format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema || '.' || table_name = '{table}' AND data_type = 'uuid'"
        ));
        for column in columns {
            let count = app
                .query_one(&format!(
                    "SELECT count(*) FROM {table} WHERE {column} = '{}'",
                    ann.id
                ))
                .unwrap();
            assert_eq!(count, "0", "{table}.{column} still names Ann");
        }
    }
    let messages = app
        .query_one(&format!(
            "SELECT count(*) FROM chat.messages WHERE conversation_id = '{}'",
            conversations[0]
        ))
        .unwrap();
    assert_eq!(messages, "0");
    for character in &characters {
        let left = app.query_one(&format!(
            "SELECT count(*) FROM catalog.characters WHERE id = '{character}'"
        ));
        assert_eq!(left.unwrap(), "0", "public characters go too by default");
    }
    // Zero objects, zero Redis keys.
    let anns: Vec<String> = app
        .object_keys()
        .await
        .into_iter()
        .filter(|key| key.contains(&ann.id))
        .collect();
    assert!(anns.is_empty(), "{anns:?}");
    let after = redis_keys_with(&needles).await;
    assert!(after.is_empty(), "{after:?}");
    // The audit log keeps the events under a pseudonym, and says the account was erased.
    let pseudonym = app
        .query_one("SELECT pseudonym FROM privacy.erasures WHERE state = 'done'")
        .unwrap();
    let kept = app
        .query_one(&format!(
            "SELECT count(*) FROM identity.audit_log WHERE subject_id = '{pseudonym}'"
        ))
        .unwrap();
    assert!(kept.parse::<u32>().unwrap() > 3, "{kept}");
    let erased = app.query_one(&format!(
        "SELECT count(*) FROM identity.audit_log WHERE subject_id = '{pseudonym}' AND action = 'account.erased'"
    ));
    assert_eq!(erased.unwrap(), "1");
    let leaked = app.query_one(&format!(
        "SELECT count(*) FROM identity.audit_log WHERE old_value::text LIKE '%{ann_email}%' OR new_value::text LIKE '%{ann_email}%'"
    ));
    assert_eq!(
        leaked.unwrap(),
        "0",
        "the bio is gone from the recorded values"
    );

    // Bob is untouched, except that Ann's stars left his character's average.
    assert_eq!(bobs_rating(&app).unwrap(), "0/0");
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &bob.token)
            .await
            .status(),
        200
    );
    let his = app
        .get_auth(
            &format!("/api/v1/conversations/{bobs_conversation}/messages"),
            &bob.token,
        )
        .await;
    assert_eq!(his.status(), 200);
    let his_media = app
        .get_auth(&format!("/api/v1/media/{bobs_media}"), &bob.token)
        .await;
    assert_eq!(his_media.status(), 200);
    assert_eq!(app.login(&bob.email, PASSWORD).await.status(), 200);
    assert_eq!(
        app.login(&ann_email, PASSWORD).await.status(),
        401,
        "Ann is gone"
    );

    // Again (a resumed job): every share finds nothing and fails at nothing.
    let ann_id: uuid::Uuid = ann.id.parse().unwrap();
    for share in &app.personal_data {
        share
            .erase(ann_id, pseudonym.parse().unwrap())
            .await
            .unwrap();
    }
    let erased =
        app.query_one("SELECT count(*) FROM identity.audit_log WHERE action = 'account.erased'");
    assert_eq!(erased.unwrap(), "1", "no second record");
}

#[tokio::test]
async fn retention_deletes_old_free_tier_messages_and_keeps_the_tree_whole() {
    let app = TestApp::spawn().await;
    let free = app.register("free@example.com").await;
    let paid = app.premium("paid@example.com").await;
    let send = |user: &TestUser, conversation: &str, text: &str| {
        let path = format!("/api/v1/conversations/{conversation}/messages");
        let token = user.token.clone();
        let body = json!({ "content": text, "type": "text" });
        let app = &app;
        async move {
            let sent = app.send_auth(Method::POST, &path, &token, &body).await;
            assert_eq!(sent.status(), 201);
        }
    };
    // An abandoned conversation (every message old) and one still in use.
    let (abandoned, _) = start(&app, &free, LUNA, None).await;
    send(&free, &abandoned, "long ago").await;
    let (in_use, _) = start(&app, &free, LUNA, None).await;
    send(&free, &in_use, "long ago too").await;
    send(&free, &in_use, "and today").await;
    let (paid_one, _) = start(&app, &paid, LUNA, None).await;
    send(&paid, &paid_one, "long ago, paid").await;
    let three_years = "now() - interval '3 years'";
    app.execute(&format!(
        "UPDATE chat.messages SET created_at = {three_years} WHERE conversation_id IN ('{abandoned}', '{paid_one}')"
    ));
    app.execute(&format!(
        "UPDATE chat.conversations SET last_message_at = {three_years} WHERE id IN ('{abandoned}', '{paid_one}')"
    ));
    // In the conversation in use, the greetings (two swipes, depth 0) and the first exchange
    // are old.
    app.execute(&format!(
        "UPDATE chat.messages SET created_at = {three_years} WHERE conversation_id = '{in_use}' AND depth <= 2"
    ));

    let report = app.privacy.retention_run().await.unwrap();
    // 4 in the abandoned conversation (two greetings, a message, a reply) and 4 in the one
    // in use; the paid user's are not counted.
    assert_eq!(report["messagesDeleted"], 8, "{report}");
    let count = |conversation: &str| {
        app.query_one(&format!(
            "SELECT count(*) FROM chat.messages WHERE conversation_id = '{conversation}'"
        ))
        .unwrap()
    };
    assert_eq!(
        app.query_one(&format!(
            "SELECT count(*) FROM chat.conversations WHERE id = '{abandoned}'"
        ))
        .unwrap(),
        "0"
    );
    assert_eq!(count(&in_use), "2", "today's message and its reply");
    assert_eq!(count(&paid_one), "4", "paid plans keep everything");
    // What is left is a tree: one root at depth 0, its reply at depth 1, and it still reads.
    let shape = app.query_column(&format!(
        "SELECT depth || ':' || (parent_id IS NULL) FROM chat.messages WHERE conversation_id = '{in_use}' ORDER BY depth"
    ));
    assert_eq!(shape, ["0:true", "1:false"]);
    let history = app
        .get_auth(
            &format!("/api/v1/conversations/{in_use}/messages"),
            &free.token,
        )
        .await;
    assert_eq!(history.status(), 200);
    let page = body(history).await;
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts.first(), Some(&"and today"), "{texts:?}");
    // The next reply's prompt has none of the deleted messages, though the conversation was
    // kept warm in memory since its last reply.
    let sent = app
        .send_auth(
            Method::POST,
            &format!("/api/v1/conversations/{in_use}/messages"),
            &free.token,
            &json!({ "content": "after the sweep", "type": "text" }),
        )
        .await;
    assert_eq!(sent.status(), 201);
    let reply = body(sent).await["reply"]["id"].as_str().unwrap().to_owned();
    let prompt = app
        .get_auth(
            &format!("/api/v1/conversations/{in_use}/messages/{reply}/prompt"),
            &free.token,
        )
        .await;
    let prompt = body(prompt).await.to_string();
    assert!(prompt.contains("and today"), "{prompt}");
    assert!(!prompt.contains("long ago too"), "{prompt}");
    // A second run finds nothing more.
    assert_eq!(
        app.privacy.retention_run().await.unwrap()["messagesDeleted"],
        0
    );
}
