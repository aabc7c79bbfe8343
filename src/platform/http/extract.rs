//! Extractor configuration: body limits and the mapping of extractor failures to the
//! error envelope. Registered once on the App in `app.rs`, so every handler gets it.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};
use serde_json::json;

use super::error::{AppError, ErrorCode};

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| json_error(err, limit).into())
}

fn json_error(err: JsonPayloadError, limit: usize) -> AppError {
    match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            AppError::new(
                ErrorCode::PayloadTooLarge,
                format!("The JSON body is larger than the limit of {limit} bytes."),
            )
        }
        JsonPayloadError::ContentType => AppError::new(
            ErrorCode::UnsupportedMediaType,
            "Send the body as application/json.",
        ),
        // Well-formed JSON of the wrong shape: a validation failure, with serde's reason.
        JsonPayloadError::Deserialize(e) if e.is_data() => AppError::validation(
            "The body does not have the expected fields.",
            json!({ "reason": e.to_string() }),
        ),
        JsonPayloadError::Deserialize(e) => AppError::bad_request("The body is not valid JSON.")
            .with_details(json!({ "line": e.line(), "column": e.column() })),
        _ => AppError::bad_request("The request body could not be read."),
    }
}

/// A path that does not parse (a malformed id) names no resource: 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|_err: PathError, _req: &HttpRequest| AppError::not_found().into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req: &HttpRequest| {
        AppError::bad_request("The query string is invalid.")
            .with_details(json!({ "reason": err.to_string() }))
            .into()
    })
}

/// The fallback for every path no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::not_found())
}
