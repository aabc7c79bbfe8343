//! Hostile text: characters PostgreSQL cannot store, SQL and LIKE metacharacters in searches,
//! bodies that are not what they claim. Each is refused with the envelope or taken literally;
//! none reaches the database as a query or answers 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{TestApp, assert_error};

/// A NUL (U+0000), which PostgreSQL's text cannot hold: found by the contract fuzzer, it used
/// to reach a query and answer 500.
#[tokio::test]
async fn text_with_a_nul_is_refused_by_name() {
    let app = TestApp::spawn().await;
    let login = app
        .post_json(
            "/api/v1/auth/login",
            &json!({ "email": "a\u{0}@example.com", "password": "x" }),
        )
        .await;
    let body = assert_error(login, 422, "VALIDATION_ERROR").await;
    assert_eq!(
        body["details"]["fields"]["email"],
        "must not contain NUL characters"
    );

    let user = app.premium("nul@example.com").await;
    let created = app
        .send_auth(
            Method::POST,
            "/api/v1/characters",
            &user.token,
            &json!({ "name": "Nul\u{0}l" }),
        )
        .await;
    let body = assert_error(created, 422, "VALIDATION_ERROR").await;
    assert!(body["details"]["fields"]["name"].is_string(), "{body}");

    // In a query string too.
    let listed = app
        .get_auth("/api/v1/characters?search=a%00b", &user.token)
        .await;
    assert_error(listed, 400, "BAD_REQUEST").await;
}

/// Cards come from other tools as they are: NULs are dropped from them, not refused.
#[tokio::test]
async fn an_imported_card_loses_its_nul_characters() {
    let app = TestApp::spawn().await;
    let user = app.premium("card-nul@example.com").await;
    let card = json!({
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Ze\u{0}ro",
            "description": "d\u{0}",
            "first_mes": "Hello",
            "extensions": { "k\u{0}": "v\u{0}" }
        }
    });
    let response = app
        .post_bytes(
            "/api/v1/characters/import",
            &user.token,
            "application/json",
            serde_json::to_vec(&card).unwrap(),
        )
        .await;
    assert_eq!(response.status(), 201);
    let character: Value = response.json().await.unwrap();
    assert_eq!(character["name"], "Zero");
    assert_eq!(character["description"], "d");
    assert_eq!(character["extensions"]["k"], "v");
}

/// Search text is data: quotes, comments and LIKE wildcards match themselves.
#[tokio::test]
async fn search_metacharacters_match_literally() {
    let app = TestApp::spawn().await;
    let user = app.premium("search@example.com").await;
    for name in ["100% Real", "under_score", "Quote's"] {
        let created = app
            .send_auth(
                Method::POST,
                "/api/v1/characters",
                &user.token,
                &json!({ "name": name }),
            )
            .await;
        assert_eq!(created.status(), 201, "{name}");
    }
    let search = |text: &str| {
        let url = format!(
            "/api/v1/characters?size=100&search={}",
            url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
        );
        let (app, token) = (&app, user.token.clone());
        async move {
            let response = app.get_auth(&url, &token).await;
            assert_eq!(response.status(), 200, "{url}");
            let page: Value = response.json().await.unwrap();
            let mut names: Vec<String> = page["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    // Full-text words: the punctuation is not syntax, and no wildcard lists everything.
    assert_eq!(search("Real").await, vec!["100% Real"]);
    for hostile in [
        "%",
        "_",
        "'",
        "\\",
        "' OR '1'='1",
        "x'; DROP TABLE catalog.characters; --",
    ] {
        assert!(
            search(hostile).await.len() < 3,
            "{hostile} matched everything"
        );
    }
    // The table is still there.
    assert_eq!(search("Quote").await, vec!["Quote's"]);
}

/// A body that is not JSON is refused, not read as "no body".
#[tokio::test]
async fn a_hide_body_that_is_not_json_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.premium("mod@example.com").await;
    let user = app.set_user(&user, Some("moderator"), None).await;
    let created: Value = app
        .send_auth(
            Method::POST,
            "/api/v1/characters",
            &user.token,
            &json!({ "name": "Hidden" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let refused = app
        .client
        .post(app.url(&format!("/api/v1/characters/{id}/hide")))
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body("\u{0}")
        .send()
        .await
        .unwrap();
    assert_error(refused, 400, "BAD_REQUEST").await;
    let detail: Value = app
        .get_auth(&format!("/api/v1/characters/{id}"), &user.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["hidden"], false, "nothing changed");
}
