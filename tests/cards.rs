//! Character cards through the public API: import (JSON, PNG, CHARX), export (V3 JSON, PNG
//! with `ccv3` and `chara`), lossless round trips of the community's own cards, and the
//! answers to broken or hostile files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};
use support::{TestApp, TestUser, assert_error};

const IMPORT: &str = "/api/v1/characters/import";
const FIXTURES: [&str; 2] = ["sillytavern_seraphina_v2.png", "risuai_rika_v1.png"];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/cards/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn import(app: &TestApp, user: &TestUser, bytes: Vec<u8>) -> reqwest::Response {
    app.post_bytes(IMPORT, &user.token, "application/octet-stream", bytes)
        .await
}

async fn imported(app: &TestApp, user: &TestUser, bytes: Vec<u8>) -> Value {
    let response = import(app, user, bytes).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn download(app: &TestApp, user: &TestUser, path: &str) -> Vec<u8> {
    let response = app.get_auth(path, &user.token).await;
    assert_eq!(response.status(), 200, "{path}");
    response.bytes().await.unwrap().to_vec()
}

/// What makes two characters the same character: everything but identity and timestamps.
/// The avatar is compared by its bytes, not by its URL (each import gets its own).
fn essence(character: &Value) -> Value {
    let mut character = character.clone();
    for key in ["id", "avatarUrl", "avatarMediaId", "createdAt", "updatedAt"] {
        character.as_object_mut().unwrap().remove(key);
    }
    character
}

/// A V3 card without the dates we write at export.
fn undated(card: &Value) -> Value {
    let mut card = card.clone();
    let data = card["data"].as_object_mut().unwrap();
    data.remove("creation_date");
    data.remove("modification_date");
    card
}

/// The `tEXt` chunks of a PNG, in order, as (keyword, text).
fn text_chunks(png: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let length = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + length];
        if kind == b"tEXt" {
            let split = data.iter().position(|&b| b == 0).unwrap();
            found.push((
                String::from_utf8_lossy(&data[..split]).into_owned(),
                data[split + 1..].to_vec(),
            ));
        }
        at += 12 + length;
    }
    found
}

/// A PNG built from `source` with its text chunks replaced by `texts`, just before IEND.
fn with_texts(source: &[u8], texts: &[(&str, &Value)]) -> Vec<u8> {
    let mut out = source[..8].to_vec();
    let mut at = 8;
    while at + 8 <= source.len() {
        let length = u32::from_be_bytes(source[at..at + 4].try_into().unwrap()) as usize;
        let kind = &source[at + 4..at + 8];
        if kind == b"IEND" {
            for (keyword, card) in texts {
                let mut data = keyword.as_bytes().to_vec();
                data.push(0);
                data.extend(STANDARD.encode(card.to_string()).into_bytes());
                out.extend((data.len() as u32).to_be_bytes());
                let mut crc = crc32fast::Hasher::new();
                crc.update(b"tEXt");
                crc.update(&data);
                out.extend(b"tEXt");
                out.extend(&data);
                out.extend(crc.finalize().to_be_bytes());
            }
        }
        if kind != b"tEXt" {
            out.extend(&source[at..at + 12 + length]);
        }
        at += 12 + length;
    }
    out
}

#[tokio::test]
async fn every_fixture_card_imports_exports_and_imports_again_as_the_same_character() {
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;
    for name in FIXTURES {
        let original = fixture(name);
        let first = imported(&app, &ann, original.clone()).await;
        let id = first["id"].as_str().unwrap();
        let base = format!("/api/v1/characters/{id}");
        // The card's picture is now the owner's media, and the avatar.
        let media = first["avatarMediaId"].as_str().unwrap();
        assert_eq!(
            first["avatarUrl"],
            format!("/api/v1/media/{media}"),
            "{name}"
        );
        let avatar = download(&app, &ann, first["avatarUrl"].as_str().unwrap()).await;
        assert!(
            avatar.starts_with(b"\x89PNG"),
            "{name}: the PNG is the avatar"
        );
        // Stored without the card's text chunks (metadata, as any upload).
        assert!(
            text_chunks(&avatar).is_empty(),
            "{name}: the avatar keeps no text"
        );

        let card_json = download(&app, &ann, &format!("{base}/card.json")).await;
        let card: Value = serde_json::from_slice(&card_json).unwrap();
        assert_eq!(card["spec"], "chara_card_v3", "{name}");
        assert_eq!(card["spec_version"], "3.0");
        let from_json = imported(&app, &ann, card_json).await;
        assert_eq!(
            essence(&from_json),
            essence(&first),
            "{name} through card.json"
        );

        let card_png = download(&app, &ann, &format!("{base}/card.png")).await;
        let chunks = text_chunks(&card_png);
        let keywords: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keywords.contains(&"ccv3") && keywords.contains(&"chara"),
            "{keywords:?}"
        );
        let (_, v2) = chunks.iter().find(|(k, _)| k == "chara").unwrap();
        let v2: Value = serde_json::from_slice(&STANDARD.decode(v2).unwrap()).unwrap();
        assert_eq!(v2["spec"], "chara_card_v2");
        assert_eq!(v2["data"]["name"], first["name"]);
        let from_png = imported(&app, &ann, card_png).await;
        assert_eq!(
            essence(&from_png),
            essence(&first),
            "{name} through card.png"
        );
        let again = from_png["avatarUrl"].as_str().unwrap();
        assert_eq!(
            download(&app, &ann, again).await,
            avatar,
            "{name}: same image"
        );

        // The second export of the re-imported card is the first export, dates aside.
        let second_id = from_png["id"].as_str().unwrap();
        let second: Value = serde_json::from_slice(
            &download(
                &app,
                &ann,
                &format!("/api/v1/characters/{second_id}/card.json"),
            )
            .await,
        )
        .unwrap();
        assert_eq!(undated(&second), undated(&card), "{name}");
    }
}

#[tokio::test]
async fn what_we_do_not_model_survives_the_round_trip() {
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;

    let seraphina = imported(&app, &ann, fixture("sillytavern_seraphina_v2.png")).await;
    assert_eq!(seraphina["name"], "Seraphina");
    assert_eq!(seraphina["extensions"]["world"], "Eldoria");
    assert_eq!(seraphina["lorebook"]["name"], "Eldoria");
    assert!(
        !seraphina["lorebook"]["entries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(seraphina["visibility"], "private");
    let id = seraphina["id"].as_str().unwrap();
    let card: Value = serde_json::from_slice(
        &download(&app, &ann, &format!("/api/v1/characters/{id}/card.json")).await,
    )
    .unwrap();
    // SillyTavern's own top-level keys and the lorebook's entry extensions come back.
    assert_eq!(
        card["creatorcomment"],
        "ST Default Bot contest winner: roleplay bots category"
    );
    assert_eq!(card["talkativeness"], "0.5");
    let entry = &card["data"]["character_book"]["entries"][0];
    assert_eq!(entry["extensions"]["useProbability"], false);
    assert_eq!(card["data"]["extensions"]["world"], "Eldoria");
    assert_eq!(
        card["data"]["extensions"]["companion/character"]["visibility"],
        "private"
    );

    let rika = imported(&app, &ann, fixture("risuai_rika_v1.png")).await;
    let id = rika["id"].as_str().unwrap();
    let png = download(&app, &ann, &format!("/api/v1/characters/{id}/card.png")).await;
    let chunks = text_chunks(&png);
    let (_, risuai) = chunks.iter().find(|(k, _)| k == "risuai").unwrap();
    let (_, original) = text_chunks(&fixture("risuai_rika_v1.png"))
        .into_iter()
        .find(|(k, _)| k == "risuai")
        .unwrap();
    assert_eq!(
        risuai, &original,
        "RisuAI's chunk passes through byte for byte"
    );
}

#[tokio::test]
async fn our_own_fields_travel_in_a_namespaced_extension() {
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;
    let created = app
        .send_auth(
            Method::POST,
            "/api/v1/characters",
            &ann.token,
            &json!({"name": "Nova", "category": "sci-fi", "visibility": "unlisted", "nsfw": true,
                    "traits": ["curious"], "personality": {"greeting": "Hello.", "tone": "dry",
                    "interests": ["stars"]}, "extensions": {"other/tool": {"x": 1}}}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let card: Value = serde_json::from_slice(
        &download(&app, &ann, &format!("/api/v1/characters/{id}/card.json")).await,
    )
    .unwrap();
    assert_eq!(card["data"]["first_mes"], "Hello.");
    assert_eq!(
        card["data"]["extensions"]["companion/character"],
        json!({"category": "sci-fi", "traits": ["curious"], "tone": "dry",
               "interests": ["stars"], "visibility": "unlisted", "nsfw": true})
    );
    let again = imported(&app, &ann, serde_json::to_vec(&card).unwrap()).await;
    assert_eq!(essence(&again), essence(&created));
    assert_eq!(again["extensions"], json!({"other/tool": {"x": 1}}));

    // The importer may choose the visibility instead of the card's.
    let path = format!("{IMPORT}?visibility=private");
    let response = app
        .post_bytes(
            &path,
            &ann.token,
            "application/json",
            serde_json::to_vec(&card).unwrap(),
        )
        .await;
    assert_eq!(response.status(), 201);
    let private: Value = response.json().await.unwrap();
    assert_eq!(private["visibility"], "private");
}

#[tokio::test]
async fn a_png_with_both_chunks_is_read_from_ccv3() {
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;
    let v3 = json!({"spec": "chara_card_v3", "spec_version": "3.0",
        "data": {"name": "From ccv3", "first_mes": "three"}});
    let v2 = json!({"spec": "chara_card_v2", "spec_version": "2.0",
        "data": {"name": "From chara", "first_mes": "two"}});
    let image = fixture("sillytavern_seraphina_v2.png");
    for order in [
        [("chara", &v2), ("ccv3", &v3)],
        [("ccv3", &v3), ("chara", &v2)],
    ] {
        let character = imported(&app, &ann, with_texts(&image, &order)).await;
        assert_eq!(character["name"], "From ccv3");
        assert_eq!(character["personality"]["greeting"], "three");
    }
    // Keywords are matched whatever their case.
    let upper = imported(&app, &ann, with_texts(&image, &[("CHARA", &v2)])).await;
    assert_eq!(upper["name"], "From chara");
}

fn charx(card: &Value, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("card.json", options).unwrap();
    zip.write_all(card.to_string().as_bytes()).unwrap();
    for (name, bytes) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

#[tokio::test]
async fn a_charx_imports_with_its_icon_as_the_avatar() {
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;
    let icon = fixture("sillytavern_seraphina_v2.png");
    let card = json!({"spec": "chara_card_v3", "spec_version": "3.0", "data": {
        "name": "Packed", "first_mes": "Unzipped!",
        "assets": [{"type": "icon", "uri": "embeded://assets/icon/images/main.png",
                    "name": "main", "ext": "png"}]}});
    let character = imported(
        &app,
        &ann,
        charx(&card, &[("assets/icon/images/main.png", &icon)]),
    )
    .await;
    assert_eq!(character["name"], "Packed");
    let avatar = download(&app, &ann, character["avatarUrl"].as_str().unwrap()).await;
    // The same picture, without the text the icon carried (media strips metadata).
    assert!(text_chunks(&avatar).is_empty());
    let (ours, theirs) = (
        image::load_from_memory(&avatar).unwrap(),
        image::load_from_memory(&icon).unwrap(),
    );
    assert!(ours.as_bytes() == theirs.as_bytes(), "the pixels differ");
}

#[tokio::test]
async fn broken_and_hostile_files_are_refused_with_clear_errors() {
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;
    let image = fixture("sillytavern_seraphina_v2.png");
    let no_card = with_texts(&image, &[]);
    let truncated = image[..image.len() / 2].to_vec();
    let not_base64 = {
        let mut png = with_texts(&image, &[]);
        let at = png.len() - 12;
        let data = b"chara\0!!!not base64!!!";
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend(b"tEXt");
        chunk.extend(data);
        chunk.extend([0, 0, 0, 0]);
        png.splice(at..at, chunk);
        png
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("text", b"hello".to_vec(), "JSON"),
        ("array", b"[]".to_vec(), "object"),
        (
            "lorebook",
            br#"{"spec":"lorebook_v3","data":{"entries":[]}}"#.to_vec(),
            "lorebook",
        ),
        (
            "wrong type",
            br#"{"spec":"chara_card_v2","data":{"name":"A","first_mes":3}}"#.to_vec(),
            "first_mes",
        ),
        ("png without card", no_card, "no character card"),
        ("truncated png", truncated, "truncated"),
        ("bad base64", not_base64, "base64"),
        ("broken zip", b"PK\x03\x04garbage".to_vec(), "zip"),
        (
            "too long name",
            serde_json::to_vec(&json!({"name": "n".repeat(101)})).unwrap(),
            "name",
        ),
    ];
    for (what, bytes, says) in cases {
        let error = assert_error(import(&app, &ann, bytes).await, 422, "VALIDATION_ERROR").await;
        let text = error.to_string();
        assert!(text.contains(says), "{what}: {text}");
    }
    assert_error(
        import(&app, &ann, Vec::new()).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;

    // A decompression bomb: an image that claims 100,000 × 100,000 pixels.
    let mut bomb = with_texts(&image, &[("chara", &json!({"name": "Bomb"}))]);
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    assert_error(import(&app, &ann, bomb).await, 413, "PAYLOAD_TOO_LARGE").await;
    // A zip whose card inflates past the limit.
    let zip_bomb = {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        zip.start_file("card.json", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(&vec![b' '; 5 * 1024 * 1024]).unwrap();
        zip.finish().unwrap();
        out.into_inner()
    };
    assert_error(import(&app, &ann, zip_bomb).await, 413, "PAYLOAD_TOO_LARGE").await;
    // A file past the upload limit is refused without being read to its end.
    let huge = vec![b' '; 11 * 1024 * 1024];
    assert_error(import(&app, &ann, huge).await, 413, "PAYLOAD_TOO_LARGE").await;

    let invalid_visibility = app
        .post_bytes(
            &format!("{IMPORT}?visibility=everyone"),
            &ann.token,
            "application/json",
            br#"{"name":"A"}"#.to_vec(),
        )
        .await;
    assert_error(invalid_visibility, 422, "VALIDATION_ERROR").await;
    let form = app
        .post_bytes(
            IMPORT,
            &ann.token,
            "multipart/form-data; boundary=x",
            b"--x--".to_vec(),
        )
        .await;
    let error = assert_error(form, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    assert!(error["message"].as_str().unwrap().contains("not a form"));
    // Nothing was created by any of this.
    let own = app
        .query_one(&format!(
            "SELECT count(*) FROM catalog.characters WHERE owner_id = '{}'",
            ann.id
        ))
        .unwrap();
    assert_eq!(own, "0");
}

#[tokio::test]
async fn importing_is_premium_and_exports_follow_visibility() {
    let app = TestApp::spawn().await;
    let free = app.register("free@example.com").await;
    let error = assert_error(
        import(&app, &free, br#"{"name":"A"}"#.to_vec()).await,
        403,
        "PREMIUM_REQUIRED",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("premium"));
    let anonymous = app
        .post_raw(IMPORT, "application/json", r#"{"name":"A"}"#)
        .await;
    assert_error(anonymous, 401, "UNAUTHORIZED").await;

    let ann = app.premium("ann@example.com").await;
    let private = imported(&app, &ann, fixture("sillytavern_seraphina_v2.png")).await;
    let id = private["id"].as_str().unwrap();
    for suffix in ["card.json", "card.png"] {
        let path = format!("/api/v1/characters/{id}/{suffix}");
        assert_eq!(
            app.get_auth(&path, &free.token).await.status(),
            404,
            "{suffix}"
        );
        assert_eq!(app.get(&path).await.status(), 404, "{suffix}");
    }
    // Starter characters are public: anyone may download their cards.
    let starter = "/api/v1/characters/01930000-0000-7000-8000-000000000001/card.png";
    let response = app.get(starter).await;
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let png = response.bytes().await.unwrap();
    let chunks = text_chunks(&png);
    assert!(chunks.iter().any(|(k, _)| k == "ccv3"));

    // A private character's avatar is owner-only media; deleting the character leaves the
    // picture with its owner (it is their media), no longer anyone's avatar.
    let avatar = private["avatarUrl"].as_str().unwrap();
    assert_eq!(app.get_auth(avatar, &free.token).await.status(), 404);
    let deleted = app
        .send_auth(
            Method::DELETE,
            &format!("/api/v1/characters/{id}"),
            &ann.token,
            &json!({}),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get_auth(avatar, &ann.token).await.status(), 200);
}
