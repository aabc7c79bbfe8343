//! Characters, categories, search and ratings, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{TestApp, TestUser, assert_error};
use uuid::Uuid;

async fn body(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn create(app: &TestApp, user: &TestUser, character: Value) -> Value {
    let response = app
        .send_auth(Method::POST, "/api/v1/characters", &user.token, &character)
        .await;
    assert_eq!(response.status(), 201, "create {character}");
    body(response).await
}

/// The names a caller lists (with `token`, or anonymously).
async fn names(app: &TestApp, query: &str, token: Option<&str>) -> Vec<String> {
    let path = format!("/api/v1/characters?{query}");
    let response = match token {
        Some(token) => app.get_auth(&path, token).await,
        None => app.get(&path).await,
    };
    assert_eq!(response.status(), 200, "{path}");
    body(response).await["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_new_installation_lists_starter_characters_by_category() {
    let app = TestApp::spawn().await;
    let page = body(app.get("/api/v1/characters?size=3&page=1").await).await;
    assert_eq!(page["totalElements"], 6);
    assert_eq!(page["totalPages"], 2);
    assert_eq!(page["number"], 1);
    assert_eq!(page["content"].as_array().unwrap().len(), 3);
    let first = &page["content"][0];
    assert_eq!(first["isPublic"], true);
    assert!(first["personality"]["greeting"].as_str().unwrap().len() > 10);

    let categories = body(app.get("/api/v1/categories").await).await;
    let counted: Vec<(String, i64)> = categories
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().into(),
                c["characterCount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(counted.contains(&("fantasy".into(), 1)));
    assert!(counted.contains(&("romance".into(), 0)));
    assert_eq!(counted.iter().map(|(_, n)| n).sum::<i64>(), 6);
    assert_eq!(names(&app, "category=mentor", None).await, vec!["Ada"]);
}

#[tokio::test]
async fn creating_a_character_is_a_premium_feature() {
    let app = TestApp::spawn().await;
    let free = app.register("free@example.com").await;
    let character = json!({"name": "Nova", "category": "sci-fi"});
    let refused = app
        .send_auth(Method::POST, "/api/v1/characters", &free.token, &character)
        .await;
    let error = assert_error(refused, 403, "PREMIUM_REQUIRED").await;
    assert!(error["message"].as_str().unwrap().contains("premium"));
    let anonymous = app.post_json("/api/v1/characters", &character).await;
    assert_error(anonymous, 401, "UNAUTHORIZED").await;

    let paid = app.premium("paid@example.com").await;
    let created = create(
        &app,
        &paid,
        json!({
            "name": "  Nova  ", "description": "A pilot.", "category": "sci-fi",
            "traits": ["bold"], "personality": {"greeting": "Hi!", "tone": "bright", "interests": ["ships"]},
            "tags": ["Space", "space", "pilot"], "extensions": {"x/y": {"keep": [1, 2]}},
            "lorebook": {"entries": [{"keys": ["Meridian"], "content": "A ship.", "position": "after_char"}]}
        }),
    )
    .await;
    assert_eq!(created["name"], "Nova");
    assert_eq!(created["ownerId"], paid.id.as_str());
    assert_eq!(created["visibility"], "private");
    assert_eq!(created["isPublic"], false);
    assert_eq!(created["tags"], json!(["space", "pilot"]));
    assert_eq!(created["extensions"], json!({"x/y": {"keep": [1, 2]}}));
    assert_eq!(created["lorebook"]["entries"][0]["position"], "after_char");
    assert_eq!(created["lorebook"]["entries"][0]["enabled"], true);
    assert_eq!(created["personality"]["interests"], json!(["ships"]));
}

#[tokio::test]
async fn visibility_decides_who_sees_what() {
    let app = TestApp::spawn().await;
    let owner = app.premium("owner@example.com").await;
    let other = app.register("other@example.com").await;
    let moderator = app.register("mod@example.com").await;
    let moderator = app.set_user(&moderator, Some("moderator"), None).await;
    let mut ids = std::collections::HashMap::new();
    for visibility in ["public", "unlisted", "private"] {
        let name = format!("Zed {visibility}");
        let created = create(
            &app,
            &owner,
            json!({"name": name, "visibility": visibility}),
        )
        .await;
        ids.insert(visibility, created["id"].as_str().unwrap().to_owned());
    }
    let get = |id: &str, token: Option<&str>| {
        let path = format!("/api/v1/characters/{id}");
        let app = &app;
        let token = token.map(str::to_owned);
        async move {
            match token {
                Some(token) => app.get_auth(&path, &token).await.status().as_u16(),
                None => app.get(&path).await.status().as_u16(),
            }
        }
    };

    // Listings: the public one for everyone, all three for the owner.
    assert_eq!(names(&app, "search=zed", None).await, vec!["Zed public"]);
    assert_eq!(
        names(&app, "search=zed", Some(&other.token)).await,
        vec!["Zed public"]
    );
    let mut own = names(&app, "search=zed", Some(&owner.token)).await;
    own.sort();
    assert_eq!(own, vec!["Zed private", "Zed public", "Zed unlisted"]);

    // By id: unlisted is a shared link; private is the owner's alone, moderators included.
    for token in [
        None,
        Some(other.token.as_str()),
        Some(moderator.token.as_str()),
    ] {
        assert_eq!(get(&ids["public"], token).await, 200);
        assert_eq!(get(&ids["unlisted"], token).await, 200);
        assert_eq!(get(&ids["private"], token).await, 404);
    }
    assert_eq!(get(&ids["private"], Some(&owner.token)).await, 200);
    assert_eq!(get(&Uuid::now_v7().to_string(), None).await, 404);

    // Someone else's character cannot be changed, and looks absent.
    let path = format!("/api/v1/characters/{}", ids["public"]);
    let patch = app
        .send_auth(Method::PATCH, &path, &other.token, &json!({"name": "Mine"}))
        .await;
    assert_error(patch, 404, "NOT_FOUND").await;
    let delete = app
        .send_auth(Method::DELETE, &path, &other.token, &json!({}))
        .await;
    assert_error(delete, 404, "NOT_FOUND").await;

    // A moderator hides the public one: gone for others, still there for owner and staff.
    let hide_path = format!("{path}/hide");
    let refused = app
        .send_auth(Method::POST, &hide_path, &other.token, &json!({}))
        .await;
    assert_eq!(refused.status(), 403);
    let hidden = app
        .send_auth(
            Method::POST,
            &hide_path,
            &moderator.token,
            &json!({"reason": "spam"}),
        )
        .await;
    assert_eq!(hidden.status(), 200);
    assert_eq!(body(hidden).await["hidden"], true);
    assert_eq!(get(&ids["public"], None).await, 404);
    assert_eq!(get(&ids["public"], Some(&other.token)).await, 404);
    assert_eq!(get(&ids["public"], Some(&owner.token)).await, 200);
    assert_eq!(get(&ids["public"], Some(&moderator.token)).await, 200);
    assert!(names(&app, "search=zed", None).await.is_empty());
    let audited = app.query_one(&format!(
        "SELECT count(*) FROM identity.audit_log WHERE action = 'character.hide' \
         AND resource_id = '{}' AND actor_id = '{}'",
        ids["public"], moderator.id
    ));
    assert_eq!(audited.as_deref(), Some("1"));
    let shown = app
        .send_auth(Method::DELETE, &hide_path, &moderator.token, &json!({}))
        .await;
    assert_eq!(shown.status(), 200);
    assert_eq!(names(&app, "search=zed", None).await, vec!["Zed public"]);

    // The moderator may edit what they can see; the owner deletes.
    let edited = app
        .send_auth(
            Method::PATCH,
            &path,
            &moderator.token,
            &json!({"description": "Tidied."}),
        )
        .await;
    assert_eq!(edited.status(), 200);
    let deleted = app
        .send_auth(Method::DELETE, &path, &owner.token, &json!({}))
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(get(&ids["public"], Some(&owner.token)).await, 404);
}

#[tokio::test]
async fn invalid_characters_are_refused_field_by_field() {
    let app = TestApp::spawn().await;
    let owner = app.premium("owner@example.com").await;
    let entries: Vec<Value> = (0..501)
        .map(|_| json!({"keys": ["k"], "content": "c"}))
        .collect();
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (
            json!({"name": "A", "description": "d".repeat(10_001)}),
            "description",
        ),
        (
            json!({"name": "A", "personality": {"greeting": "g".repeat(4_097)}}),
            "personality.greeting",
        ),
        (
            json!({"name": "A", "tags": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "tags",
        ),
        (
            json!({"name": "A", "lorebook": {"entries": entries}}),
            "lorebook",
        ),
        (
            json!({"name": "A", "lorebook": {"entries": [{"keys": "k", "content": "c"}]}}),
            "lorebook",
        ),
        (json!({"name": "A", "category": "nope"}), "category"),
        (json!({"name": "A", "visibility": "friends"}), "visibility"),
        (json!({"name": "A", "ownerId": owner.id}), "ownerId"),
        (json!({"name": "A", "rating": 5}), "rating"),
        (
            json!({"name": "A", "avatarUrl": "javascript:alert(1)"}),
            "avatarUrl",
        ),
        (json!({"name": 7}), "name"),
    ];
    for (character, field) in cases {
        let response = app
            .send_auth(Method::POST, "/api/v1/characters", &owner.token, &character)
            .await;
        let error = assert_error(response, 422, "VALIDATION_ERROR").await;
        assert!(
            error["details"]["fields"].get(field).is_some(),
            "{field} in {error}"
        );
    }
    let mine = names(&app, "", Some(&owner.token)).await;
    assert_eq!(mine.len(), 6, "nothing was created: {mine:?}");

    let response = app.get("/api/v1/characters?sort=best").await;
    assert_error(response, 422, "VALIDATION_ERROR").await;
    let capped = body(app.get("/api/v1/characters?size=1000").await).await;
    assert_eq!(capped["size"], 100);
}

#[tokio::test]
async fn put_replaces_and_patch_changes_only_what_is_sent() {
    let app = TestApp::spawn().await;
    let owner = app.premium("owner@example.com").await;
    let created = create(
        &app,
        &owner,
        json!({"name": "Iris", "scenario": "A garden.", "tags": ["flowers"]}),
    )
    .await;
    let path = format!("/api/v1/characters/{}", created["id"].as_str().unwrap());
    let patched = body(
        app.send_auth(
            Method::PATCH,
            &path,
            &owner.token,
            &json!({"avatarMediaId": null, "isPublic": true}),
        )
        .await,
    )
    .await;
    assert_eq!(patched["scenario"], "A garden.");
    assert_eq!(patched["avatarUrl"], Value::Null);
    assert_eq!(patched["visibility"], "public");
    let replaced = body(
        app.send_auth(
            Method::PUT,
            &path,
            &owner.token,
            &json!({"name": "Iris II"}),
        )
        .await,
    )
    .await;
    assert_eq!(replaced["name"], "Iris II");
    assert_eq!(replaced["scenario"], "");
    assert_eq!(replaced["tags"], json!([]));
    assert_eq!(replaced["visibility"], "private");
}

#[tokio::test]
async fn search_ranks_the_exact_name_first_and_forgives_typos_and_partial_names() {
    let app = TestApp::spawn().await;
    let owner = app.premium("owner@example.com").await;
    for (name, description, tags) in [
        (
            "Seraphina",
            "A guardian of the forest glade.",
            json!(["forest"]),
        ),
        (
            "Seraphina's Apprentice",
            "Learns healing magic.",
            json!(["magic"]),
        ),
        (
            "Bram",
            "A blacksmith who once met Seraphina.",
            json!(["smith"]),
        ),
        ("Orla", "A sailor.", json!(["sea", "forest"])),
    ] {
        create(
            &app,
            &owner,
            json!({"name": name, "description": description, "tags": tags, "visibility": "public"}),
        )
        .await;
    }
    let found = names(&app, "search=seraphina", None).await;
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0], "Seraphina");
    assert!(
        found.contains(&"Bram".to_owned()),
        "description matches: {found:?}"
    );
    let typo = names(&app, "search=Serafina", None).await;
    assert_eq!(
        typo.first().map(String::as_str),
        Some("Seraphina"),
        "{typo:?}"
    );
    let partial = names(&app, "search=sera", None).await;
    assert!(partial.contains(&"Seraphina".to_owned()), "{partial:?}");
    let tagged = names(&app, "tag=forest&sort=new", None).await;
    assert_eq!(tagged, vec!["Orla", "Seraphina"]);
    assert!(names(&app, "search=%7C%26%21", None).await.is_empty());
    let page = body(app.get("/api/v1/characters?search=seraphina").await).await;
    assert_eq!(page["totalElements"], 3);
}

#[tokio::test]
async fn ratings_are_one_per_user_and_averaged() {
    let app = TestApp::spawn().await;
    let owner = app.premium("owner@example.com").await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let created = create(&app, &owner, json!({"name": "Pip", "visibility": "public"})).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/characters/{id}/rating");
    let rate = |user: &TestUser, stars: Value| {
        let body = json!({ "stars": stars });
        let token = user.token.clone();
        let app = &app;
        let path = path.clone();
        async move { app.send_auth(Method::POST, &path, &token, &body).await }
    };
    assert_eq!(body(rate(&ann, json!(5)).await).await["rating"], 5.0);
    let second = body(rate(&bob, json!(2)).await).await;
    assert_eq!(second["rating"], 3.5);
    assert_eq!(second["ratingCount"], 2);
    let changed = body(rate(&bob, json!(4)).await).await;
    assert_eq!(changed["rating"], 4.5);
    assert_eq!(changed["ratingCount"], 2);
    assert_error(rate(&ann, json!(6)).await, 422, "VALIDATION_ERROR").await;
    assert_error(rate(&ann, json!(2.5)).await, 422, "VALIDATION_ERROR").await;
    assert_eq!(rate(&owner, json!(5)).await.status(), 403);
    let detail = body(app.get(&format!("/api/v1/characters/{id}")).await).await;
    assert_eq!(detail["rating"], 4.5);
    assert_eq!(detail["ratingCount"], 2);
    let mine = body(app.get_auth(&path, &bob.token).await).await;
    assert_eq!(
        mine,
        json!({"rating": 4.5, "ratingCount": 2, "myRating": 4})
    );
    let anonymous = body(app.get(&path).await).await;
    assert_eq!(anonymous["myRating"], Value::Null);
    let best = names(&app, "sort=rating&size=1", None).await;
    assert_eq!(best, vec!["Pip"]);
}

#[tokio::test]
async fn the_directory_gives_chat_a_persona_filtered_by_visibility() {
    let app = TestApp::spawn().await;
    let owner = app.premium("owner@example.com").await;
    let other = app.register("other@example.com").await;
    let created = create(
        &app,
        &owner,
        json!({"name": "Kit", "creatorNotes": "for humans", "systemPrompt": "Be Kit.",
               "lorebook": {"entries": [{"keys": ["den"], "content": "Kit lives in a den.", "constant": true}]}}),
    )
    .await;
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let owner_id: Uuid = owner.id.parse().unwrap();
    let other_id: Uuid = other.id.parse().unwrap();
    let directory = app.catalog.directory();
    let persona = directory.persona(id, owner_id).await.unwrap().unwrap();
    assert_eq!(persona.system_prompt, "Be Kit.");
    assert_eq!(persona.lorebook.len(), 1);
    assert!(persona.lorebook[0].constant);
    assert!(directory.persona(id, other_id).await.unwrap().is_none());

    directory.record_conversation_started(id).await.unwrap();
    directory.record_conversation_started(id).await.unwrap();
    let detail = body(
        app.get_auth(&format!("/api/v1/characters/{id}"), &owner.token)
            .await,
    )
    .await;
    assert_eq!(detail["conversationCount"], 2);
    assert_eq!(directory.owned_by(owner_id).await.unwrap(), vec![id]);
}

/// Changes a character behind the server's back, as another process would.
fn rename_in_database(app: &TestApp, id: &str, name: &str) {
    app.execute(&format!(
        "UPDATE catalog.characters SET name = '{name}' WHERE id = '{id}'"
    ));
}

async fn name_of(app: &TestApp, id: &str) -> String {
    let response = app.get(&format!("/api/v1/characters/{id}")).await;
    assert_eq!(response.status(), 200);
    body(response).await["name"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_public_character_is_read_from_the_cache_and_every_change_invalidates_it() {
    let app = TestApp::spawn().await;
    let owner = app.premium("owner@example.com").await;
    let fan = app.register("fan@example.com").await;
    let created = create(&app, &owner, json!({"name": "Pip", "visibility": "public"})).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/characters/{id}");

    assert_eq!(name_of(&app, id).await, "Pip");
    // The database changes without the server knowing: the cached answer is still served,
    // which shows the read did not go to PostgreSQL.
    rename_in_database(&app, id, "Behind");
    assert_eq!(name_of(&app, id).await, "Pip");

    // An edit through the API invalidates: the next read is fresh.
    let patched = app
        .send_auth(
            Method::PATCH,
            &path,
            &owner.token,
            &json!({"description": "new"}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(name_of(&app, id).await, "Behind");

    // So do a rating and a new conversation.
    let rated = app
        .send_auth(
            Method::POST,
            &format!("{path}/rating"),
            &fan.token,
            &json!({"stars": 4}),
        )
        .await;
    assert_eq!(rated.status(), 200);
    assert_eq!(body(app.get(&path).await).await["ratingCount"], 1);
    let uuid: Uuid = id.parse().unwrap();
    app.catalog
        .directory()
        .record_conversation_started(uuid)
        .await
        .unwrap();
    assert_eq!(body(app.get(&path).await).await["conversationCount"], 1);

    // Hiding takes effect on the very next read.
    let moderator = app.register("mod@example.com").await;
    let moderator = app.set_user(&moderator, Some("moderator"), None).await;
    let hidden = app
        .send_auth(
            Method::POST,
            &format!("{path}/hide"),
            &moderator.token,
            &json!({}),
        )
        .await;
    assert_eq!(hidden.status(), 200);
    assert_eq!(app.get(&path).await.status(), 404);

    // A private character is never cached: its owner sees changes at once.
    let private = create(&app, &owner, json!({"name": "Secret"})).await;
    let private_id = private["id"].as_str().unwrap();
    let private_path = format!("/api/v1/characters/{private_id}");
    assert_eq!(
        app.get_auth(&private_path, &owner.token).await.status(),
        200
    );
    rename_in_database(&app, private_id, "Changed");
    let seen = body(app.get_auth(&private_path, &owner.token).await).await;
    assert_eq!(seen["name"], "Changed");
    assert_eq!(app.get(&private_path).await.status(), 404);
}

#[tokio::test]
async fn with_redis_instances_share_the_cache_and_its_invalidations() {
    let db = support::TestDb::fresh().await;
    let url = db.url.clone();
    let redis = support::redis_url();
    let vars = [("REDIS_URL", redis.as_str())];
    let builder = || companion::Application::builder(support::test_settings(&url, &vars));
    let a = TestApp::start(builder(), Some(db)).await;
    let b = TestApp::start(builder(), None).await;
    let owner = a.premium("owner@example.com").await;
    let created = create(&a, &owner, json!({"name": "Pip", "visibility": "unlisted"})).await;
    let id = created["id"].as_str().unwrap();

    assert_eq!(name_of(&a, id).await, "Pip");
    rename_in_database(&a, id, "Behind");
    // B never read it, yet answers from the entry A shared in Redis.
    assert_eq!(name_of(&b, id).await, "Pip");

    let patched = a
        .send_auth(
            Method::PATCH,
            &format!("/api/v1/characters/{id}"),
            &owner.token,
            &json!({"description": "new"}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(name_of(&a, id).await, "Behind");
    // B kept its own copy for at most a second.
    support::eventually(std::time::Duration::from_secs(3), || async {
        (name_of(&b, id).await == "Behind").then_some(())
    })
    .await;
    // B first: A owns the database.
    drop(b);
    drop(a);
}
