//! HTTP plumbing shared by every module: the error envelope, extractor configuration,
//! authentication, and the middleware stack.

mod assets;
mod auth;
mod client;
mod error;
mod extract;
mod limit;
mod middleware;
mod openapi;
mod routes;
mod validate;

pub use assets::WebClient;
pub use auth::{
    AccessClaims, AuthUser, KeyError, MaybeUser, Role, SessionCheck, TokenKeys, bearer_token,
};
pub use client::{ClientInfo, client_ip};
pub use error::{AppError, ErrorCode};
pub use extract::{json_config, not_found, path_config, query_config};
pub use limit::{ceil_secs, charge_user, rate_limit, refusal, tier_quota, user_key};
pub use middleware::{
    BodyTimeouts, CompanionRootSpan, REQUEST_ID, RequestId, body_timeout, envelope_errors,
    record_metrics, refuse_nul_query, request_id, security_headers,
};
pub use openapi::{BEARER, ErrorEnvelope, Page, document};
pub use routes::{Resource, RouteEntry, Routes};
pub use validate::{FieldErrors, Paging, search_text, strict_body};
