//! Accounts, sessions, email flows, profile, roles and the audit log, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{PASSWORD, TestApp, assert_error};

async fn body(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/api/v1/auth/refresh", &json!({ "refreshToken": token }))
        .await
}

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> reqwest::Response {
    let body = json!({ "currentPassword": current, "newPassword": new });
    app.send_auth(Method::PUT, "/api/v1/users/password", token, &body)
        .await
}

async fn put_profile(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.send_auth(Method::PUT, "/api/v1/users/profile", token, &body)
        .await
}

#[tokio::test]
async fn register_answers_tokens_and_the_user_and_normalizes_the_email() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({ "email": "  Ann@Example.COM ", "password": PASSWORD, "displayName": " Ann " }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let registered = body(response).await;
    assert_eq!(registered["expiresIn"], 900);
    assert!(registered["token"].as_str().unwrap().split('.').count() == 3);
    assert!(registered["refreshToken"].as_str().unwrap().len() >= 43);
    let user = &registered["user"];
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["displayName"], "Ann");
    assert_eq!(user["role"], "user");
    assert_eq!(user["level"], 1);
    assert_eq!(user["experience"], 0);
    assert_eq!(user["subscription"]["tier"], "free");
    assert_eq!(user["emailVerified"], false);
    assert!(user.get("passwordHash").is_none() && user.get("password_hash").is_none());

    // The same address in another case is the same account.
    let again = app
        .post_json(
            "/api/v1/auth/register",
            &json!({ "email": "ANN@example.com", "password": PASSWORD, "displayName": "Other" }),
        )
        .await;
    assert_error(again, 409, "CONFLICT").await;

    // The password is stored as an argon2id hash, never as given.
    let stored = app
        .query_one("SELECT password_hash FROM identity.users WHERE email = 'ann@example.com'")
        .unwrap();
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(!stored.contains(PASSWORD));

    let profile = app
        .get_auth(
            "/api/v1/users/profile",
            registered["token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(profile.status(), 200);
    assert_eq!(body(profile).await["id"], user["id"]);
}

#[tokio::test]
async fn bad_registrations_are_422_naming_every_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({ "email": "not-an-email", "password": PASSWORD, "displayName": "A" }),
            vec!["email"],
        ),
        (
            json!({ "email": "a@example.com", "password": "short", "displayName": "A" }),
            vec!["password"],
        ),
        (
            json!({ "email": "a@example.com", "password": "password123", "displayName": "A" }),
            vec!["password"],
        ),
        (
            json!({ "email": "a@example.com", "password": "x".repeat(129), "displayName": "A" }),
            vec!["password"],
        ),
        (
            json!({ "email": "a@example.com", "password": PASSWORD, "displayName": "n".repeat(51) }),
            vec!["displayName"],
        ),
        (
            json!({ "email": format!("{}@example.com", "a".repeat(250)), "password": PASSWORD, "displayName": "A" }),
            vec!["email"],
        ),
        (
            json!({ "email": "a@example.com", "password": PASSWORD }),
            vec!["displayName"],
        ),
        (
            json!({ "email": "bad", "password": "1234", "displayName": "" }),
            vec!["displayName", "email", "password"],
        ),
        (
            json!({ "email": "a@example.com", "password": PASSWORD, "displayName": "A", "role": "admin" }),
            vec!["role"],
        ),
        (
            json!({ "email": 42, "password": PASSWORD, "displayName": "A" }),
            vec!["email"],
        ),
    ];
    for (request, fields) in cases {
        let response = app.post_json("/api/v1/auth/register", &request).await;
        let error = assert_error(response, 422, "VALIDATION_ERROR").await;
        let mut named: Vec<&str> = error["details"]["fields"]
            .as_object()
            .unwrap_or_else(|| panic!("fields for {request}: {error}"))
            .keys()
            .map(String::as_str)
            .collect();
        named.sort();
        assert_eq!(named, fields, "for {request}");
    }
    // Nothing was created by any of them.
    assert_eq!(
        app.query_one("SELECT count(*) FROM identity.users")
            .unwrap(),
        "0"
    );
}

#[tokio::test]
async fn login_answers_alike_for_unknown_emails_and_wrong_passwords() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;

    let ok = app.login("ANN@example.com", PASSWORD).await;
    assert_eq!(ok.status(), 200);
    let ok = body(ok).await;
    assert_eq!(ok["user"]["email"], "ann@example.com");
    assert_ne!(ok["refreshToken"], ann.refresh_token.as_str());

    let wrong = app
        .login("ann@example.com", "not the password at all")
        .await;
    let unknown = app
        .login("nobody@example.com", "not the password at all")
        .await;
    let malformed = app.login("nobody", "not the password at all").await;
    let (wrong_status, unknown_status, malformed_status) =
        (wrong.status(), unknown.status(), malformed.status());
    let (wrong, unknown, malformed) = (
        body(wrong).await,
        body(unknown).await,
        body(malformed).await,
    );
    assert_eq!(wrong_status, 401);
    assert_eq!(unknown_status, wrong_status);
    assert_eq!(malformed_status, wrong_status);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, malformed);
    assert_eq!(wrong["error"]["code"], "UNAUTHORIZED");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;

    let first = refresh(&app, &ann.refresh_token).await;
    assert_eq!(first.status(), 200);
    let first = body(first).await;
    let second_refresh = first["refreshToken"].as_str().unwrap().to_owned();
    let second_access = first["token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, ann.refresh_token);
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &second_access)
            .await
            .status(),
        200
    );

    // A thief replays the rotated token: refused, and the family is gone.
    assert_error(refresh(&app, &ann.refresh_token).await, 401, "UNAUTHORIZED").await;
    assert_error(refresh(&app, &second_refresh).await, 401, "UNAUTHORIZED").await;
    assert_error(
        app.get_auth("/api/v1/users/profile", &second_access).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_error(
        app.get_auth("/api/v1/users/profile", &ann.token).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    // The legitimate holder logs in again; other logins were never part of the family.
    let again = app.relogin(&ann).await;
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &again.token)
            .await
            .status(),
        200
    );

    assert_error(refresh(&app, "made-up").await, 401, "UNAUTHORIZED").await;
    let reuse = app
        .query_one("SELECT count(*) FROM identity.audit_log WHERE action = 'auth.refresh_reuse'")
        .unwrap();
    assert_eq!(reuse, "1");
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_rotate_once() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let request = json!({ "refreshToken": ann.refresh_token });
    let attempts = (0..4).map(|_| app.post_json("/api/v1/auth/refresh", &request));
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 1,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn logout_ends_the_session_at_the_next_request() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let other = app.relogin(&ann).await;
    // Warm the session cache first, so the test proves revocation beats the cache.
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &ann.token)
            .await
            .status(),
        200
    );

    let out = app
        .send_auth(Method::POST, "/api/v1/auth/logout", &ann.token, &json!({}))
        .await;
    assert_eq!(out.status(), 204);
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
    assert_error(refreshed, 401, "UNAUTHORIZED").await;
    // Another login of the same person is untouched.
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &other.token)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn password_change_needs_the_current_password_and_ends_other_sessions() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let laptop = app.relogin(&ann).await;
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &laptop.token)
            .await
            .status(),
        200
    );

    let wrong = assert_error(
        change_password(
            &app,
            &ann.token,
            "not my password",
            "a brand new passphrase",
        )
        .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(wrong["details"]["fields"]["currentPassword"].is_string());
    let weak = assert_error(
        change_password(&app, &ann.token, PASSWORD, "qwerty123").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(weak["details"]["fields"]["newPassword"].is_string());

    assert_eq!(
        change_password(&app, &ann.token, PASSWORD, "a brand new passphrase")
            .await
            .status(),
        204
    );
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &ann.token)
            .await
            .status(),
        200
    );
    assert_error(
        app.get_auth("/api/v1/users/profile", &laptop.token).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(app.login(&ann.email, PASSWORD).await.status(), 401);
    assert_eq!(
        app.login(&ann.email, "a brand new passphrase")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn forgot_password_answers_alike_and_a_reset_link_works_once() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;

    let known = app
        .post_json(
            "/api/v1/auth/forgot-password",
            &json!({ "email": "Ann@example.com" }),
        )
        .await;
    let unknown = app
        .post_json(
            "/api/v1/auth/forgot-password",
            &json!({ "email": "nobody@example.com" }),
        )
        .await;
    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), 202);
    assert_eq!(body(known).await, body(unknown).await);

    let token = app.mailed_token("ann@example.com", "Reset").await;
    // Once every reset and mail job has run, the unknown address has still got nothing.
    support::eventually(std::time::Duration::from_secs(10), || async {
        (app.query_one("SELECT count(*) FROM platform.jobs WHERE kind IN ('identity.password_reset_requested', 'mail.send')").unwrap() == "0").then_some(())
    })
    .await;
    assert!(app.outbox().iter().all(|m| m.to != "nobody@example.com"));
    // Only the hash is stored.
    let stored = app
        .query_one(&format!(
            "SELECT count(*) FROM identity.email_tokens WHERE token_hash = sha256('{token}'::bytea)"
        ))
        .unwrap();
    assert_eq!(stored, "1");

    let weak = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({ "token": token, "password": "12345678" }),
        )
        .await;
    assert_error(weak, 422, "VALIDATION_ERROR").await;
    let reset = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({ "token": token, "password": "my new long passphrase" }),
        )
        .await;
    assert_eq!(reset.status(), 204);
    // Every session ended, the old password is gone, the link is spent.
    assert_error(
        app.get_auth("/api/v1/users/profile", &ann.token).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(app.login(&ann.email, PASSWORD).await.status(), 401);
    assert_eq!(
        app.login(&ann.email, "my new long passphrase")
            .await
            .status(),
        200
    );
    let again = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({ "token": token, "password": "yet another passphrase" }),
        )
        .await;
    let error = assert_error(again, 422, "VALIDATION_ERROR").await;
    assert!(error["details"]["fields"]["token"].is_string());
}

#[tokio::test]
async fn expired_reset_links_are_refused() {
    let app = TestApp::spawn().await;
    app.register("ann@example.com").await;
    app.post_json(
        "/api/v1/auth/forgot-password",
        &json!({ "email": "ann@example.com" }),
    )
    .await;
    let token = app.mailed_token("ann@example.com", "Reset").await;
    let expired = app.execute("UPDATE identity.email_tokens SET expires_at = now() - interval '1 second' WHERE purpose = 'reset_password'");
    assert_eq!(expired, 1);
    let reset = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({ "token": token, "password": "my new long passphrase" }),
        )
        .await;
    assert_error(reset, 422, "VALIDATION_ERROR").await;
    assert_eq!(app.login("ann@example.com", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn the_welcome_mail_verifies_the_address_once() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let token = app.mailed_token("ann@example.com", "Confirm").await;
    let verified = app
        .post_json("/api/v1/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(verified.status(), 200);
    let profile = body(app.get_auth("/api/v1/users/profile", &ann.token).await).await;
    assert_eq!(profile["emailVerified"], true);
    let again = app
        .post_json("/api/v1/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_error(again, 422, "VALIDATION_ERROR").await;
    let made_up = app
        .post_json("/api/v1/auth/verify-email", &json!({ "token": "nope" }))
        .await;
    assert_error(made_up, 422, "VALIDATION_ERROR").await;
}

#[tokio::test]
async fn profile_updates_only_its_own_fields() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;

    let updated = put_profile(
        &app,
        &ann.token,
        json!({
            "displayName": "Ann B.",
            "bio": "Likes long walks.",
            "preferences": { "language": "fr-CA", "theme": "dark", "notifications": false }
        }),
    )
    .await;
    assert_eq!(updated.status(), 200);
    let updated = body(updated).await;
    assert_eq!(updated["displayName"], "Ann B.");
    assert_eq!(updated["bio"], "Likes long walks.");
    assert_eq!(updated["preferences"]["theme"], "dark");

    for field in [
        "role",
        "tier",
        "email",
        "id",
        "level",
        "experience",
        "subscription",
        "emailVerified",
    ] {
        let mut request = json!({ "displayName": "Mallory" });
        request[field] = json!("admin");
        let error = assert_error(
            put_profile(&app, &ann.token, request).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            error["details"]["fields"][field].is_string(),
            "{field}: {error}"
        );
    }
    let error = assert_error(
        put_profile(&app, &ann.token, json!({ "bio": "b".repeat(501), "avatarUrl": "javascript:alert(1)", "preferences": { "theme": "neon", "admin": true } })).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    let fields = error["details"]["fields"].as_object().unwrap();
    for name in ["bio", "avatarUrl", "preferences.theme", "preferences.admin"] {
        assert!(fields.contains_key(name), "{name} in {error}");
    }

    // Nothing of the refused requests landed; null clears the bio.
    let cleared = body(put_profile(&app, &ann.token, json!({ "bio": null })).await).await;
    assert_eq!(cleared["displayName"], "Ann B.");
    assert_eq!(cleared["role"], "user");
    assert_eq!(cleared["subscription"]["tier"], "free");
    assert!(cleared["bio"].is_null());
    assert_eq!(cleared["avatarUrl"], Value::Null);
    // The profile shows how much storage the account's media take, against its quota.
    assert_eq!(cleared["storage"]["usedBytes"], 0);
    assert_eq!(cleared["storage"]["quotaBytes"], 100 * 1024 * 1024);
}

/// The profile's three reads (account, subscription, storage) run on the serving thread's
/// pipelined connection: they see every committed change at once, and any number of
/// concurrent reads share that one connection instead of a connection each.
#[tokio::test]
async fn profile_reads_share_one_pipelined_connection_and_see_every_change() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let profile = |token: String| {
        let app = &app;
        async move {
            let response = app.get_auth("/api/v1/users/profile", &token).await;
            assert_eq!(response.status(), 200);
            body(response).await
        }
    };
    let before = profile(ann.token.clone()).await;
    assert_eq!(before["subscription"]["tier"], "free");
    assert_eq!(before["storage"]["usedBytes"], 0);

    // A change in each module shows in the next read.
    app.upload_png(&ann).await;
    let ann = app.set_user(&ann, None, Some("premium")).await;
    let renamed = put_profile(&app, &ann.token, json!({ "displayName": "Ann B." })).await;
    assert_eq!(renamed.status(), 200);
    let after = profile(ann.token.clone()).await;
    assert_eq!(after["displayName"], "Ann B.");
    assert_eq!(after["subscription"]["tier"], "premium");
    assert_eq!(after["storage"]["quotaBytes"], 5_368_709_120_u64);
    let used = after["storage"]["usedBytes"].as_u64().unwrap();
    let stored = app
        .query_one("SELECT sum(size) FROM media.objects")
        .unwrap();
    assert_eq!(used.to_string(), stored);
    assert!(used > 0);

    // Many reads at once: the same answer for each, on the connections already open (one
    // for the test server's HTTP worker, one for this test's thread, which read the account
    // in `set_user`): none is added or replaced.
    let pipelined = || {
        app.query_column(&format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = '{}' ORDER BY pid",
            companion::platform::db::PIPELINED_READS
        ))
    };
    let before = pipelined();
    assert!(!before.is_empty() && before.len() <= 2, "{before:?}");
    let reads = futures_util::future::join_all((0..48).map(|_| profile(ann.token.clone()))).await;
    assert!(reads.iter().all(|read| *read == after), "{reads:?}");
    assert_eq!(pipelined(), before);
}

#[tokio::test]
async fn experience_awards_raise_the_level_on_the_documented_curve() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let identity = &app.identity;
    let id: uuid::Uuid = ann.id.parse().unwrap();
    let progress = identity.experience().award(id, 120).await.unwrap().unwrap();
    assert_eq!((progress.experience, progress.level), (120, 2));
    let progress = identity.experience().award(id, 480).await.unwrap().unwrap();
    assert_eq!((progress.experience, progress.level), (600, 4));
    let profile = body(app.get_auth("/api/v1/users/profile", &ann.token).await).await;
    assert_eq!(profile["level"], 4);
    assert_eq!(profile["experience"], 600);
    assert_eq!(profile["nextLevelAt"], 1000);
    assert!(
        identity
            .experience()
            .award(uuid::Uuid::now_v7(), 5)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn only_admins_read_the_audit_log_and_it_records_security_events() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let root = app.register("root@example.com").await;
    app.login(&ann.email, "wrong password here").await;
    app.send_auth(Method::POST, "/api/v1/auth/logout", &ann.token, &json!({}))
        .await;

    assert_error(
        app.get_auth("/api/v1/admin/audit-log", &bob.token).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let moderator = app.set_user(&bob, Some("moderator"), None).await;
    assert_error(
        app.get_auth("/api/v1/admin/audit-log", &moderator.token)
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    // The role change ended bob's earlier session.
    assert_error(
        app.get_auth("/api/v1/users/profile", &bob.token).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let admin = app.set_user(&root, Some("admin"), Some("premium")).await;
    let profile = body(app.get_auth("/api/v1/users/profile", &admin.token).await).await;
    assert_eq!(
        (
            profile["role"].as_str(),
            profile["subscription"]["tier"].as_str()
        ),
        (Some("admin"), Some("premium"))
    );

    let page = app
        .get_auth(
            &format!("/api/v1/admin/audit-log?userId={}&size=50", ann.id),
            &admin.token,
        )
        .await;
    assert_eq!(page.status(), 200);
    let page = body(page).await;
    let actions: Vec<(String, String)> = page["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("auth.register", "success"),
        ("auth.login", "failure"),
        ("auth.logout", "success"),
    ] {
        assert!(
            actions.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {actions:?}"
        );
    }
    assert!(
        page["content"][0]["ip"]
            .as_str()
            .is_some_and(|ip| ip == "127.0.0.1")
    );

    let roles = body(
        app.get_auth(
            "/api/v1/admin/audit-log?action=user.role_change",
            &admin.token,
        )
        .await,
    )
    .await;
    assert_eq!(roles["totalElements"], 2);
    assert!(
        roles["content"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "user.role_change")
    );
    let bad = app
        .get_auth("/api/v1/admin/audit-log?page=x", &admin.token)
        .await;
    assert_error(bad, 400, "BAD_REQUEST").await;
    assert_error(
        app.get("/api/v1/admin/audit-log").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn the_cli_sets_role_and_tier() {
    let app = TestApp::spawn().await;
    app.register("ann@example.com").await;
    let db_url = app.db.as_ref().unwrap().url.clone();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_companion"))
            .args(args)
            .env("COMPANION_ENV", "test")
            .env("DATABASE_URL", &db_url)
            .env(
                "COMPANION_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
            )
            .output()
            .unwrap()
    };
    let ok = run(&[
        "admin",
        "set-user",
        "--email",
        "ANN@example.com",
        "--role",
        "moderator",
        "--tier",
        "premium",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let row = app
        .query_one(
            "SELECT u.role || ' ' || s.tier || ' ' || s.source FROM identity.users u \
             JOIN billing.subscriptions s ON s.user_id = u.id WHERE u.email = 'ann@example.com'",
        )
        .unwrap();
    // The tier is billing's: an operator's grant.
    assert_eq!(row, "moderator premium admin");
    let unknown = run(&[
        "admin",
        "set-user",
        "--email",
        "nobody@example.com",
        "--role",
        "admin",
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no account"));
    let bad_role = run(&[
        "admin",
        "set-user",
        "--email",
        "ann@example.com",
        "--role",
        "god",
    ]);
    assert!(!bad_role.status.success());
}
