//! Property tests over the entry points that read what clients send: character cards, history
//! cursors, WebSocket frames and multipart uploads (prompt assembly has its own, beside it in
//! `chat/prompt.rs`). Inputs come from proptest strategies. The card parser is pure, so
//! proptest drives it and shrinks a failure; the others run against a live server, with
//! generated inputs sent one after another. Nothing may panic or answer 5xx, and what is
//! refused leaves nothing behind. `PROPTEST_CASES` raises the number of cases (`scripts/fuzz`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use companion::modules::catalog::check_card;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use support::chat::{LUNA, start};
use support::ws::{connect, next, send};
use support::{TestApp, images};

/// As many values of `strategy` as proptest runs cases (256, or `PROPTEST_CASES`).
fn samples<S: Strategy>(strategy: S) -> Vec<S::Value> {
    let config = Config::default();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    (0..cases)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Any JSON, with object keys drawn from `keys` (and a few others) so that values land
/// where a reader looks for them.
fn json_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CARD_KEYS: &[&str] = &[
    "spec",
    "spec_version",
    "data",
    "name",
    "description",
    "personality",
    "first_mes",
    "mes_example",
    "scenario",
    "alternate_greetings",
    "tags",
    "creator",
    "character_version",
    "system_prompt",
    "post_history_instructions",
    "extensions",
    "character_book",
    "entries",
    "keys",
    "secondary_keys",
    "content",
    "enabled",
    "constant",
    "selective",
    "insertion_order",
    "position",
    "assets",
];

/// Something shaped like a card: a V2/V3 wrapper around generated data, or a V1 object.
fn card() -> impl Strategy<Value = Value> {
    let spec = prop_oneof![
        Just(json!("chara_card_v2")),
        Just(json!("chara_card_v3")),
        json_with_keys(CARD_KEYS),
    ];
    prop_oneof![
        (spec, json_with_keys(CARD_KEYS), "\\PC{0,20}").prop_map(|(spec, mut data, name)| {
            if let Value::Object(fields) = &mut data {
                fields.entry("name").or_insert(json!(name));
            }
            json!({ "spec": spec, "spec_version": "3.0", "data": data })
        }),
        json_with_keys(CARD_KEYS),
    ]
}

proptest! {
    /// Any bytes: a card or an error, never a panic.
    #[test]
    fn card_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = check_card(&bytes);
    }

    /// Anything shaped like a card: a card or an error; a card we accept, written back into a
    /// PNG by our exporter, reads again with the same name.
    #[test]
    fn generated_cards_read_back_the_same(card in card()) {
        let bytes = serde_json::to_vec(&card).unwrap();
        if let Ok(checked) = check_card(&bytes) {
            prop_assert!(!checked.name.trim().is_empty());
            let again = check_card(&checked.rewritten);
            prop_assert!(again.is_ok(), "{:?}", again.err());
            prop_assert_eq!(again.unwrap().name, checked.name);
        }
    }
}

/// Anything a client might put in `?before=`, and the page size beside it.
fn cursor() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,60}",
        "[0-9a-fA-F-]{30,40}",
        Just(uuid::Uuid::nil().to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).simple().to_string()),
    ]
}

#[tokio::test]
async fn any_history_cursor_gets_a_page_or_a_clear_refusal() {
    let app = TestApp::spawn().await;
    let user = app.register("cursor@example.com").await;
    let (conversation, _) = start(&app, &user, LUNA, Some("Hello")).await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    for (before, limit) in samples((cursor(), any::<i64>())) {
        let url = reqwest::Url::parse_with_params(
            &app.url(&path),
            &[("before", before.as_str()), ("limit", &limit.to_string())],
        )
        .unwrap();
        let response = app
            .client
            .get(url)
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        let what = format!("before={before:?} limit={limit}: {status} {body}");
        match status {
            200 => assert!(body["messages"].as_array().unwrap().len() <= 200, "{what}"),
            // 404: a well-formed cursor that names no message of this conversation.
            400 | 404 | 422 => assert!(body["error"]["code"].is_string(), "{what}"),
            _ => panic!("{what}"),
        }
    }
}

const FRAME_KEYS: &[&str] = &[
    "type",
    "conversationId",
    "messageId",
    "content",
    "afterSeq",
    "ref",
    "token",
];

/// A frame: generated JSON, usually an object with a known `type`.
fn frame() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(&["message", "stop", "resume", "ping", "auth", "dance"][..]);
    prop_oneof![
        3 => (kind, json_with_keys(FRAME_KEYS)).prop_map(|(kind, body)| {
            let mut frame = match body {
                Value::Object(fields) => Value::Object(fields),
                other => json!({ "content": other }),
            };
            frame["type"] = json!(kind);
            // A real conversation would start a reply; these ids name nothing.
            if frame.get("conversationId").is_some_and(Value::is_string) {
                frame["conversationId"] = json!(uuid::Uuid::now_v7());
            }
            frame
        }),
        1 => json_with_keys(FRAME_KEYS),
    ]
}

#[tokio::test]
async fn any_frame_gets_one_answer_and_the_connection_stays_open() {
    let app = TestApp::spawn_with_vars(&[("COMPANION__WEBSOCKET__FRAMES_PER_SECOND", "0")]).await;
    let user = app.register("frames@example.com").await;
    let mut socket = connect(&app, &user).await;
    for frame in samples(frame()) {
        send(&mut socket, frame.clone()).await;
        let answer = next(&mut socket).await;
        let kind = answer["type"].as_str().unwrap_or_default();
        assert!(
            kind == "pong" || (kind == "error" && answer["code"].is_string()),
            "{frame} → {answer}"
        );
        assert_ne!(answer["code"], "INTERNAL_ERROR", "{frame} → {answer}");
    }
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut socket).await["type"], "pong");
    let stored = app.query_one("SELECT count(*) FROM chat.messages").unwrap();
    assert_eq!(stored, "0", "no frame stored a message");
}

/// A multipart body: generated parts around a real image, sometimes cut short.
fn multipart() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        Just("file".to_owned()),
        Just("type".to_owned()),
        Just("characterId".to_owned()),
        "\\PC{0,12}",
    ];
    let value = prop_oneof![
        Just(b"image".to_vec()),
        Just(b"video".to_vec()),
        Just(images::png(16, 0)),
        prop::collection::vec(any::<u8>(), 0..300),
    ];
    let header = prop_oneof![
        Just(String::new()),
        Just("Content-Type: image/png\r\n".to_owned()),
        "[ -~]{0,30}".prop_map(|h| format!("{h}\r\n")),
    ];
    let part = (name, any::<bool>(), header, value);
    (
        "[a-zA-Z0-9'()+_,./:=?-]{1,40}",
        prop::collection::vec(part, 0..4),
        any::<bool>(),
        any::<u16>(),
    )
        .prop_map(|(boundary, parts, truncate, cut)| {
            let mut body = Vec::new();
            for (name, with_file, header, value) in parts {
                let file = if with_file { "; filename=\"f.png\"" } else { "" };
                body.extend_from_slice(
                    format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n{header}\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(&value);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            if truncate && !body.is_empty() {
                body.truncate(usize::from(cut) % body.len());
            }
            (boundary, body)
        })
}

#[tokio::test]
async fn any_multipart_body_is_stored_whole_or_refused_leaving_nothing() {
    let app = TestApp::spawn().await;
    let user = app.register("forms@example.com").await;
    let mut stored = 0;
    for (boundary, body) in samples(multipart()) {
        let response = app
            .client
            .post(app.url("/api/v1/media/upload"))
            .bearer_auth(&user.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        let what = format!("{status} {answer} for {:?}", String::from_utf8_lossy(&body));
        match status {
            201 => stored += 1,
            400 | 413 | 415 | 422 => assert!(answer["error"]["code"].is_string(), "{what}"),
            _ => panic!("{what}"),
        }
    }
    // Every object in the store belongs to a stored upload (an image and its thumbnail).
    let rows: i64 = app
        .query_one("SELECT count(*) FROM media.objects")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rows, stored);
    let ids: Vec<String> = app.query_column("SELECT id::text FROM media.objects");
    for key in app.object_keys().await {
        assert!(
            ids.iter().any(|id| key.contains(id.as_str())),
            "{key} belongs to no stored upload"
        );
    }
}
