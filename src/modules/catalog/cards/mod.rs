//! Character cards: reading V1, V2 and V3 cards from JSON, PNG and CHARX, and writing V3
//! (with a V2 copy for older tools). Pure functions, no I/O. The formats are the community
//! specs `malfoyslastname/character-card-spec-v2` and `kwaroran/character-card-spec-v3`.
//!
//! Lossless means: every key we do not model is kept in `card_extra` (`{"top": {…}, "data":
//! {…}}`) and written back on export; `extensions` is kept verbatim; our own fields that the
//! spec lacks travel in `extensions["companion/character"]`.

mod charx;
pub mod png;

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde_json::{Map, Value, json};

use super::lorebook;
use super::rules::{Draft, Input, Visibility};
use super::store::CharacterRow;
use crate::platform::http::FieldErrors;

/// The largest file `POST /characters/import` reads (a PNG with its image, a CHARX with its
/// icon). Real cards with large embedded data (RisuAI's) are a few megabytes.
pub const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;
/// The largest card JSON, after base64 decoding or inflating.
pub const MAX_CARD_JSON: usize = 4 * 1024 * 1024;
/// Where our own fields live inside `extensions`.
pub const EXTENSION_KEY: &str = "companion/character";

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// Not a card, or a card that breaks the spec: 422.
    #[error("{0}")]
    Malformed(String),
    /// Larger than we accept: 413.
    #[error("{0}")]
    TooLarge(String),
    /// A card that reads fine but breaks one of our limits: 422 by field.
    #[error("invalid fields")]
    Invalid(FieldErrors),
}

impl CardError {
    fn malformed(message: impl Into<String>) -> Self {
        Self::Malformed(message.into())
    }
}

/// An image that came with a card and becomes the character's avatar.
pub struct Avatar {
    pub bytes: Vec<u8>,
}

/// A card read and checked, ready to store.
pub struct Imported {
    pub draft: Draft,
    pub card_extra: Value,
    pub avatar: Option<Avatar>,
    /// `v1`, `v2` or `v3`, and the container (`json`, `png`, `charx`).
    pub spec: &'static str,
    pub container: &'static str,
}

/// The image types an avatar may be, told by their first bytes.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(png::SIGNATURE) {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Base64 as tools write it: padding optional, standard alphabet, surrounding whitespace
/// tolerated.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads a card from a file's bytes, whatever its container.
pub fn import(bytes: &[u8]) -> Result<Imported, CardError> {
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(CardError::TooLarge(format!(
            "a card file may be at most {MAX_IMPORT_BYTES} bytes"
        )));
    }
    let (json, avatar, container) = if bytes.starts_with(png::SIGNATURE) {
        let card = png::read(bytes)?;
        let text = card.text.trim_ascii();
        if text.len() / 4 * 3 > MAX_CARD_JSON {
            return Err(CardError::TooLarge(format!(
                "the card in the PNG is larger than {MAX_CARD_JSON} bytes"
            )));
        }
        let json = LENIENT.decode(text).map_err(|_| {
            CardError::malformed(format!(
                "the PNG's {} chunk is not valid base64",
                card.keyword
            ))
        })?;
        let others = png::other_texts(&card.image)?;
        let avatar = Avatar { bytes: card.image };
        (json, Some((avatar, others)), "png")
    } else if bytes.starts_with(charx::SIGNATURE) {
        let charx = charx::read(bytes)?;
        (charx.card, charx.avatar.map(|a| (a, Vec::new())), "charx")
    } else {
        if bytes.len() > MAX_CARD_JSON {
            return Err(CardError::TooLarge(format!(
                "a card's JSON may be at most {MAX_CARD_JSON} bytes"
            )));
        }
        (bytes.to_vec(), None, "json")
    };
    let text = std::str::from_utf8(&json)
        .map_err(|_| CardError::malformed("the card is not UTF-8 text"))?;
    let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
        CardError::malformed(format!(
            "the card is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let (draft, mut card_extra, spec) = from_card(crate::platform::db::strip_nul(value))?;
    let avatar = avatar.map(|(avatar, others)| {
        if !others.is_empty() {
            let texts: Vec<Value> = others
                .iter()
                .map(|(keyword, text)| json!([keyword, general_purpose::STANDARD.encode(text)]))
                .collect();
            card_extra[PNG_TEXTS] = Value::Array(texts);
        }
        avatar
    });
    Ok(Imported {
        draft,
        card_extra,
        avatar,
        spec,
        container,
    })
}

/// The keys a V1 card (and the top level of many V2/V3 cards, as a copy) carries.
const V1_FIELDS: [&str; 6] = [
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
];

/// Pulls typed values out of a card object, naming the card's own keys in errors.
struct Fields<'a> {
    object: &'a mut Map<String, Value>,
    prefix: &'static str,
}

impl Fields<'_> {
    fn text(&mut self, key: &str) -> Result<String, CardError> {
        match self.object.remove(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(CardError::malformed(format!(
                "{}{key} must be a string",
                self.prefix
            ))),
        }
    }

    fn texts(&mut self, key: &str) -> Result<Vec<String>, CardError> {
        match self.object.remove(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text),
                    _ => Err(()),
                })
                .collect::<Result<_, _>>()
                .map_err(|()| {
                    CardError::malformed(format!("{}{key} must be a list of strings", self.prefix))
                }),
            Some(_) => Err(CardError::malformed(format!(
                "{}{key} must be a list of strings",
                self.prefix
            ))),
        }
    }
}

/// A card's JSON → the draft, what we keep verbatim, and the spec it followed.
fn from_card(card: Value) -> Result<(Draft, Value, &'static str), CardError> {
    let Value::Object(mut top) = card else {
        return Err(CardError::malformed("a card must be a JSON object"));
    };
    let spec = match top.get("spec") {
        None => "v1",
        Some(Value::String(s)) if s == "chara_card_v3" => "v3",
        Some(Value::String(s)) if s == "chara_card_v2" => "v2",
        Some(Value::String(s)) if s == "lorebook_v3" => {
            return Err(CardError::malformed(
                "this is a lorebook (lorebook_v3), not a character card",
            ));
        }
        Some(other) => {
            return Err(CardError::malformed(format!(
                "unknown card spec {other}; expected chara_card_v2 or chara_card_v3"
            )));
        }
    };
    let mut data = if spec == "v1" {
        if !top.get("name").is_some_and(Value::is_string) {
            return Err(CardError::malformed(
                "the card has no spec and no name: it is not a character card",
            ));
        }
        let mut data = Map::new();
        for key in V1_FIELDS {
            if let Some(value) = top.remove(key) {
                data.insert(key.to_owned(), value);
            }
        }
        data
    } else {
        top.remove("spec");
        top.remove("spec_version");
        // V1 copies next to `data` are derived from it; `data` is the card.
        for key in V1_FIELDS.iter().chain(&["tags"]) {
            top.remove(*key);
        }
        match top.remove("data") {
            Some(Value::Object(data)) => data,
            _ => return Err(CardError::malformed("the card's data must be an object")),
        }
    };
    let prefix = if spec == "v1" { "" } else { "data." };
    let mut fields = Fields {
        object: &mut data,
        prefix,
    };
    let name = fields.text("name")?;
    let description = fields.text("description")?;
    let personality = fields.text("personality")?;
    let scenario = fields.text("scenario")?;
    let first_mes = fields.text("first_mes")?;
    let mes_example = fields.text("mes_example")?;
    let creator_notes = fields.text("creator_notes")?;
    let system_prompt = fields.text("system_prompt")?;
    let post_history = fields.text("post_history_instructions")?;
    let creator = fields.text("creator")?;
    let character_version = fields.text("character_version")?;
    let alternate_greetings = fields.texts("alternate_greetings")?;
    let tags = fields.texts("tags")?;
    let mut extensions = match data.remove("extensions") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(CardError::malformed(format!(
                "{prefix}extensions must be an object"
            )));
        }
    };
    let book = match data.remove("character_book") {
        None | Some(Value::Null) => None,
        Some(book) => Some(lorebook::from_card(book).map_err(|problem| {
            CardError::malformed(format!("{prefix}character_book {problem}"))
        })?),
    };
    // Ours to write on export: the dates come from our own timestamps.
    data.remove("creation_date");
    data.remove("modification_date");
    // Embedded assets live in the container we just read; we keep the icon as the avatar
    // and do not host the rest yet, so their references would dangle.
    if let Some(Value::Array(assets)) = data.get_mut("assets") {
        assets.retain(|asset| {
            let uri = asset.get("uri").and_then(Value::as_str).unwrap_or("");
            !(uri.starts_with("embeded://") || uri.starts_with("__asset:"))
        });
        if assets.is_empty() {
            data.remove("assets");
        }
    }
    if data
        .get("group_only_greetings")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        data.remove("group_only_greetings");
    }
    let ours = match extensions.remove(EXTENSION_KEY) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(ours)) => ours,
        Some(_) => {
            return Err(CardError::malformed(format!(
                "{prefix}extensions.{EXTENSION_KEY} must be an object"
            )));
        }
    };
    let mut body = json!({
        "name": name,
        "description": description,
        "personality": {"greeting": first_mes, "summary": personality},
        "scenario": scenario,
        "exampleDialogue": mes_example,
        "creatorNotes": creator_notes,
        "systemPrompt": system_prompt,
        "postHistoryInstructions": post_history,
        "creator": creator,
        "characterVersion": character_version,
        "alternateGreetings": alternate_greetings,
        "tags": tags,
        "extensions": extensions,
    });
    apply_ours(&mut body, ours);
    let input: Input = serde_json::from_value(body)
        .map_err(|e| CardError::malformed(format!("{prefix}extensions.{EXTENSION_KEY}: {e}")))?;
    let mut errors = FieldErrors::new();
    let mut draft = Draft::default().apply(input, &mut errors);
    draft.lorebook = book;
    draft.validate(&mut errors);
    if !errors.is_empty() {
        return Err(CardError::Invalid(
            errors.renamed(|api| card_field(api, prefix)),
        ));
    }
    let extra = json!({ "top": top, "data": data });
    Ok((draft, extra, spec))
}

/// Our fields from `extensions["companion/character"]`, in the API's shape.
fn apply_ours(body: &mut Value, ours: Map<String, Value>) {
    for (key, value) in ours {
        match key.as_str() {
            "category" | "traits" | "visibility" | "nsfw" => {
                body[key.as_str()] = value;
            }
            "tone" | "interests" => body["personality"][key.as_str()] = value,
            // A newer version of us may add fields; an older one ignores them.
            _ => {}
        }
    }
}

/// The card key behind an API field name, for error messages about an imported card.
fn card_field(api: &str, prefix: &str) -> String {
    let card = match api {
        "name" | "description" | "scenario" | "creator" | "tags" | "extensions" => api,
        "personality.greeting" => "first_mes",
        "personality.summary" => "personality",
        "exampleDialogue" => "mes_example",
        "alternateGreetings" => "alternate_greetings",
        "systemPrompt" => "system_prompt",
        "postHistoryInstructions" => "post_history_instructions",
        "creatorNotes" => "creator_notes",
        "characterVersion" => "character_version",
        "lorebook" => "character_book",
        ours => {
            let ours = ours.strip_prefix("personality.").unwrap_or(ours);
            return format!("{prefix}extensions.{EXTENSION_KEY}.{ours}");
        }
    };
    format!("{prefix}{card}")
}

/// The V3 card of a stored character.
pub fn export_v3(row: &CharacterRow, card_extra: &Value) -> Value {
    let mut data = card_data(row, card_extra);
    data.insert(
        "creation_date".into(),
        Value::from(row.created_at.timestamp()),
    );
    data.insert(
        "modification_date".into(),
        Value::from(row.updated_at.timestamp()),
    );
    data.entry("group_only_greetings")
        .or_insert_with(|| Value::Array(Vec::new()));
    envelope("chara_card_v3", "3.0", data, card_extra)
}

/// The V2 copy written next to the V3 card in PNGs, for tools that only read `chara`.
pub fn export_v2(row: &CharacterRow, card_extra: &Value) -> Value {
    let mut data = card_data(row, card_extra);
    for v3_only in [
        "assets",
        "nickname",
        "creator_notes_multilingual",
        "source",
        "group_only_greetings",
    ] {
        data.remove(v3_only);
    }
    envelope("chara_card_v2", "2.0", data, card_extra)
}

fn envelope(spec: &str, version: &str, data: Map<String, Value>, extra: &Value) -> Value {
    let mut top = Map::new();
    if let Some(Value::Object(kept)) = extra.get("top") {
        top.extend(kept.clone());
    }
    top.insert("spec".into(), Value::from(spec));
    top.insert("spec_version".into(), Value::from(version));
    top.insert("data".into(), Value::Object(data));
    Value::Object(top)
}

fn card_data(row: &CharacterRow, card_extra: &Value) -> Map<String, Value> {
    let mut data = match card_extra.get("data") {
        Some(Value::Object(kept)) => kept.clone(),
        _ => Map::new(),
    };
    let mut extensions = match &row.extensions {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let ours = json!({
        "category": row.category,
        "traits": row.traits,
        "tone": row.tone,
        "interests": row.interests,
        "visibility": row.visibility,
        "nsfw": row.nsfw,
    });
    extensions.insert(EXTENSION_KEY.into(), ours);
    let known = [
        ("name", Value::from(row.name.as_str())),
        ("description", Value::from(row.description.as_str())),
        ("personality", Value::from(row.personality_summary.as_str())),
        ("scenario", Value::from(row.scenario.as_str())),
        ("first_mes", Value::from(row.greeting.as_str())),
        ("mes_example", Value::from(row.example_dialogue.as_str())),
        ("creator_notes", Value::from(row.creator_notes.as_str())),
        ("system_prompt", Value::from(row.system_prompt.as_str())),
        (
            "post_history_instructions",
            Value::from(row.post_history_instructions.as_str()),
        ),
        ("alternate_greetings", json!(row.alternate_greetings)),
        ("tags", json!(row.tags)),
        ("creator", Value::from(row.creator.as_str())),
        (
            "character_version",
            Value::from(row.character_version.as_str()),
        ),
        ("extensions", Value::Object(extensions)),
    ];
    for (key, value) in known {
        data.insert(key.to_owned(), value);
    }
    if let Some(book) = &row.lorebook {
        data.insert("character_book".into(), book.clone());
    }
    data
}

/// A PNG carrying the card: `ccv3` (V3) and `chara` (V2), over `image` or a placeholder.
/// Where a card's extra key keeps the other apps' `tEXt` chunks of an imported PNG:
/// `[[keyword, base64 text], …]`.
const PNG_TEXTS: &str = "pngTexts";

/// [`export_png`], with the other apps' text chunks `extra` kept from the import.
pub fn export_png_with(
    v3: &Value,
    v2: &Value,
    image: Option<&[u8]>,
    extra: &Value,
) -> Result<Vec<u8>, CardError> {
    let others: Vec<(String, Vec<u8>)> = extra[PNG_TEXTS]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| {
            let keyword = pair[0].as_str()?;
            let text = general_purpose::STANDARD.decode(pair[1].as_str()?).ok()?;
            Some((keyword.to_owned(), text))
        })
        .collect();
    let image = match image.filter(|i| i.starts_with(png::SIGNATURE)) {
        Some(image) if !others.is_empty() => {
            let texts: Vec<(&str, &[u8])> = others
                .iter()
                .map(|(keyword, text)| (keyword.as_str(), text.as_slice()))
                .collect();
            Some(png::write(image, &texts)?)
        }
        Some(image) => Some(image.to_vec()),
        None => None,
    };
    export_png(v3, v2, image.as_deref())
}

pub fn export_png(v3: &Value, v2: &Value, image: Option<&[u8]>) -> Result<Vec<u8>, CardError> {
    let encode = |card: &Value| {
        let json = serde_json::to_vec(card).unwrap_or_default();
        general_purpose::STANDARD.encode(json).into_bytes()
    };
    let (v3, v2) = (encode(v3), encode(v2));
    let placeholder;
    let image = match image.filter(|i| i.starts_with(png::SIGNATURE)) {
        Some(image) => image,
        None => {
            placeholder = png::placeholder();
            &placeholder
        }
    };
    png::write(image, &[("ccv3", &v3), ("chara", &v2)])
}

/// What [`check`] found in a file.
pub struct Checked {
    pub name: String,
    pub spec: &'static str,
    pub container: &'static str,
    /// The card as our exporter writes it, in a PNG.
    pub rewritten: Vec<u8>,
}

/// Reads a file the way import does and writes the card back into a PNG the way export
/// does, storing nothing. The fuzz target and the mutation test drive this.
pub fn check(file: &[u8]) -> Result<Checked, CardError> {
    let imported = import(file)?;
    let now = chrono::Utc::now();
    let draft = imported.draft;
    let row = CharacterRow {
        id: uuid::Uuid::nil(),
        owner_id: None,
        visibility: draft.visibility.as_str().to_owned(),
        name: draft.name,
        description: draft.description,
        avatar_media_id: draft.avatar_media_id,
        category: draft.category,
        traits: draft.traits,
        greeting: draft.greeting,
        tone: draft.tone,
        interests: draft.interests,
        nsfw: draft.nsfw,
        tags: draft.tags,
        scenario: draft.scenario,
        personality_summary: draft.personality_summary,
        example_dialogue: draft.example_dialogue,
        alternate_greetings: draft.alternate_greetings,
        system_prompt: draft.system_prompt,
        post_history_instructions: draft.post_history_instructions,
        creator_notes: draft.creator_notes,
        creator: draft.creator,
        character_version: draft.character_version,
        extensions: Value::Object(draft.extensions),
        lorebook: draft.lorebook,
        hidden_at: None,
        rating_count: 0,
        rating: 0.0,
        conversation_count: 0,
        created_at: now,
        updated_at: now,
    };
    let v3 = export_v3(&row, &imported.card_extra);
    let v2 = export_v2(&row, &imported.card_extra);
    let image = imported.avatar.as_ref().map(|a| a.bytes.as_slice());
    let rewritten = export_png(&v3, &v2, image)?;
    Ok(Checked {
        name: row.name,
        spec: imported.spec,
        container: imported.container,
        rewritten,
    })
}

/// Checks a visibility named in a request against the card's.
pub fn visibility_override(value: Option<&str>) -> Result<Option<Visibility>, CardError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(value) => Visibility::parse(value)
            .map(Some)
            .ok_or_else(|| CardError::malformed("visibility must be public, unlisted or private")),
    }
}

#[cfg(test)]
mod tests;
