//! Operator tools through the real server: the account list and changes (role, tier,
//! disabled), character moderation, the stats board; who may use them; and the audit trail
//! each change leaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::chat::{LUNA, start};
use support::{PASSWORD, TestApp, TestUser, assert_error};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

async fn patch(app: &TestApp, token: &str, path: &str, body: &Value) -> reqwest::Response {
    app.send_auth(reqwest::Method::PATCH, path, token, body)
        .await
}

async fn staff(app: &TestApp) -> (TestUser, TestUser, TestUser) {
    let root = app.register("root@example.com").await;
    let root = app.set_user(&root, Some("admin"), None).await;
    let mod_ = app.register("mod@example.com").await;
    let mod_ = app.set_user(&mod_, Some("moderator"), None).await;
    let ann = app.register("ann@example.com").await;
    (root, mod_, ann)
}

async fn audit(app: &TestApp, admin: &TestUser, action: &str) -> Vec<Value> {
    let body: Value = app
        .get_auth(
            &format!("/api/v1/admin/audit-log?action={action}"),
            &admin.token,
        )
        .await
        .json()
        .await
        .unwrap();
    body["content"].as_array().unwrap().clone()
}

#[tokio::test]
async fn admin_routes_refuse_users_and_moderators_get_moderation_only() {
    let app = TestApp::spawn().await;
    let (root, moderator, ann) = staff(&app).await;
    let some_id = &root.id;
    let admin_only = [
        (reqwest::Method::GET, "/api/v1/admin/users".to_owned()),
        (
            reqwest::Method::PATCH,
            format!("/api/v1/admin/users/{some_id}"),
        ),
        (reqwest::Method::GET, "/api/v1/admin/stats".to_owned()),
        (reqwest::Method::GET, "/api/v1/admin/audit-log".to_owned()),
    ];
    let moderation = [
        (reqwest::Method::GET, "/api/v1/admin/characters".to_owned()),
        (
            reqwest::Method::PATCH,
            format!("/api/v1/admin/characters/{LUNA}"),
        ),
    ];
    let body = json!({ "hidden": false, "role": "admin" });
    for (method, path) in admin_only.iter().chain(&moderation) {
        let response = app.send_auth(method.clone(), path, &ann.token, &body).await;
        assert_error(response, 403, "FORBIDDEN").await;
    }
    for (method, path) in &admin_only {
        let response = app
            .send_auth(method.clone(), path, &moderator.token, &body)
            .await;
        assert_error(response, 403, "FORBIDDEN").await;
    }
    let listed = app
        .get_auth("/api/v1/admin/characters", &moderator.token)
        .await;
    assert_eq!(listed.status(), 200);
    // Nobody became an admin on the way.
    let role = app.query_one(&format!(
        "SELECT role FROM identity.users WHERE id = '{}'",
        ann.id
    ));
    assert_eq!(role.as_deref(), Some("user"));
    // Without a token at all: 401.
    assert_error(app.get("/api/v1/admin/stats").await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn admins_search_accounts_and_every_change_is_audited_with_old_and_new_values() {
    let app = TestApp::spawn().await;
    let (root, _moderator, ann) = staff(&app).await;
    app.register("bob@example.com").await;

    let found: Value = app
        .get_auth("/api/v1/admin/users?search=ANN%40", &root.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["totalElements"], 1);
    let row = &found["content"][0];
    assert_eq!(row["email"], "ann@example.com");
    assert_eq!(row["role"], "user");
    assert_eq!(row["tier"], "free");
    assert_eq!(row["status"], "active");
    assert!(row["lastLoginAt"].is_string() && row["createdAt"].is_string());
    // LIKE's metacharacters are searched for literally.
    let none: Value = app
        .get_auth("/api/v1/admin/users?search=%25", &root.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["totalElements"], 0);
    let all: Value = app
        .get_auth("/api/v1/admin/users?size=2&page=1", &root.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["totalElements"], 4);
    assert_eq!(all["content"].as_array().unwrap().len(), 2);

    let until = "2099-01-31T00:00:00Z";
    let changed = patch(
        &app,
        &root.token,
        &format!("/api/v1/admin/users/{}", ann.id),
        &json!({ "role": "moderator", "tier": "premium", "validUntil": until }),
    )
    .await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["role"], "moderator");
    assert_eq!(changed["tier"], "premium");
    assert_eq!(changed["subscription"]["validUntil"], until);

    let roles = audit(&app, &root, "user.role_change").await;
    let entry = roles
        .iter()
        .find(|e| e["userId"] == ann.id.as_str())
        .unwrap();
    assert_eq!(entry["actorId"], root.id.as_str());
    assert_eq!(entry["oldValue"], "user");
    assert_eq!(entry["newValue"], "moderator");
    let tiers = audit(&app, &root, "user.tier_change").await;
    assert_eq!(tiers[0]["oldValue"]["tier"], "free");
    assert_eq!(tiers[0]["newValue"]["tier"], "premium");
    assert_eq!(tiers[0]["newValue"]["validUntil"], until);
    // A role change ends the sessions: the old token no longer works.
    assert_error(
        app.get_auth("/api/v1/users/profile", &ann.token).await,
        401,
        "UNAUTHORIZED",
    )
    .await;

    // Bad changes name the field; unknown fields and self-demotion are refused.
    let path = format!("/api/v1/admin/users/{}", ann.id);
    for (body, field) in [
        (json!({ "role": "god" }), "role"),
        (json!({ "tier": "platinum" }), "tier"),
        (json!({ "validUntil": until }), "validUntil"),
        (
            json!({ "tier": "premium", "validUntil": "2001-01-01T00:00:00Z" }),
            "validUntil",
        ),
        (json!({ "email": "x@example.com" }), "email"),
    ] {
        let error = assert_error(
            patch(&app, &root.token, &path, &body).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            error["details"]["fields"][field].is_string(),
            "{field}: {error}"
        );
    }
    assert_error(
        patch(
            &app,
            &root.token,
            &format!("/api/v1/admin/users/{}", root.id),
            &json!({ "disabled": true }),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    assert_error(
        patch(
            &app,
            &root.token,
            &format!("/api/v1/admin/users/{}", uuid::Uuid::new_v4()),
            &json!({ "disabled": true }),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn disabling_a_user_ends_their_live_websocket_and_their_sessions() {
    let app = TestApp::spawn().await;
    let (root, _moderator, ann) = staff(&app).await;
    let mut request = format!("ws://127.0.0.1:{}/api/v1/ws", app.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", ann.token)).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let disabled = patch(
        &app,
        &root.token,
        &format!("/api/v1/admin/users/{}", ann.id),
        &json!({ "disabled": true }),
    )
    .await;
    assert_eq!(disabled.status(), 200);
    assert_eq!(
        disabled.json::<Value>().await.unwrap()["status"],
        "disabled"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket closes at once");
    assert_eq!(u16::from(closed.unwrap().code), 1008);

    assert_error(
        app.get_auth("/api/v1/users/profile", &ann.token).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let refused = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({ "refreshToken": ann.refresh_token }),
        )
        .await;
    assert_error(refused, 401, "UNAUTHORIZED").await;
    // The owner, with the right password, is told; a wrong password learns nothing.
    assert_error(
        app.login(&ann.email, PASSWORD).await,
        403,
        "ACCOUNT_DISABLED",
    )
    .await;
    assert_error(
        app.login(&ann.email, "not the password at all").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let entries = audit(&app, &root, "user.disable").await;
    assert_eq!(entries[0]["oldValue"], json!({ "disabled": false }));
    assert_eq!(entries[0]["newValue"], json!({ "disabled": true }));

    // Enabled again: the account can log in.
    let enabled = patch(
        &app,
        &root.token,
        &format!("/api/v1/admin/users/{}", ann.id),
        &json!({ "disabled": false }),
    )
    .await;
    assert_eq!(enabled.status(), 200);
    assert_eq!(app.login(&ann.email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn moderators_hide_characters_with_a_reason_and_list_the_hidden_ones() {
    let app = TestApp::spawn().await;
    let (root, moderator, ann) = staff(&app).await;
    let hidden = patch(
        &app,
        &moderator.token,
        &format!("/api/v1/admin/characters/{LUNA}"),
        &json!({ "hidden": true, "reason": "Reported as a copy" }),
    )
    .await;
    assert_eq!(hidden.status(), 200);
    let hidden: Value = hidden.json().await.unwrap();
    assert_eq!(hidden["hidden"], true);
    assert_eq!(hidden["hiddenReason"], "Reported as a copy");
    // Gone for users.
    assert_error(
        app.get_auth(&format!("/api/v1/characters/{LUNA}"), &ann.token)
            .await,
        404,
        "NOT_FOUND",
    )
    .await;

    let list: Value = app
        .get_auth("/api/v1/admin/characters?hidden=true", &moderator.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalElements"], 1);
    assert_eq!(list["content"][0]["id"], LUNA);
    assert_eq!(list["content"][0]["hiddenReason"], "Reported as a copy");
    assert!(list["content"][0]["hiddenAt"].is_string());
    let visible: Value = app
        .get_auth(
            "/api/v1/admin/characters?hidden=false&size=100",
            &moderator.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        visible["content"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != LUNA && c["hidden"] == false)
    );
    let entries = audit(&app, &root, "character.hide").await;
    assert_eq!(entries[0]["actorId"], moderator.id.as_str());
    assert_eq!(entries[0]["oldValue"], json!({ "hidden": false }));
    assert_eq!(
        entries[0]["newValue"],
        json!({ "hidden": true, "reason": "Reported as a copy" })
    );

    let shown = patch(
        &app,
        &moderator.token,
        &format!("/api/v1/admin/characters/{LUNA}"),
        &json!({ "hidden": false }),
    )
    .await;
    assert_eq!(shown.status(), 200);
    assert_eq!(
        app.get_auth(&format!("/api/v1/characters/{LUNA}"), &ann.token)
            .await
            .status(),
        200
    );
    assert_error(
        patch(
            &app,
            &moderator.token,
            &format!("/api/v1/admin/characters/{LUNA}"),
            &json!({ "hidden": "yes" }),
        )
        .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
}

#[tokio::test]
async fn the_stats_board_counts_users_messages_and_jobs_and_feeds_the_gauges() {
    let app = TestApp::spawn().await;
    let (root, _moderator, ann) = staff(&app).await;
    app.set_user(&ann, None, Some("premium")).await;
    let bob = app.register("bob@example.com").await;
    start(&app, &bob, LUNA, Some("Hello Luna")).await;

    let response = app.get_auth("/api/v1/admin/stats", &root.token).await;
    assert_eq!(response.status(), 200);
    let stats: Value = response.json().await.unwrap();
    assert_eq!(stats["users"]["total"], 4);
    assert_eq!(stats["users"]["active24h"], 4);
    assert_eq!(stats["users"]["byTier"]["premium"], 1);
    assert_eq!(stats["users"]["byTier"]["free"], 3);
    assert_eq!(stats["users"]["byTier"]["enterprise"], 0);
    // Bob's message and Luna's reply.
    assert_eq!(stats["messagesToday"], 2);
    assert_eq!(stats["failedRepliesToday"], 0);
    assert!(stats["jobs"]["queued"].is_i64() && stats["jobs"]["dead"] == 0);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("virtual_companion_active_users 4"),
        "{metrics}"
    );
    assert!(metrics.contains("virtual_companion_users{tier=\"premium\"} 1"));
    assert!(metrics.contains("virtual_companion_users{tier=\"free\"} 3"));
}
