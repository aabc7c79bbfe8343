//! The OpenAPI document's shared parts. Each module documents its own routes (a
//! `#[derive(OpenApi)]` in its `api.rs`, next to the handlers); `app.rs` nests them under
//! `/api/v1` and [`document`] adds what every operation shares:
//!
//! - the bearer security scheme (the access token of `POST /auth/login`);
//! - a `default` response carrying the error envelope, so every status an operation can
//!   fail with (400, 401, 404, 422, 429, 503…) is described by one schema, `Error`;
//! - [`Page`], the shape of every paged list.

use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};
use utoipa::{OpenApi as _, ToSchema};

use super::error::ErrorCode;

/// The name of the security scheme operations refer to (`security(("bearer" = []))`).
pub const BEARER: &str = "bearer";

/// Every error the API answers: `{"error":{"code","message","details?"}}`.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)] // A schema only: answers are built by `AppError`.
pub struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    /// A stable code clients can branch on.
    code: ErrorCode,
    /// For people; may change.
    message: String,
    /// Which fields failed and why, or the numbers behind a limit.
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

/// A page of a list (`?page=&size=`): `content`, and where it sits among `totalElements`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct Page<T: ToSchema> {
    content: Vec<T>,
    total_elements: i64,
    total_pages: i64,
    /// This page's number, from 0.
    number: i64,
    size: i64,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Companion API",
        description = "AI companions: accounts, characters, conversations with streamed replies, \
                       media, privacy, billing. Errors share one envelope (`Error`); a request \
                       with a bearer token acts as that user.",
    ),
    components(schemas(ErrorEnvelope))
)]
struct Base;

/// The whole document: `parts` (each a module's operations, nested at its prefix) plus the
/// shared parts above.
pub fn document(parts: Vec<(&str, OpenApi)>) -> OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for (prefix, part) in parts {
        if prefix.is_empty() {
            doc.merge(part);
        } else {
            doc = doc.nest(prefix, part);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.head,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            add_error_response(operation);
        }
    }
    with_patterns(doc)
}

/// A UUID, as a pattern: generators that do not know the `uuid` format (and clients'
/// validators) still produce and accept only ids.
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Text without U+0000, which PostgreSQL cannot store (the server refuses it).
const TEXT_PATTERN: &str = "^[^\\u0000]*$";

/// Adds [`UUID_PATTERN`] to every `format: uuid` string of `doc`, and [`TEXT_PATTERN`] to
/// every other string a client sends (parameters and request bodies, with the components they
/// use) that has no pattern of its own; files excepted.
fn with_patterns(doc: OpenApi) -> OpenApi {
    let Ok(mut value) = serde_json::to_value(&doc) else {
        return doc;
    };
    // The components requests use, found by following `$ref`s from parameters and bodies.
    let mut inputs = std::collections::BTreeSet::new();
    let mut pending: Vec<Value> = Vec::new();
    if let Some(paths) = value["paths"].as_object() {
        let operations = paths
            .values()
            .filter_map(Value::as_object)
            .flat_map(|item| {
                item.iter()
                    .filter(|(method, op)| METHODS.contains(&method.as_str()) && op.is_object())
                    .map(|(_, op)| op)
            });
        for operation in operations {
            pending.push(operation["parameters"].clone());
            pending.push(operation["requestBody"].clone());
        }
    }
    while let Some(next) = pending.pop() {
        for name in refs(&next) {
            if inputs.insert(name.clone()) {
                pending.push(value["components"]["schemas"][&name].clone());
            }
        }
    }
    if let Some(paths) = value["paths"].as_object_mut() {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for (_, operation) in item
                .iter_mut()
                .filter(|(method, op)| METHODS.contains(&method.as_str()) && op.is_object())
            {
                constrain(&mut operation["parameters"], true);
                constrain(&mut operation["requestBody"], true);
                constrain(operation, false);
            }
        }
    }
    if let Some(schemas) = value["components"]["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            constrain(schema, inputs.contains(name));
        }
    }
    serde_json::from_value(value).unwrap_or(doc)
}

const METHODS: [&str; 6] = ["get", "head", "post", "put", "patch", "delete"];

/// The component names `value` refers to.
fn refs(value: &Value) -> Vec<String> {
    match value {
        Value::Object(object) => {
            let own = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .map(str::to_owned);
            own.into_iter()
                .chain(object.values().flat_map(refs))
                .collect()
        }
        Value::Array(items) => items.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}

/// Adds the patterns to the strings of `value` (the text one only when `input`).
fn constrain(value: &mut Value, input: bool) {
    match value {
        Value::Object(object) => {
            let string = match object.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            if string && !object.contains_key("pattern") {
                let pattern = match object.get("format").and_then(Value::as_str) {
                    Some("uuid") => Some(UUID_PATTERN),
                    Some("binary") => None,
                    _ => input.then_some(TEXT_PATTERN),
                };
                if let Some(pattern) = pattern {
                    object.insert("pattern".to_owned(), Value::from(pattern));
                }
            }
            object.values_mut().for_each(|v| constrain(v, input));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| constrain(v, input)),
        _ => {}
    }
}

fn add_error_response(operation: &mut Operation) {
    operation
        .responses
        .responses
        .entry("default".to_owned())
        .or_insert_with(|| {
            RefOr::T(
                Response::builder()
                    .description("The error envelope, with the status that says what failed.")
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("Error"))),
                    )
                    .build(),
            )
        });
}
