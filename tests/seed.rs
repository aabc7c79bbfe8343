#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `companion admin seed-demo`: the demo data the load test runs on is data the API serves
//! like any other (demo users log in, their conversations and histories read back whole,
//! the characters are listed), and seeding twice adds nothing.

mod support;

use serde_json::Value;
use support::process::companion;
use support::{TestApp, TestDb, test_settings};

async fn seed(db_url: &str) -> String {
    let out = companion()
        .env("COMPANION_ENV", "test")
        .env("DATABASE_URL", db_url)
        .args(["admin", "seed-demo", "--users", "30", "--characters", "7"])
        .args(["--messages", "1200", "--conversations", "2"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn demo_data_is_served_like_any_other_and_seeding_twice_adds_nothing() {
    let db = TestDb::empty().await;
    let url = db.url.clone();
    let said = seed(&url).await;
    assert!(said.contains("1200 new messages"), "{said}");
    assert!(said.contains("2 conversations of 20 per user"), "{said}");
    let app = TestApp::start(
        companion::Application::builder(test_settings(&url, &[])),
        Some(db),
    )
    .await;

    let login = app
        .login(
            "demo17@example.com",
            companion::modules::identity::DEMO_PASSWORD,
        )
        .await;
    assert_eq!(login.status(), 200);
    let token = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list: Value = app
        .get_auth("/api/v1/conversations", &token)
        .await
        .json()
        .await
        .unwrap();
    let conversations = list["content"].as_array().unwrap();
    assert_eq!(conversations.len(), 2);
    for conversation in conversations {
        assert_eq!(conversation["messageCount"], 20);
        assert!(
            conversation["character"]["name"]
                .as_str()
                .unwrap()
                .starts_with("Demo character")
        );
        let id = conversation["id"].as_str().unwrap();
        let page: Value = app
            .get_auth(
                &format!("/api/v1/conversations/{id}/messages?limit=200"),
                &token,
            )
            .await
            .json()
            .await
            .unwrap();
        let messages = page["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 20, "the whole branch: {page}");
        // Oldest first: the character's greeting, then turns that alternate.
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles.first(),
            Some(&"assistant"),
            "the greeting comes first"
        );
        assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
    }
    // Sending to a demo conversation works like any other (the built-in engine answers).
    let id = conversations[0]["id"].as_str().unwrap();
    let sent = app
        .send_auth(
            reqwest::Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
            &token,
            &serde_json::json!({"content": "Hello again"}),
        )
        .await;
    assert_eq!(sent.status(), 201);

    let characters: Value = app
        .get_auth("/api/v1/characters?size=100", &token)
        .await
        .json()
        .await
        .unwrap();
    let demo = characters["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("Demo character"))
        .count();
    assert_eq!(demo, 7);

    let again = seed(&url).await;
    assert!(again.contains("\n0 new messages"), "{again}");
    assert_eq!(
        app.query_one("SELECT count(*) FROM chat.messages")
            .as_deref(),
        Some("1202"),
        "seeding again added nothing (the two new ones are the message sent and its reply)"
    );
}
