//! HTTP plumbing shared by every module: the error envelope, extractor configuration,
//! authentication, and the middleware stack.

mod auth;
mod error;
mod extract;
mod middleware;

pub use auth::{AccessClaims, AuthUser, TokenKeys};
pub use error::{AppError, ErrorCode};
pub use extract::{json_config, not_found, path_config, query_config};
pub use middleware::{
    CompanionRootSpan, REQUEST_ID, RequestId, envelope_errors, record_metrics, request_id,
    security_headers,
};
