//! Hostile text: characters PostgreSQL cannot store, SQL and LIKE metacharacters in searches,
//! bodies that are not what they claim, paths that climb out of their route or directory,
//! file names made to break headers. Each is refused with the envelope or taken literally;
//! none reaches the database as a query, a file outside its place, or answers 500.
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

/// Path parameters that try to climb out of their route, on every route that has one, and
/// paths that try to climb out of the browser client's directory.
#[tokio::test]
async fn path_traversal_reaches_nothing() {
    let app = TestApp::spawn().await;
    let user = app.premium("climber@example.com").await;
    let climbs = [
        "..",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fCargo.toml",
        "..%5C..%5Cwindows",
        "%00",
        "....%2F%2F",
    ];
    let mut tried = 0;
    for route in app.routes.iter().filter(|r| r.path.contains('{')) {
        let method = support::method_of(route);
        for climb in climbs {
            let path = support::fill_path(&route.path, |_| climb.to_owned());
            let response = app
                .send_auth(method.clone(), &path, &user.token, &json!({}))
                .await;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert!(
                matches!(status, 400 | 404),
                "{method} {path}: {status} {body}"
            );
            assert!(!body.contains("root:") && !body.contains("[package]"));
            tried += 1;
        }
    }
    assert!(tried > 100, "{tried}");

    for path in [
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/assets/x/..%2F..%2FCargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2FCargo.toml",
        "/assets/x/%2e%2e%2f%2e%2e%2fsrc%2fmain.rs",
        "/static/../Cargo.toml",
        "/docs/../../Cargo.toml",
        "/docs/%2e%2e%2f%2e%2e%2fCargo.toml",
    ] {
        let response = app.get(path).await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("[package]") && !body.contains("fn main"),
            "{path} served a file from outside: {status}"
        );
        assert!(matches!(status, 400 | 404), "{path}: {status}");
    }
}

/// A client's file name never reaches a header or the store: files are named by their id.
#[tokio::test]
async fn hostile_file_names_reach_no_header() {
    let app = TestApp::spawn().await;
    let user = app.register("names@example.com").await;
    let upload = |name: &'static str| {
        let form = reqwest::multipart::Form::new().text("type", "image").part(
            "file",
            reqwest::multipart::Part::bytes(support::images::png(32, 0))
                .file_name(name)
                .mime_str("image/png")
                .unwrap(),
        );
        app.upload(&user, form)
    };
    // Line breaks in a part's headers make the form unreadable: a clear 400.
    let broken = upload("x.png\r\nX-Injected: yes\r\n").await;
    let error = assert_error(broken, 400, "BAD_REQUEST").await;
    assert!(!error.to_string().contains("X-Injected"), "{error}");
    // A name that climbs and quotes is accepted and ignored.
    let response = upload("../../..\\x\"; filename*=UTF-8''evil.html").await;
    assert_eq!(response.status(), 201);
    let media: Value = response.json().await.unwrap();
    let id = media["id"].as_str().unwrap();
    let download = app
        .get_auth(&format!("/api/v1/media/{id}"), &user.token)
        .await;
    assert_eq!(download.status(), 200);
    assert!(!download.headers().contains_key("x-injected"));
    assert_eq!(
        download.headers()["content-disposition"],
        format!("inline; filename=\"{id}.png\"").as_str()
    );
    let keys = app.object_keys().await;
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|key| key.contains(id) && !key.contains("..")),
        "{keys:?}"
    );
}
