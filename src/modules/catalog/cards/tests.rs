use std::io::Write;

use serde_json::json;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/cards/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).unwrap()
}

fn json_card(card: &Value) -> Result<Imported, CardError> {
    import(&serde_json::to_vec(card).unwrap())
}

fn malformed(result: Result<Imported, CardError>) -> String {
    match result {
        Err(CardError::Malformed(message)) => message,
        Err(other) => panic!("expected a malformed card, got {other:?}"),
        Ok(_) => panic!("expected a malformed card, got a card"),
    }
}

#[test]
fn a_v1_card_keeps_its_tool_keys_at_the_top() {
    let card = json_card(&json!({
        "name": "Rika", "description": "A student.", "personality": "bright",
        "first_mes": "Hi!", "mes_example": "<START>", "scenario": "",
        "talkativeness": "0.5", "create_date": "1683279596143"
    }))
    .unwrap();
    assert_eq!(card.spec, "v1");
    assert_eq!(card.draft.name, "Rika");
    assert_eq!(card.draft.greeting, "Hi!");
    assert_eq!(card.draft.personality_summary, "bright");
    assert_eq!(card.draft.example_dialogue, "<START>");
    assert_eq!(
        card.card_extra,
        json!({"top": {"talkativeness": "0.5", "create_date": "1683279596143"}, "data": {}})
    );
}

#[test]
fn a_v2_card_reads_data_and_drops_the_v1_copies() {
    let card = json_card(&json!({
        "name": "stale copy", "description": "stale", "fav": false,
        "spec": "chara_card_v2", "spec_version": "2.0",
        "data": {
            "name": "Seraphina", "description": "A guardian.", "first_mes": "Welcome.",
            "tags": ["Fantasy", "fantasy", " magic "], "alternate_greetings": ["Hello again."],
            "extensions": {"world": "Eldoria", "companion/character": {"category": "fantasy",
                "tone": "gentle", "interests": ["healing"], "visibility": "unlisted", "nsfw": false}},
            "character_book": {"entries": [{"keys": ["eldoria"], "content": "A forest.",
                "position": "custom_spot", "extensions": {"probability": null}}]},
            "future_field": 7
        }
    }))
    .unwrap();
    assert_eq!(card.spec, "v2");
    assert_eq!(card.draft.name, "Seraphina");
    assert_eq!(card.draft.tags, vec!["fantasy", "magic"]);
    assert_eq!(card.draft.category, "fantasy");
    assert_eq!(card.draft.tone, "gentle");
    assert_eq!(card.draft.visibility, Visibility::Unlisted);
    assert_eq!(
        card.draft.extensions,
        json!({"world": "Eldoria"}).as_object().unwrap().clone()
    );
    let book = card.draft.lorebook.unwrap();
    assert_eq!(book["entries"][0]["position"], "custom_spot");
    assert_eq!(
        card.card_extra,
        json!({"top": {"fav": false}, "data": {"future_field": 7}})
    );
}

#[test]
fn v3_dates_and_embedded_assets_are_not_kept() {
    let card = json_card(&json!({
        "spec": "chara_card_v3", "spec_version": "3.0",
        "data": {"name": "Vega", "creation_date": 1, "modification_date": 2,
            "group_only_greetings": [], "nickname": "Cap",
            "assets": [{"type": "icon", "uri": "embeded://assets/icon/images/main.png",
                "name": "main", "ext": "png"},
                {"type": "background", "uri": "https://example.com/bg.png", "name": "bg",
                "ext": "png"}]}
    }))
    .unwrap();
    assert_eq!(card.spec, "v3");
    assert_eq!(
        card.card_extra["data"],
        json!({"nickname": "Cap", "assets": [{"type": "background",
            "uri": "https://example.com/bg.png", "name": "bg", "ext": "png"}]})
    );
}

#[test]
fn malformed_cards_say_what_is_wrong() {
    assert!(malformed(import(b"not json")).contains("not valid JSON"));
    assert!(malformed(import(b"[1, 2]")).contains("JSON object"));
    assert!(malformed(json_card(&json!({"spec": "lorebook_v3", "data": {}}))).contains("lorebook"));
    assert!(malformed(json_card(&json!({"spec": "chara_card_v9", "data": {}}))).contains("spec"));
    assert!(malformed(json_card(&json!({"spec": "chara_card_v2"}))).contains("data"));
    assert!(malformed(json_card(&json!({"description": "no name"}))).contains("name"));
    let bad_type = json!({"spec": "chara_card_v2", "data": {"name": "A", "tags": "x"}});
    assert!(malformed(json_card(&bad_type)).contains("data.tags"));
    let bad_book = json!({"spec": "chara_card_v2",
        "data": {"name": "A", "character_book": {"entries": [{"keys": "x", "content": ""}]}}});
    assert!(malformed(json_card(&bad_book)).contains("data.character_book"));
    assert!(malformed(import(&[0xff, 0xfe, 0x00])).contains("UTF-8"));
}

#[test]
fn limits_are_reported_by_the_cards_own_keys() {
    let card =
        json!({"spec": "chara_card_v2", "data": {"name": "", "first_mes": "g".repeat(5000)}});
    let Err(CardError::Invalid(errors)) = json_card(&card) else {
        panic!("expected field errors");
    };
    let text = format!("{:?}", errors.into_error());
    assert!(
        text.contains("data.name") && text.contains("data.first_mes"),
        "{text}"
    );
}

#[test]
fn the_fixture_pngs_read_with_their_images() {
    let seraphina = import(&fixture("sillytavern_seraphina_v2.png")).unwrap();
    assert_eq!((seraphina.spec, seraphina.container), ("v2", "png"));
    assert_eq!(seraphina.draft.name, "Seraphina");
    assert!(seraphina.draft.lorebook.is_some());
    let avatar = seraphina.avatar.unwrap();
    assert_eq!(sniff_image(&avatar.bytes), Some("image/png"));
    assert!(
        png::read(&avatar.bytes).is_err(),
        "the card chunk is stripped"
    );

    let rika_file = fixture("risuai_rika_v1.png");
    let rika = import(&rika_file).unwrap();
    assert_eq!(rika.spec, "v1");
    assert_eq!(rika.draft.name, "Rika");
    let image = rika.avatar.unwrap().bytes;
    // RisuAI's own 3.5 MB chunk passes through into the avatar.
    assert!(image.len() > 3_000_000);
    assert!(image.windows(7).any(|w| w == b"risuai\0"));
}

fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = ::zip::ZipWriter::new(&mut out);
    for (name, bytes) in files {
        writer
            .start_file(*name, ::zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
    out.into_inner()
}

#[test]
fn a_charx_gives_its_card_and_main_icon() {
    let card = json!({"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Ada",
        "assets": [{"type": "icon", "uri": "embeded://assets/icon/images/main.png",
            "name": "main", "ext": "png"}]}});
    let icon = png::placeholder();
    let file = zip(&[
        ("card.json", &serde_json::to_vec(&card).unwrap()),
        ("assets/icon/images/main.png", &icon),
    ]);
    let imported = import(&file).unwrap();
    assert_eq!((imported.spec, imported.container), ("v3", "charx"));
    assert_eq!(imported.draft.name, "Ada");
    assert_eq!(imported.avatar.unwrap().bytes, icon);

    assert!(malformed(import(&zip(&[("other.json", b"{}")]))).contains("card.json"));
    assert!(malformed(import(b"PK\x03\x04 broken")).contains("zip"));
}

#[test]
fn a_zip_bomb_is_too_large() {
    let huge = vec![b' '; MAX_CARD_JSON + 10];
    let file = zip(&[("card.json", &huge)]);
    assert!(file.len() < MAX_IMPORT_BYTES);
    assert!(matches!(import(&file), Err(CardError::TooLarge(_))));
}

#[test]
fn oversized_files_are_too_large() {
    let big = vec![b' '; MAX_IMPORT_BYTES + 1];
    assert!(matches!(import(&big), Err(CardError::TooLarge(_))));
    let big_json = vec![b' '; MAX_CARD_JSON + 1];
    assert!(matches!(import(&big_json), Err(CardError::TooLarge(_))));
}

#[test]
fn export_and_import_agree() {
    let seraphina = import(&fixture("sillytavern_seraphina_v2.png")).unwrap();
    let v3 = json!({"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "X"}});
    let v2 = json!({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Y"}});
    let avatar = seraphina.avatar.unwrap().bytes;
    let png = export_png(&v3, &v2, Some(&avatar)).unwrap();
    let again = import(&png).unwrap();
    assert_eq!(again.spec, "v3");
    assert_eq!(again.draft.name, "X");
    assert_eq!(again.avatar.unwrap().bytes, avatar);
    // Without an image of ours, the card still travels in a valid PNG.
    let plain = export_png(&v3, &v2, None).unwrap();
    assert_eq!(import(&plain).unwrap().draft.name, "X");
}

/// A small deterministic generator, so a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The fuzz target's property on stable Rust: mutated cards (flipped bytes, cuts, inserted
/// garbage, corrupted chunk lengths) give a card or an error, never a panic; a card we
/// accept and write back reads again with the same name.
#[test]
fn cards_never_panic() {
    let charx_card = json!({"spec": "chara_card_v3", "spec_version": "3.0", "data": {
        "name": "Z", "assets": [{"type": "icon", "uri": "embeded://i.png", "name": "main", "ext": "png"}]}});
    let seeds = [
        fixture("sillytavern_seraphina_v2.png"),
        export_png(
            &json!({"spec": "chara_card_v3", "data": {"name": "P"}}),
            &json!({}),
            None,
        )
        .unwrap(),
        serde_json::to_vec(
            &json!({"spec": "chara_card_v2", "data": {"name": "J", "tags": ["a"],
            "character_book": {"entries": [{"keys": ["k"], "content": "c"}]}}}),
        )
        .unwrap(),
        zip(&[
            ("card.json", &serde_json::to_vec(&charx_card).unwrap()),
            ("i.png", &png::placeholder()),
        ]),
    ];
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..2_000 {
        let mut file = seeds[round % seeds.len()].clone();
        for _ in 0..=random.below(4) {
            let at = random.below(file.len());
            match random.below(4) {
                0 => file[at] ^= 1 << random.below(8),
                1 => file.truncate(at),
                2 => {
                    let garbage: Vec<u8> =
                        (0..random.below(16)).map(|_| random.next() as u8).collect();
                    file.splice(at..at, garbage);
                }
                _ => {
                    let end = (at + 4).min(file.len());
                    let value = (random.next() as u32).to_be_bytes();
                    file[at..end].copy_from_slice(&value[..end - at]);
                }
            }
            if file.is_empty() {
                break;
            }
        }
        if let Ok(checked) = check(&file) {
            accepted += 1;
            let again = check(&checked.rewritten).unwrap();
            assert_eq!(again.name, checked.name);
        }
    }
    // The mutations are gentle enough that some cards still read.
    assert!(accepted > 50, "only {accepted} mutated cards were accepted");
}
