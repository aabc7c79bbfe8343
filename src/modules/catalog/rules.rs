//! What a character may contain: the editable fields, how a request body changes them, and
//! the limits. Pure functions, no I/O.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::lorebook;
use crate::platform::http::FieldErrors;

pub const MAX_NAME: usize = 100;
pub const MAX_DESCRIPTION: usize = 10_000;
pub const MAX_GREETING: usize = 4_096;
pub const MAX_TAGS: usize = 20;
pub const MAX_LIST_ITEMS: usize = 20;
pub const MAX_ITEM: usize = 50;
pub const MAX_TONE: usize = 100;
pub const MAX_LONG_TEXT: usize = 10_000;
pub const MAX_SHORT_TEXT: usize = 200;
pub const MAX_EXTENSIONS_BYTES: usize = 64 * 1024;

/// Who may see a character. `unlisted` is reachable by id (a shared link) but never listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Unlisted,
    Private,
}

impl Visibility {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "public" => Some(Self::Public),
            "unlisted" => Some(Self::Unlisted),
            "private" => Some(Self::Private),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Unlisted => "unlisted",
            Self::Private => "private",
        }
    }
}

/// Every field a creator edits, complete. Create and `PUT` start from [`Draft::default`],
/// `PATCH` from the stored character; either way the body is applied, then validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub name: String,
    pub description: String,
    /// Media the owner uploaded (or that came with an imported card).
    pub avatar_media_id: Option<Uuid>,
    pub category: String,
    pub traits: Vec<String>,
    pub greeting: String,
    pub tone: String,
    pub interests: Vec<String>,
    pub personality_summary: String,
    pub visibility: Visibility,
    pub nsfw: bool,
    pub tags: Vec<String>,
    pub scenario: String,
    pub example_dialogue: String,
    pub alternate_greetings: Vec<String>,
    pub system_prompt: String,
    pub post_history_instructions: String,
    pub creator_notes: String,
    pub creator: String,
    pub character_version: String,
    pub extensions: Map<String, Value>,
    /// The lorebook in the card's own shape (`character_book`).
    pub lorebook: Option<Value>,
}

impl Default for Draft {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            avatar_media_id: None,
            category: "other".to_owned(),
            traits: Vec::new(),
            greeting: String::new(),
            tone: String::new(),
            interests: Vec::new(),
            personality_summary: String::new(),
            // New characters are the creator's alone until they choose to share them.
            visibility: Visibility::Private,
            nsfw: false,
            tags: Vec::new(),
            scenario: String::new(),
            example_dialogue: String::new(),
            alternate_greetings: Vec::new(),
            system_prompt: String::new(),
            post_history_instructions: String::new(),
            creator_notes: String::new(),
            creator: String::new(),
            character_version: String::new(),
            extensions: Map::new(),
            lorebook: None,
        }
    }
}

/// `Some(value)` for a field that is present, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonalityInput {
    #[schema(max_length = 4096)]
    greeting: Option<String>,
    #[schema(max_length = 100)]
    tone: Option<String>,
    #[schema(max_items = 20)]
    interests: Option<Vec<String>>,
    #[schema(max_length = 10000)]
    summary: Option<String>,
}

/// A create, replace or patch body. Absent fields keep the starting value (a create needs
/// `name`; a replace starts from nothing, a patch from the character as it is).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Input {
    /// Required to create or replace; not blank.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
    )]
    name: Option<String>,
    #[schema(max_length = 10000)]
    description: Option<String>,
    /// Refused (set `avatarMediaId`), so not in the document.
    #[serde(default, deserialize_with = "present")]
    #[schema(ignore)]
    avatar_url: Option<Value>,
    /// An image the caller uploaded, or `null` for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<uuid::Uuid>)]
    avatar_media_id: Option<Value>,
    category: Option<String>,
    #[schema(max_items = 20)]
    traits: Option<Vec<String>>,
    personality: Option<PersonalityInput>,
    /// `public`, `unlisted` or `private`.
    #[schema(pattern = "^(public|unlisted|private)$")]
    visibility: Option<String>,
    /// The older spelling of `visibility` (`true` is `public`).
    is_public: Option<bool>,
    nsfw: Option<bool>,
    #[schema(max_items = 20)]
    tags: Option<Vec<String>>,
    #[schema(max_length = 10000)]
    scenario: Option<String>,
    #[schema(max_length = 10000)]
    example_dialogue: Option<String>,
    #[schema(max_items = 20)]
    alternate_greetings: Option<Vec<String>>,
    #[schema(max_length = 10000)]
    system_prompt: Option<String>,
    #[schema(max_length = 10000)]
    post_history_instructions: Option<String>,
    #[schema(max_length = 10000)]
    creator_notes: Option<String>,
    #[schema(max_length = 200)]
    creator: Option<String>,
    #[schema(max_length = 200)]
    character_version: Option<String>,
    /// Free-form card extensions, at most 64 KiB.
    #[schema(value_type = Option<Object>)]
    extensions: Option<Map<String, Value>>,
    /// A character book, or `null` for none (at most 1 MiB of JSON).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LorebookDoc>)]
    lorebook: Option<Value>,
}

/// A character book as clients send it (`lorebook.rs` reads it; other keys are kept).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
struct LorebookDoc {
    #[schema(max_items = 500)]
    entries: Vec<LoreEntryDoc>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
struct LoreEntryDoc {
    /// Words that bring the entry into the prompt (at most 50, each at most 200 characters).
    #[schema(max_items = 50)]
    keys: Vec<String>,
    #[schema(max_length = 10000)]
    content: String,
    #[schema(max_items = 50)]
    secondary_keys: Option<Vec<String>>,
    enabled: Option<bool>,
    constant: Option<bool>,
    selective: Option<bool>,
    case_sensitive: Option<bool>,
    use_regex: Option<bool>,
    #[schema(required = false)]
    insertion_order: f64,
    /// `before_char` or `after_char`.
    #[schema(pattern = "^(before_char|after_char)$")]
    position: Option<String>,
    #[schema(required = false, value_type = Object)]
    extensions: Value,
}

/// The body fields [`Input`] accepts; anything else is refused by name.
pub const INPUT_FIELDS: &[&str] = &[
    "name",
    "description",
    "avatarUrl",
    "avatarMediaId",
    "category",
    "traits",
    "personality",
    "visibility",
    "isPublic",
    "nsfw",
    "tags",
    "scenario",
    "exampleDialogue",
    "alternateGreetings",
    "systemPrompt",
    "postHistoryInstructions",
    "creatorNotes",
    "creator",
    "characterVersion",
    "extensions",
    "lorebook",
];

impl Draft {
    /// Applies `input`; the shape errors it finds (a bad visibility, a lorebook that is not
    /// one) are reported with the field names the client used.
    pub fn apply(mut self, input: Input, errors: &mut FieldErrors) -> Self {
        let trim = |s: String| s.trim().to_owned();
        if let Some(name) = input.name {
            self.name = trim(name);
        }
        if let Some(description) = input.description {
            self.description = description;
        }
        if input.avatar_url.is_some() {
            errors.add(
                "avatarUrl",
                "is set through avatarMediaId: upload the image to /api/v1/media/upload, then \
                 give its id",
            );
        }
        match input.avatar_media_id {
            None => {}
            Some(Value::Null) => self.avatar_media_id = None,
            Some(Value::String(id)) => match id.trim().parse() {
                Ok(id) => self.avatar_media_id = Some(id),
                Err(_) => errors.add("avatarMediaId", "must be a media id or null"),
            },
            Some(_) => errors.add("avatarMediaId", "must be a media id or null"),
        }
        if let Some(category) = input.category {
            self.category = trim(category).to_lowercase();
        }
        if let Some(traits) = input.traits {
            self.traits = clean_list(traits);
        }
        if let Some(personality) = input.personality {
            if let Some(greeting) = personality.greeting {
                self.greeting = greeting;
            }
            if let Some(tone) = personality.tone {
                self.tone = trim(tone);
            }
            if let Some(interests) = personality.interests {
                self.interests = clean_list(interests);
            }
            if let Some(summary) = personality.summary {
                self.personality_summary = summary;
            }
        }
        match (input.visibility, input.is_public) {
            (Some(visibility), is_public) => match Visibility::parse(&visibility) {
                Some(parsed) if is_public.is_none_or(|p| p == (parsed == Visibility::Public)) => {
                    self.visibility = parsed;
                }
                Some(_) => errors.add("isPublic", "contradicts visibility"),
                None => errors.add("visibility", "must be public, unlisted or private"),
            },
            (None, Some(true)) => self.visibility = Visibility::Public,
            (None, Some(false)) => self.visibility = Visibility::Private,
            (None, None) => {}
        }
        if let Some(nsfw) = input.nsfw {
            self.nsfw = nsfw;
        }
        if let Some(tags) = input.tags {
            // Tags are matched exactly by `?tag=`, so they are kept in one case.
            self.tags = clean_list(tags.into_iter().map(|t| t.to_lowercase()).collect());
        }
        let texts = [
            (input.scenario, &mut self.scenario),
            (input.example_dialogue, &mut self.example_dialogue),
            (input.system_prompt, &mut self.system_prompt),
            (
                input.post_history_instructions,
                &mut self.post_history_instructions,
            ),
            (input.creator_notes, &mut self.creator_notes),
            (input.creator, &mut self.creator),
            (input.character_version, &mut self.character_version),
        ];
        for (value, slot) in texts {
            if let Some(value) = value {
                *slot = value;
            }
        }
        if let Some(greetings) = input.alternate_greetings {
            self.alternate_greetings = greetings;
        }
        if let Some(extensions) = input.extensions {
            self.extensions = extensions;
        }
        match input.lorebook {
            None => {}
            Some(Value::Null) => self.lorebook = None,
            Some(book) => match lorebook::from_api(book) {
                Ok(book) => self.lorebook = Some(book),
                Err(problem) => errors.add("lorebook", problem),
            },
        }
        self
    }

    /// Every limit, each broken one reported by its API field name.
    pub fn validate(&self, errors: &mut FieldErrors) {
        let chars = |s: &str| s.chars().count();
        let name = chars(&self.name);
        if name == 0 {
            errors.add("name", "is required");
        } else if name > MAX_NAME {
            errors.add("name", format!("must be at most {MAX_NAME} characters"));
        }
        let texts = [
            ("description", &self.description, MAX_DESCRIPTION),
            ("personality.greeting", &self.greeting, MAX_GREETING),
            ("personality.tone", &self.tone, MAX_TONE),
            (
                "personality.summary",
                &self.personality_summary,
                MAX_LONG_TEXT,
            ),
            ("scenario", &self.scenario, MAX_LONG_TEXT),
            ("exampleDialogue", &self.example_dialogue, MAX_LONG_TEXT),
            ("systemPrompt", &self.system_prompt, MAX_LONG_TEXT),
            (
                "postHistoryInstructions",
                &self.post_history_instructions,
                MAX_LONG_TEXT,
            ),
            ("creatorNotes", &self.creator_notes, MAX_LONG_TEXT),
            ("creator", &self.creator, MAX_SHORT_TEXT),
            ("characterVersion", &self.character_version, MAX_SHORT_TEXT),
        ];
        for (field, value, max) in texts {
            if chars(value) > max {
                errors.add(field, format!("must be at most {max} characters"));
            }
        }
        if self.tags.len() > MAX_TAGS {
            errors.add("tags", format!("must have at most {MAX_TAGS} tags"));
        }
        let lists = [
            ("tags", &self.tags),
            ("traits", &self.traits),
            ("personality.interests", &self.interests),
        ];
        for (field, list) in lists {
            if list.len() > MAX_LIST_ITEMS {
                errors.add(field, format!("must have at most {MAX_LIST_ITEMS} items"));
            } else if list.iter().any(|item| chars(item) > MAX_ITEM) {
                errors.add(
                    field,
                    format!("items must be at most {MAX_ITEM} characters"),
                );
            }
        }
        if self.alternate_greetings.len() > MAX_LIST_ITEMS {
            errors.add(
                "alternateGreetings",
                format!("must have at most {MAX_LIST_ITEMS} greetings"),
            );
        } else if self
            .alternate_greetings
            .iter()
            .any(|g| chars(g) > MAX_GREETING)
        {
            errors.add(
                "alternateGreetings",
                format!("each greeting must be at most {MAX_GREETING} characters"),
            );
        }
        let extensions = serde_json::to_vec(&self.extensions).map_or(usize::MAX, |v| v.len());
        if extensions > MAX_EXTENSIONS_BYTES {
            errors.add("extensions", "must be at most 64 KiB of JSON");
        }
        if let Some(book) = &self.lorebook
            && let Err(problem) = lorebook::check_limits(book)
        {
            errors.add("lorebook", problem);
        }
    }
}

/// Trims items and drops empty ones and repeats, keeping the first spelling.
fn clean_list(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty() && seen.insert(item.to_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: Value) -> Input {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn patch_keeps_absent_fields_and_null_clears_the_avatar() {
        let mut errors = FieldErrors::new();
        let start = Draft {
            name: "Luna".into(),
            tone: "warm".into(),
            avatar_media_id: Some(Uuid::nil()),
            ..Draft::default()
        };
        let patched = start.apply(
            input(serde_json::json!({"avatarMediaId": null, "personality": {"greeting": "Hi"}})),
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(patched.name, "Luna");
        assert_eq!(patched.tone, "warm");
        assert_eq!(patched.greeting, "Hi");
        assert_eq!(patched.avatar_media_id, None);
    }

    #[test]
    fn is_public_maps_to_visibility_and_must_agree_with_it() {
        let mut errors = FieldErrors::new();
        let draft =
            Draft::default().apply(input(serde_json::json!({"isPublic": true})), &mut errors);
        assert_eq!(draft.visibility, Visibility::Public);
        Draft::default().apply(
            input(serde_json::json!({"isPublic": true, "visibility": "private"})),
            &mut errors,
        );
        assert!(!errors.is_empty());
    }

    #[test]
    fn limits_are_reported_by_field() {
        let mut errors = FieldErrors::new();
        let draft = Draft {
            name: "x".repeat(101),
            tags: (0..21).map(|i| format!("t{i}")).collect(),
            greeting: "g".repeat(4097),
            ..Draft::default()
        };
        draft.validate(&mut errors);
        let error = errors.into_error();
        let text = format!("{error:?}");
        for field in ["name", "tags", "personality.greeting"] {
            assert!(text.contains(field), "{field} in {text}");
        }
    }

    #[test]
    fn lists_are_trimmed_and_deduplicated() {
        assert_eq!(
            clean_list(vec![" a ".into(), "".into(), "A".into(), "b".into()]),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }
}
