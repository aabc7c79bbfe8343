//! Authorization against a second account and against roles, generated from the route table
//! so that a new route is covered (or makes these tests fail until it says how) without
//! anyone remembering to add it:
//! - object level: every route that names a resource, called by another user on the owner's
//!   ids, answers exactly what it answers for an id that does not exist, and changes nothing;
//! - function level: every `/admin` route and every moderation route refuses a plain user,
//!   and every admin-only one refuses a moderator;
//! - property level: every JSON body the server accepts refuses privileged fields it does not
//!   declare, by name, and nothing is changed by such a request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::chat::start;
use support::{TestApp, TestUser, assert_error, eventually};

const WAIT: Duration = Duration::from_secs(20);

/// What the owner has: one of each kind of resource a route can name.
struct Estate {
    owner: TestUser,
    character: String,
    conversation: String,
    reply: String,
    media: String,
    export: String,
}

impl Estate {
    /// The owner's id for a `{param}` that follows the `collection` segment.
    fn id_after(&self, collection: &str) -> Option<&str> {
        Some(match collection {
            "characters" => &self.character,
            "conversations" => &self.conversation,
            "messages" => &self.reply,
            "media" => &self.media,
            "data-export" => &self.export,
            "users" => &self.owner.id,
            _ => return None,
        })
    }

    /// `template` with every parameter replaced by the owner's id for it.
    fn fill(&self, template: &str) -> String {
        support::fill_path(template, |collection| {
            self.id_after(collection)
                .unwrap_or_else(|| {
                    panic!("{template}: no owned id for a parameter after `{collection}`; add one to the estate")
                })
                .to_owned()
        })
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
}

/// A premium owner with a private character, a conversation with it whose reply is finished,
/// a private upload and a finished data export.
async fn estate(app: &TestApp, email: &str) -> Estate {
    let owner = app.premium(email).await;
    let created = app
        .send_auth(
            Method::POST,
            "/api/v1/characters",
            &owner.token,
            &json!({ "name": "Private Pia", "visibility": "private" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let character = json_of(created).await["id"].as_str().unwrap().to_owned();
    let (conversation, _) = start(app, &owner, &character, Some("Hello there")).await;
    let history = format!("/api/v1/conversations/{conversation}/messages");
    let reply = eventually(WAIT, || async {
        let page = json_of(app.get_auth(&history, &owner.token).await).await;
        let last = page["messages"].as_array()?.last()?.clone();
        (last["role"] == "assistant" && last["status"] == "complete")
            .then(|| last["id"].as_str().unwrap().to_owned())
    })
    .await;
    let media = app.upload_png(&owner).await;
    let requested = app
        .send_auth(
            Method::POST,
            "/api/v1/users/data-export",
            &owner.token,
            &json!({}),
        )
        .await;
    assert_eq!(requested.status(), 202);
    let export = json_of(requested).await["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = format!("/api/v1/users/data-export/{export}");
    eventually(WAIT, || async {
        let view = json_of(app.get_auth(&status, &owner.token).await).await;
        (view["status"] == "ready").then_some(())
    })
    .await;
    Estate {
        owner,
        character,
        conversation,
        reply,
        media,
        export,
    }
}

/// A body each writing route accepts from its rightful caller, so that a refusal is about who
/// calls and not about what was sent.
fn body_for(method: &Method, template: &str) -> Value {
    let route = template.trim_start_matches("/api/v1");
    match (method.as_str(), route) {
        ("PUT" | "PATCH", "/characters/{id}") => json!({ "name": "Taken over" }),
        ("POST", "/characters/{id}/rating") => json!({ "stars": 1 }),
        ("PATCH", "/conversations/{id}") => json!({ "title": "Taken over" }),
        ("POST", "/conversations/{id}/messages")
        | ("POST", "/conversations/{id}/messages/{message}/edit") => {
            json!({ "content": "Taken over", "type": "text" })
        }
        _ => json!({}),
    }
}

/// Routes whose caller must hold a staff role; `function_level` covers them.
fn staff_only(path: &str) -> bool {
    path.starts_with("/api/v1/admin") || path.ends_with("/hide")
}

/// Everything the owner can read about their estate, to compare before and after an attack.
async fn snapshot(app: &TestApp, estate: &Estate) -> Vec<(String, u16, String)> {
    let paths = [
        format!("/api/v1/characters/{}", estate.character),
        format!("/api/v1/characters/{}/rating", estate.character),
        format!("/api/v1/characters/{}/card.json", estate.character),
        format!("/api/v1/conversations/{}", estate.conversation),
        format!("/api/v1/conversations/{}/messages", estate.conversation),
        format!("/api/v1/media/{}", estate.media),
        format!("/api/v1/users/data-export/{}", estate.export),
        "/api/v1/users/profile".to_owned(),
    ];
    let mut seen = Vec::new();
    for path in paths {
        let response = app.get_auth(&path, &estate.owner.token).await;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        seen.push((path, status, String::from_utf8_lossy(&bytes).into_owned()));
    }
    let id = &estate.conversation;
    let count = app
        .query_one(&format!(
            "SELECT count(*) FROM chat.messages WHERE conversation_id = '{id}'"
        ))
        .unwrap();
    seen.push(("messages stored".to_owned(), 200, count));
    seen
}

#[tokio::test]
async fn another_user_gets_404_on_every_route_that_names_the_owners_resource() {
    let app = TestApp::spawn().await;
    let estate = estate(&app, "owner@example.com").await;
    let other = app.premium("other@example.com").await;

    let matrix: Vec<_> = app
        .routes
        .iter()
        .filter(|r| r.path.contains('{') && !staff_only(&r.path))
        .collect();
    assert!(matrix.len() >= 25, "the table names resources: {matrix:?}");

    // The owner reaches each of these ids, so the 404s below are about the caller.
    for route in matrix
        .iter()
        .filter(|r| support::method_of(r) == Method::GET)
    {
        let path = estate.fill(&route.path);
        let response = app.get_auth(&path, &estate.owner.token).await;
        assert!(
            response.status().is_success(),
            "the owner reads {path}: {}",
            response.status()
        );
    }

    let before = snapshot(&app, &estate).await;
    // Writes before deletes, so that each delete still has something to delete.
    let mut ordered = matrix.clone();
    ordered.sort_by_key(|r| support::method_of(r) == Method::DELETE);
    for route in ordered {
        let method = support::method_of(route);
        let body = body_for(&method, &route.path);
        let theirs = estate.fill(&route.path);
        let response = app
            .send_auth(support::method_of(route), &theirs, &other.token, &body)
            .await;
        let none = app
            .send_auth(
                support::method_of(route),
                &support::nobodys_path(&route.path),
                &other.token,
                &body,
            )
            .await;
        let what = format!("{} {}", route.method, route.path);
        assert_eq!(response.status(), 404, "{what}");
        assert_eq!(none.status(), 404, "{what} on nothing");
        if method == Method::HEAD {
            continue;
        }
        // The answer says nothing that an id naming nothing would not: same code, same text.
        let theirs_error = json_of(response).await["error"].clone();
        let none_error = json_of(none).await["error"].clone();
        assert_eq!(theirs_error["code"], "NOT_FOUND", "{what}: {theirs_error}");
        assert_eq!(theirs_error["code"], none_error["code"], "{what}");
        assert_eq!(theirs_error["message"], none_error["message"], "{what}");
        assert_eq!(theirs_error["details"], none_error["details"], "{what}");
    }
    assert_eq!(
        snapshot(&app, &estate).await,
        before,
        "nothing of the owner's changed"
    );
}

/// Routes a moderator may use; every other staff route is for admins only.
const MODERATION: [&str; 3] = [
    "/api/v1/admin/characters",
    "/api/v1/admin/characters/{id}",
    "/api/v1/characters/{id}/hide",
];

#[tokio::test]
async fn staff_routes_refuse_users_and_admin_routes_refuse_moderators() {
    let app = TestApp::spawn().await;
    let estate = estate(&app, "owner@example.com").await;
    let user = app.register("user@example.com").await;
    let moderator = app.register("moderator@example.com").await;
    let moderator = app.set_user(&moderator, Some("moderator"), None).await;
    let staff: Vec<_> = app.routes.iter().filter(|r| staff_only(&r.path)).collect();
    assert!(staff.len() >= 8, "admin and moderation routes: {staff:?}");
    for path in MODERATION {
        assert!(
            staff.iter().any(|r| r.path == path),
            "{path} is still mounted"
        );
    }
    // What an admin route might be asked to do, all at once.
    let body = json!({ "hidden": true, "reason": "taken over", "role": "admin", "tier": "premium", "disabled": true });
    for route in &staff {
        // A public character: a private one is 404 to a user before any role is checked.
        let path = support::fill_path(&route.path, |collection| match collection {
            "characters" => support::chat::LUNA.to_owned(),
            other => estate.id_after(other).unwrap().to_owned(),
        });
        let what = format!("{} {}", route.method, route.path);
        let response = app
            .send_auth(support::method_of(route), &path, &user.token, &body)
            .await;
        assert_eq!(response.status(), 403, "{what} as a user");
        assert_error(response, 403, "FORBIDDEN").await;
        if !MODERATION.contains(&route.path.as_str()) {
            let response = app
                .send_auth(support::method_of(route), &path, &moderator.token, &body)
                .await;
            assert_eq!(response.status(), 403, "{what} as a moderator");
        }
        let anonymous = app
            .client
            .request(support::method_of(route), app.url(&path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{what} without a token");
    }
    let roles = app.query_column(
        "SELECT role || ' ' || (disabled_at IS NULL) FROM identity.users ORDER BY email",
    );
    assert_eq!(
        roles,
        ["moderator true", "user true", "user true"],
        "nobody gained a role or lost their account"
    );
    let profile = json_of(app.get_auth("/api/v1/users/profile", &user.token).await).await;
    assert_eq!(
        profile["subscription"]["tier"], "free",
        "nobody gained a plan"
    );
    let hidden = app.query_one(&format!(
        "SELECT hidden_at IS NULL FROM catalog.characters WHERE id = '{}'",
        support::chat::LUNA
    ));
    assert_eq!(
        hidden.as_deref(),
        Some("true"),
        "the character is not hidden"
    );
}

/// Fields a client must never set on its own behalf. A body that declares one of them (an
/// admin setting a role) is left to the tests of that route.
const PRIVILEGED: [&str; 15] = [
    "id",
    "userId",
    "ownerId",
    "role",
    "tier",
    "admin",
    "isAdmin",
    "emailVerified",
    "level",
    "experience",
    "createdAt",
    "hidden",
    "disabled",
    "status",
    "subscription",
];

/// Bodies whose fields belong to someone else's format and are kept as sent.
const FOREIGN_FORMATS: [(&str, &str); 2] = [
    // A character card from another tool: unknown fields are the card's extensions.
    ("POST", "/api/v1/characters/import"),
    // The payment provider's signed event.
    ("POST", "/api/v1/billing/webhook"),
];

/// Who may send a body to this route, and one they would send.
fn rightful(method: &str, path: &str) -> (&'static str, Value) {
    let route = path.trim_start_matches("/api/v1");
    let who = if route.starts_with("/admin") {
        "admin"
    } else if route.ends_with("/hide") {
        "moderator"
    } else {
        "owner"
    };
    let body = match (method, route) {
        ("POST" | "PUT" | "PATCH", "/characters" | "/characters/{id}") => {
            json!({ "name": "Pia" })
        }
        ("POST", "/characters/{id}/rating") => json!({ "stars": 3 }),
        ("POST", "/characters/{id}/hide") => json!({ "reason": "spam" }),
        ("PATCH", "/admin/characters/{id}") => json!({ "hidden": false }),
        ("PATCH", "/admin/users/{id}") => json!({ "role": "user" }),
        ("POST", "/auth/register") => json!({
            "email": "new@example.com", "password": support::PASSWORD, "displayName": "New"
        }),
        ("POST", "/auth/login" | "/users/account/restore") => json!({
            "email": "owner@example.com", "password": support::PASSWORD
        }),
        ("POST", "/auth/refresh") => json!({ "refreshToken": "abc" }),
        ("POST", "/auth/verify-email") => json!({ "token": "abc" }),
        ("POST", "/auth/forgot-password") => json!({ "email": "owner@example.com" }),
        ("POST", "/auth/reset-password") => {
            json!({ "token": "abc", "password": support::PASSWORD })
        }
        ("PUT", "/users/password") => json!({
            "currentPassword": support::PASSWORD, "newPassword": "another long passphrase"
        }),
        ("PUT", "/users/profile") => json!({ "displayName": "Own" }),
        ("PUT", "/users/consents") => {
            json!({ "marketing": false, "analytics": false, "tracking": false })
        }
        ("DELETE", "/users/account") => json!({ "password": support::PASSWORD }),
        ("POST", "/conversations") => json!({ "characterId": support::chat::LUNA }),
        ("PATCH", "/conversations/{id}") => json!({ "title": "Mine" }),
        (
            "POST",
            "/conversations/{id}/messages" | "/conversations/{id}/messages/{message}/edit",
        ) => {
            json!({ "content": "Mine" })
        }
        _ => panic!("{method} {path} takes a JSON body: give it a rightful one here"),
    };
    (who, body)
}

/// The property names `schema` declares, following `$ref`s and `allOf`.
fn declared(doc: &Value, schema: &Value) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return declared(doc, &doc["components"]["schemas"][name]);
    }
    let mut names: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let parts = ["allOf", "oneOf", "anyOf"]
        .into_iter()
        .filter_map(|key| schema[key].as_array());
    for part in parts.flatten() {
        names.extend(declared(doc, part));
    }
    names
}

#[tokio::test]
async fn every_json_body_refuses_privileged_fields_by_name_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let estate = estate(&app, "owner@example.com").await;
    let admin = app.register("admin@example.com").await;
    let admin = app.set_user(&admin, Some("admin"), None).await;
    let moderator = app.register("moderator@example.com").await;
    let moderator = app.set_user(&moderator, Some("moderator"), None).await;
    let doc = json_of(app.get("/openapi.json").await).await;
    let before = snapshot(&app, &estate).await;

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(schema) = operation
                .pointer("/requestBody/content/application~1json/schema")
                .cloned()
            else {
                continue;
            };
            let method = method.to_ascii_uppercase();
            if FOREIGN_FORMATS.contains(&(method.as_str(), path.as_str())) {
                continue;
            }
            let (who, mut body) = rightful(&method, path);
            let token = match who {
                "admin" => &admin.token,
                "moderator" => &moderator.token,
                _ => &estate.owner.token,
            };
            let properties = declared(&doc, &schema);
            assert!(
                !properties.is_empty(),
                "{method} {path} declares its fields"
            );
            let mut sent: Vec<&str> = PRIVILEGED
                .into_iter()
                .filter(|field| !properties.iter().any(|p| p == field))
                .collect();
            for field in &sent {
                body[*field] = json!(if *field == "id" || field.ends_with("Id") {
                    Value::String(admin.id.clone())
                } else {
                    json!(true)
                });
            }
            let what = format!("{method} {path}");
            let response = app
                .send_auth(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &estate.fill(path),
                    token,
                    &body,
                )
                .await;
            let error = assert_error(response, 422, "VALIDATION_ERROR").await;
            let fields = error["details"]["fields"]
                .as_object()
                .unwrap_or_else(|| panic!("{what}: fields named in {error}"));
            let mut named: Vec<&str> = fields.keys().map(String::as_str).collect();
            named.sort_unstable();
            sent.sort_unstable();
            assert_eq!(named, sent, "{what}: each privileged field and only those");
            checked += 1;
        }
    }
    assert!(checked >= 20, "JSON bodies checked: {checked}");

    assert_eq!(snapshot(&app, &estate).await, before, "nothing changed");
    let accounts = app.query_column(
        "SELECT email || ' ' || role || ' ' || (disabled_at IS NULL) FROM identity.users ORDER BY email",
    );
    assert_eq!(
        accounts,
        [
            "admin@example.com admin true",
            "moderator@example.com moderator true",
            "owner@example.com user true"
        ],
        "no account created, promoted or disabled"
    );
}
