//! The error policy, written once.
//!
//! Every failure the API answers — a handler's, an extractor's, a middleware's, actix's own
//! 404 and 405 — leaves as the envelope
//! `{"error":{"code":"VALIDATION_ERROR","message":"…","details":{…}}}`.
//!
//! - `code` is a stable [`ErrorCode`] clients can branch on; `message` is for people.
//! - The cause (a diesel error, an I/O error…) is kept for the logs only: no error body
//!   carries a stack trace, SQL, a secret or another user's data.
//! - Modules keep their own `thiserror` enums and convert into [`AppError`] at the edge.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;

use crate::platform::db::DbError;

/// The stable error codes of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    /// 403: the feature needs a paid plan (premium or enterprise).
    PremiumRequired,
    /// 403: the account is waiting for its erasure; the client may offer to restore it.
    AccountPendingDeletion,
    /// 403: an operator disabled the account.
    AccountDisabled,
    NotFound,
    MethodNotAllowed,
    /// 408: the request body stopped arriving (`server.body_idle_timeout_ms`) or took too
    /// long in all (`server.body_timeout_secs`).
    RequestTimeout,
    Conflict,
    /// 409: the account holds too much for the synchronous export; ask for the archive.
    ExportTooLarge,
    PayloadTooLarge,
    /// 413: the upload would take the user past their plan's storage quota.
    StorageQuotaExceeded,
    /// 429: the plan's language-model tokens for the month are spent.
    TokenQuotaExceeded,
    UnsupportedMediaType,
    /// 416: a `Range` outside the file.
    RangeNotSatisfiable,
    ValidationError,
    RateLimited,
    InternalError,
    ServiceUnavailable,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden
            | Self::PremiumRequired
            | Self::AccountPendingDeletion
            | Self::AccountDisabled => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict | Self::ExportTooLarge => StatusCode::CONFLICT,
            Self::PayloadTooLarge | Self::StorageQuotaExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited | Self::TokenQuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code that describes a bare status (used for responses actix produced itself).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 => Self::RequestTimeout,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            416 => Self::RangeNotSatisfiable,
            422 => Self::ValidationError,
            429 => Self::RateLimited,
            503 => Self::ServiceUnavailable,
            // 400 and any other client error.
            400..=499 => Self::BadRequest,
            _ => Self::InternalError,
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            Self::BadRequest => "The request is malformed.",
            Self::Unauthorized => "Authentication is required.",
            Self::Forbidden => "You are not allowed to do this.",
            Self::PremiumRequired => "This feature needs a premium or enterprise plan.",
            Self::AccountPendingDeletion => {
                "This account is scheduled for deletion; it can still be restored."
            }
            Self::AccountDisabled => "This account has been disabled; contact support.",
            Self::NotFound => "Not found.",
            Self::MethodNotAllowed => "This method is not allowed here.",
            Self::RequestTimeout => "The request took too long to arrive.",
            Self::Conflict => "The request conflicts with the current state.",
            Self::ExportTooLarge => "This account is too large for an immediate export.",
            Self::PayloadTooLarge => "The request body is too large.",
            Self::StorageQuotaExceeded => "Your storage quota is used up.",
            Self::TokenQuotaExceeded => "Your plan's tokens for this month are used up.",
            Self::UnsupportedMediaType => "Unsupported content type.",
            Self::RangeNotSatisfiable => "The requested range is outside the file.",
            Self::ValidationError => "Validation failed.",
            Self::RateLimited => "Too many requests; slow down.",
            Self::InternalError => "Something went wrong on our side.",
            Self::ServiceUnavailable => "The service is temporarily unavailable.",
        }
    }
}

/// An API error: what the client is told, plus the cause for the logs.
pub struct AppError {
    code: ErrorCode,
    message: String,
    details: Option<Value>,
    retry_after_secs: Option<u64>,
    cause: Option<anyhow::Error>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after_secs: None,
            cause: None,
        }
    }

    /// The code's standard message.
    pub fn from_code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// Absent **or not yours**: never reveal that another user's resource exists.
    pub fn not_found() -> Self {
        Self::from_code(ErrorCode::NotFound)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 422 with the offending fields, e.g. `{"fields": {"email": "is not an address"}}`.
    pub fn validation(message: impl Into<String>, details: Value) -> Self {
        Self::new(ErrorCode::ValidationError, message).with_details(details)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut err = Self::from_code(ErrorCode::RateLimited);
        err.retry_after_secs = Some(retry_after_secs);
        err
    }

    /// 500: the client learns nothing about the cause; the logs do.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::from_code(ErrorCode::InternalError).with_cause(cause)
    }

    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self::from_code(ErrorCode::ServiceUnavailable).with_cause(cause)
    }

    /// Tells the client when to try again (`Retry-After`).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_cause(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Per-field problems, when there are some.
    pub fn details(&self) -> Option<&Value> {
        self.details.as_ref()
    }

    /// The cause chain, for logs.
    pub fn cause(&self) -> Option<&anyhow::Error> {
        self.cause.as_ref()
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppError")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("cause", &self.cause)
            .finish()
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " (cause: {cause:#})")?;
        }
        Ok(())
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                details: self.details.as_ref(),
            },
        })
    }
}

/// The envelope for a bare status, as bytes (used to replace actix's own empty bodies).
pub fn envelope_for_status(status: StatusCode) -> (HeaderValue, Vec<u8>) {
    let code = ErrorCode::for_status(status);
    let body = serde_json::to_vec(&Envelope {
        error: Body {
            code,
            message: code.default_message(),
            details: None,
        },
    })
    .unwrap_or_default();
    (HeaderValue::from_static("application/json"), body)
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Query(diesel::result::Error::NotFound) => Self::not_found(),
            err if err.is_unavailable() => Self::unavailable(err),
            err => Self::internal(err),
        }
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        DbError::Query(err).into()
    }
}
