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
    doc
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
