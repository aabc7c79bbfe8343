//! The per-caller rate limit on every `/api` request (DESIGN.md §2, Limits).
//!
//! The caller is the account of a valid bearer token (its tier decides the quota) or, when
//! anonymous, the client address. Every answer carries `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until the budget is whole again);
//! over the limit the answer is the 429 envelope with `Retry-After`. An unlimited tier
//! (`enterprise` by default) gets no headers. If the shared limiter fails, the request goes
//! through (fail open, counted in `rate_limit_events_total{event="fail_open"}`).

use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, ResponseError, web};
use uuid::Uuid;

use super::auth::{TokenKeys, bearer_token};
use super::client::client_ip;
use super::error::AppError;
use crate::config::Plans;
use crate::platform::Platform;
use crate::platform::ratelimit::{Decision, Quota};

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up, and at least 1 for a positive duration.
pub fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

fn set_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(LIMIT, HeaderValue::from(decision.limit));
    headers.insert(REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RESET, HeaderValue::from(ceil_secs(decision.reset_after)));
}

/// The 429 for a refused decision.
pub fn refusal(decision: &Decision) -> AppError {
    AppError::rate_limited(ceil_secs(decision.retry_after).max(1))
}

/// The request budget of a tier's plan; `None` for unlimited.
pub fn tier_quota(plans: &Plans, tier: &str) -> Option<Quota> {
    Quota::configured(plans.get(tier).requests_per_minute, Duration::from_secs(60))
}

/// The key of a user's general request budget (erasure forgets it).
pub fn user_key(user: Uuid) -> String {
    format!("user:{user}")
}

/// Counts one request of `key` against `quota` (none: unlimited). `Ok` with the decision to
/// report (`None` when unlimited or the limiter failed open), or `Err` with the refusal.
async fn charge(
    platform: &Platform,
    key: &str,
    quota: Option<Quota>,
) -> Result<Option<Decision>, Decision> {
    let decision = match quota {
        Some(quota) => platform.limits.lenient(key, quota).await,
        None => None,
    };
    match decision {
        Some(decision) if !decision.allowed => {
            platform.metrics.rate_limit_event("rejected");
            Err(decision)
        }
        decision => Ok(decision),
    }
}

/// Counts one request of a signed-in user against their tier's quota, for work that does not
/// arrive as an HTTP request (a WebSocket frame); the 429 when over it.
pub async fn charge_user(platform: &Platform, user: Uuid, tier: &str) -> Result<(), AppError> {
    let quota = tier_quota(&platform.settings.plans, tier);
    charge(platform, &user_key(user), quota)
        .await
        .map(|_| ())
        .map_err(|refused| refusal(&refused))
}

pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(platform) = req.app_data::<web::Data<Platform>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let settings = &platform.settings.ratelimit;
    let claims = req
        .app_data::<web::Data<TokenKeys>>()
        .and_then(|keys| bearer_token(req.request()).and_then(|t| keys.verify_access(t)));
    let (key, quota) = match claims {
        Some(claims) => {
            let limit = (
                user_key(claims.sub),
                tier_quota(&platform.settings.plans, &claims.tier),
            );
            // Verified once: `AuthUser` picks the claims up instead of verifying again.
            req.extensions_mut().insert(claims);
            limit
        }
        None => {
            let ip = client_ip(
                req.headers(),
                req.peer_addr(),
                platform.settings.http.client_ip_source,
            );
            let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
            (
                format!("ip:{ip}"),
                Quota::configured(settings.anonymous_per_minute, Duration::from_secs(60)),
            )
        }
    };
    let decision = match charge(&platform, &key, quota).await {
        Ok(decision) => decision,
        Err(refused) => {
            let mut response = refusal(&refused).error_response();
            set_headers(response.headers_mut(), &refused);
            return Ok(req.into_response(response).map_into_right_body());
        }
    };
    let mut res = next.call(req).await?;
    if let Some(decision) = decision {
        set_headers(res.headers_mut(), &decision);
    }
    Ok(res.map_into_left_body())
}
