//! Request bodies checked field by field. A body is parsed as a JSON object first so that a
//! field the endpoint does not accept (`role`, `tier`, `id`…) is refused by name with 422 —
//! no mass assignment — and every invalid field is reported at once:
//! `{"error":{"code":"VALIDATION_ERROR","details":{"fields":{"email":"…"}}}}`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::error::AppError;

/// Field-level validation errors, collected then answered together.
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| problem.into());
    }

    /// Whether `field` already has a problem.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same problems under other names (a card's keys rather than the API's).
    pub fn renamed(self, name: impl Fn(&str) -> String) -> Self {
        Self(self.0.into_iter().map(|(k, v)| (name(&k), v)).collect())
    }

    /// `Ok(value)` when no field failed, else the 422.
    pub fn finish<T>(self, value: T) -> Result<T, AppError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.into_error())
        }
    }

    pub fn into_error(self) -> AppError {
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        let message = format!("Invalid fields: {}.", names.join(", "));
        AppError::validation(message, json!({ "fields": self.0 }))
    }
}

/// Parses `body` into `T`, refusing any field not in `allowed` and any field of the wrong
/// JSON type, each by name.
pub fn strict_body<T: DeserializeOwned>(body: Value, allowed: &[&str]) -> Result<T, AppError> {
    let Value::Object(object) = body else {
        return Err(AppError::validation(
            "The body must be a JSON object.",
            json!({ "fields": {} }),
        ));
    };
    let mut errors = FieldErrors::new();
    for key in object.keys().filter(|k| !allowed.contains(&k.as_str())) {
        errors.add(key.clone(), "is not accepted here");
    }
    // PostgreSQL cannot store U+0000: text holding it is refused by name.
    for (key, value) in &object {
        if crate::platform::db::holds_nul(value) {
            errors.add(key.clone(), "must not contain NUL characters");
        }
    }
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    serde_json::from_value(Value::Object(object.clone())).map_err(|_| {
        // Find which field has the wrong type by trying each alone.
        let mut errors = FieldErrors::new();
        for (key, value) in &object {
            let mut single = Map::new();
            single.insert(key.clone(), value.clone());
            if let Err(e) = serde_json::from_value::<T>(Value::Object(single))
                && !e.to_string().starts_with("missing field")
            {
                errors.add(key.clone(), "has the wrong type");
            }
        }
        if errors.is_empty() {
            errors.add("body", "does not have the expected shape");
        }
        errors.into_error()
    })
}

/// A list's `?search=` text: trimmed, cut to `max` characters, `None` when empty.
pub fn search_text(raw: Option<String>, max: usize) -> Option<String> {
    raw.map(|s| s.trim().chars().take(max).collect::<String>())
        .filter(|s| !s.is_empty())
}

/// A page of a list, as `?page=&size=` ask for it: `page` from 0 (at most 100000), `size`
/// from 1 to 100 (20 when not given).
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub page: i64,
    pub size: i64,
}

impl Paging {
    /// The page asked for; values out of range are reported in `errors`.
    pub fn checked(page: Option<i64>, size: Option<i64>, errors: &mut FieldErrors) -> Self {
        let page = page.unwrap_or(0);
        let size = size.unwrap_or(20);
        if !(0..=100_000).contains(&page) {
            errors.add("page", "must be between 0 and 100000");
        }
        if !(1..=100).contains(&size) {
            errors.add("size", "must be between 1 and 100");
        }
        Self { page, size }
    }

    /// The rows before this page.
    pub fn offset(self) -> i64 {
        self.page * self.size
    }

    /// The answer: this page's `content` and where it sits among `total` rows.
    pub fn answer(self, content: impl serde::Serialize, total: i64) -> Value {
        json!({
            "content": content,
            "totalElements": total,
            "totalPages": (total + self.size - 1) / self.size,
            "number": self.page,
            "size": self.size,
        })
    }
}
