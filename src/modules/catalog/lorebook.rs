//! Lorebooks (a card's `character_book`). They are stored in the card's own snake_case
//! shape, unknown keys and all, so a card exported again carries what it was imported with.
//! The API speaks camelCase: [`from_api`] checks and converts a client's book, [`to_api`]
//! shows a stored one.

use serde_json::{Map, Value};

use super::LoreEntry;

pub const MAX_ENTRIES: usize = 500;
pub const MAX_ENTRY_CONTENT: usize = 10_000;
pub const MAX_KEYS: usize = 50;
pub const MAX_KEY_LEN: usize = 200;
pub const MAX_BOOK_BYTES: usize = 1024 * 1024;

/// API name → card name, for the book and for an entry.
const BOOK_KEYS: &[(&str, &str)] = &[
    ("name", "name"),
    ("description", "description"),
    ("scanDepth", "scan_depth"),
    ("tokenBudget", "token_budget"),
    ("recursiveScanning", "recursive_scanning"),
    ("extensions", "extensions"),
    ("entries", "entries"),
];
const ENTRY_KEYS: &[(&str, &str)] = &[
    ("keys", "keys"),
    ("content", "content"),
    ("extensions", "extensions"),
    ("enabled", "enabled"),
    ("insertionOrder", "insertion_order"),
    ("caseSensitive", "case_sensitive"),
    ("name", "name"),
    ("priority", "priority"),
    ("id", "id"),
    ("comment", "comment"),
    ("selective", "selective"),
    ("secondaryKeys", "secondary_keys"),
    ("constant", "constant"),
    ("position", "position"),
    ("useRegex", "use_regex"),
];

fn rename(object: &Map<String, Value>, keys: &[(&str, &str)], to_card: bool) -> Map<String, Value> {
    keys.iter()
        .filter_map(|(api, card)| {
            let (from, to) = if to_card { (api, card) } else { (card, api) };
            object.get(*from).map(|v| ((*to).to_owned(), v.clone()))
        })
        .collect()
}

/// Checks a book sent by a client and converts it to the card shape.
pub fn from_api(book: Value) -> Result<Value, String> {
    let Value::Object(book) = book else {
        return Err("must be an object with an entries array".into());
    };
    if let Some(key) = book
        .keys()
        .find(|k| !BOOK_KEYS.iter().any(|(api, _)| api == k))
    {
        return Err(format!("has a field that is not accepted: {key}"));
    }
    let Some(Value::Array(entries)) = book.get("entries") else {
        return Err("must have an entries array".into());
    };
    let mut converted = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(format!("entries[{index}] must be an object"));
        };
        if let Some(key) = entry
            .keys()
            .find(|k| !ENTRY_KEYS.iter().any(|(api, _)| api == k))
        {
            return Err(format!(
                "entries[{index}] has a field that is not accepted: {key}"
            ));
        }
        let mut card = rename(entry, ENTRY_KEYS, true);
        card.entry("extensions")
            .or_insert_with(|| Value::Object(Map::new()));
        card.entry("enabled").or_insert(Value::Bool(true));
        card.entry("insertion_order").or_insert(Value::from(0));
        card.entry("keys")
            .or_insert_with(|| Value::Array(Vec::new()));
        card.entry("content")
            .or_insert_with(|| Value::String(String::new()));
        converted.push(Value::Object(card));
    }
    let mut card = rename(&book, BOOK_KEYS, true);
    card.insert("entries".into(), Value::Array(converted));
    card.entry("extensions")
        .or_insert_with(|| Value::Object(Map::new()));
    let card = Value::Object(card);
    check_shape(&card, true)?;
    Ok(card)
}

/// Checks a book read from a card. It is kept exactly as it came, unknown keys included;
/// only the types of the fields we read must be right. `position` may be any string there
/// (tools invent their own), and only `after_char` changes where an entry goes.
pub fn from_card(book: Value) -> Result<Value, String> {
    if !book.is_object() {
        return Err("must be an object with an entries array".into());
    }
    check_shape(&book, false)?;
    Ok(book)
}

/// A stored book as the API shows it (known keys only, camelCase).
pub fn to_api(book: &Value) -> Value {
    let Value::Object(book) = book else {
        return Value::Null;
    };
    let mut api = rename(book, BOOK_KEYS, false);
    let entries = book
        .get("entries")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(Value::as_object)
                .map(|entry| Value::Object(rename(entry, ENTRY_KEYS, false)))
                .collect()
        })
        .unwrap_or_default();
    api.insert("entries".into(), Value::Array(entries));
    Value::Object(api)
}

/// The types of the fields we rely on, in the card shape.
fn check_shape(book: &Value, strict_position: bool) -> Result<(), String> {
    let entries = book
        .get("entries")
        .and_then(Value::as_array)
        .ok_or("must have an entries array")?;
    for (index, entry) in entries.iter().enumerate() {
        let is_strings = |v: &Value| {
            v.as_array()
                .is_some_and(|items| items.iter().all(Value::is_string))
        };
        let bad = |what: &str| format!("entries[{index}].{what}");
        if !entry.get("keys").is_some_and(is_strings) {
            return Err(bad("keys must be a list of strings"));
        }
        if !entry.get("content").is_some_and(Value::is_string) {
            return Err(bad("content must be a string"));
        }
        if entry
            .get("secondary_keys")
            .is_some_and(|v| !v.is_null() && !is_strings(v))
        {
            return Err(bad("secondaryKeys must be a list of strings"));
        }
        for flag in [
            "enabled",
            "constant",
            "selective",
            "case_sensitive",
            "use_regex",
        ] {
            if entry
                .get(flag)
                .is_some_and(|v| !v.is_null() && !v.is_boolean())
            {
                return Err(bad(&format!("{flag} must be true or false")));
            }
        }
        if entry.get("insertion_order").is_some_and(|v| !v.is_number()) {
            return Err(bad("insertionOrder must be a number"));
        }
        if let Some(position) = entry.get("position").filter(|v| !v.is_null())
            && !(matches!(position.as_str(), Some("before_char" | "after_char"))
                || (!strict_position && position.is_string()))
        {
            return Err(bad("position must be before_char or after_char"));
        }
        if entry.get("extensions").is_some_and(|v| !v.is_object()) {
            return Err(bad("extensions must be an object"));
        }
    }
    Ok(())
}

/// The size limits, for books from clients and from imported cards alike.
pub fn check_limits(book: &Value) -> Result<(), String> {
    let entries = book
        .get("entries")
        .and_then(Value::as_array)
        .ok_or("must have an entries array")?;
    if entries.len() > MAX_ENTRIES {
        return Err(format!("must have at most {MAX_ENTRIES} entries"));
    }
    for (index, entry) in entries.iter().enumerate() {
        let content = entry.get("content").and_then(Value::as_str).unwrap_or("");
        if content.chars().count() > MAX_ENTRY_CONTENT {
            return Err(format!(
                "entries[{index}].content must be at most {MAX_ENTRY_CONTENT} characters"
            ));
        }
        for field in ["keys", "secondary_keys"] {
            let keys = entry.get(field).and_then(Value::as_array);
            if keys.is_some_and(|keys| {
                keys.len() > MAX_KEYS
                    || keys
                        .iter()
                        .any(|k| k.as_str().is_some_and(|k| k.chars().count() > MAX_KEY_LEN))
            }) {
                return Err(format!(
                    "entries[{index}] may have at most {MAX_KEYS} keys of {MAX_KEY_LEN} characters"
                ));
            }
        }
    }
    let size = serde_json::to_vec(book).map_or(usize::MAX, |v| v.len());
    if size > MAX_BOOK_BYTES {
        return Err("must be at most 1 MiB of JSON".into());
    }
    Ok(())
}

/// The entries a prompt needs, tolerant of the variations real cards carry.
pub fn entries(book: &Value) -> Vec<LoreEntry> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let flag = |entry: &Value, key: &str, default: bool| {
        entry.get(key).and_then(Value::as_bool).unwrap_or(default)
    };
    book.get("entries")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|entry| LoreEntry {
                    keys: strings(entry.get("keys")),
                    secondary_keys: strings(entry.get("secondary_keys")),
                    content: entry
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    enabled: flag(entry, "enabled", true),
                    constant: flag(entry, "constant", false),
                    selective: flag(entry, "selective", false),
                    case_sensitive: flag(entry, "case_sensitive", false),
                    insertion_order: entry
                        .get("insertion_order")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    after_char: entry.get("position").and_then(Value::as_str) == Some("after_char"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_books_convert_to_the_card_shape_and_back() {
        let api = json!({"name": "World", "scanDepth": 4, "entries": [
            {"keys": ["castle"], "content": "The castle is old.", "insertionOrder": 2,
             "secondaryKeys": ["king"], "selective": true, "position": "after_char"}
        ]});
        let card = from_api(api.clone()).unwrap();
        assert_eq!(card["scan_depth"], 4);
        assert_eq!(card["entries"][0]["insertion_order"], 2);
        assert_eq!(card["entries"][0]["enabled"], true);
        let back = to_api(&card);
        assert_eq!(back["entries"][0]["secondaryKeys"], json!(["king"]));
        assert_eq!(back["scanDepth"], 4);
        let entries = entries(&card);
        assert!(entries[0].after_char && entries[0].selective && entries[0].enabled);
    }

    #[test]
    fn bad_books_say_what_is_wrong() {
        assert!(from_api(json!([])).is_err());
        assert!(
            from_api(json!({"entries": [{"keys": "castle", "content": ""}]}))
                .unwrap_err()
                .contains("entries[0].keys")
        );
        assert!(
            from_api(json!({"entries": [{"keys": [], "content": "", "role": 1}]}))
                .unwrap_err()
                .contains("role")
        );
        let many = json!({"entries": (0..501).map(|_| json!({"keys": [], "content": ""})).collect::<Vec<_>>()});
        assert!(check_limits(&from_api(many).unwrap()).is_err());
    }
}
