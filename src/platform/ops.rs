//! Operations endpoints (no `/api` prefix): `/health`, `/ready`, `/metrics`.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use super::Platform;
use super::db::DbError;
use super::http::{AppError, ErrorCode, Routes};
use super::{migrate, redis};

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
const JOBS_TIMEOUT: Duration = Duration::from_millis(500);

pub fn routes(routes: &mut Routes) {
    routes
        .resource("/health", |r| r.get(health))
        .resource("/ready", |r| r.get(ready))
        .resource("/metrics", |r| r.get(metrics));
}

/// The operations endpoints' part of the OpenAPI document.
pub fn api_docs() -> utoipa::openapi::OpenApi {
    Docs::openapi()
}

#[derive(OpenApi)]
#[openapi(paths(health, ready, metrics))]
struct Docs;

#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `/ready`'s answer when every check passed (a failure is the error envelope, 503, with the
/// same `checks` in `details`).
#[derive(ToSchema)]
#[allow(dead_code)] // A schema only: the answer is built from the checks below.
struct Readiness {
    /// `ready`.
    status: String,
    /// `database`, `redis`, `storage`: each `{status, reason?}`.
    #[schema(value_type = Object)]
    checks: Value,
}

/// The process is alive and serving HTTP. Nothing else is checked.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive.", body = Health)))]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Ready to take traffic: database reachable with migrations applied, Redis (when configured)
/// and the object store answering. 503 names what failed.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "Every dependency answers.", body = Readiness)))]
async fn ready(platform: web::Data<Platform>) -> Result<HttpResponse, AppError> {
    let (database, redis, storage) = tokio::join!(
        check_database(&platform),
        check_redis(&platform),
        check_storage(&platform)
    );
    let mut checks = Map::new();
    let mut failed = Vec::new();
    for (name, outcome) in [
        ("database", database),
        ("redis", redis),
        ("storage", storage),
    ] {
        let value = match outcome {
            Ok(status) => json!({ "status": status }),
            Err(reason) => {
                failed.push(name);
                json!({ "status": "failed", "reason": reason })
            }
        };
        checks.insert(name.to_owned(), value);
    }
    if failed.is_empty() {
        Ok(HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks })))
    } else {
        Err(AppError::new(
            ErrorCode::ServiceUnavailable,
            format!("Not ready: {}.", failed.join(", ")),
        )
        .with_details(json!({ "checks": checks })))
    }
}

async fn within<T>(check: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

async fn check_database(platform: &Platform) -> Result<&'static str, String> {
    let applied = within(async {
        platform
            .db
            .run(|c| migrate::applied_version(c).map_err(DbError::from))
            .await
            .map_err(|e| {
                if e.is_unavailable() {
                    "unreachable".to_owned()
                } else {
                    "query failed".to_owned()
                }
            })
    })
    .await?;
    match applied {
        Some(v) if v >= migrate::latest_version() => Ok("ok"),
        _ => Err("migrations pending".to_owned()),
    }
}

async fn check_redis(platform: &Platform) -> Result<&'static str, String> {
    match &platform.redis {
        None => Ok("not configured"),
        Some(pool) => {
            within(async {
                redis::ping(pool)
                    .await
                    .map(|()| "ok")
                    .map_err(|_| "unreachable".to_owned())
            })
            .await
        }
    }
}

async fn check_storage(platform: &Platform) -> Result<&'static str, String> {
    within(async {
        platform
            .storage
            .check()
            .await
            .map(|()| "ok")
            .map_err(|_| "unreachable".to_owned())
    })
    .await
}

/// Prometheus text format. Open unless `metrics.bearer_token` is configured.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Prometheus text exposition format.",
        content_type = "text/plain", body = String)))]
async fn metrics(
    platform: web::Data<Platform>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    if let Some(expected) = &platform.settings.metrics.bearer_token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = presented.is_some_and(|p| {
            use subtle::ConstantTimeEq;
            p.as_bytes()
                .ct_eq(expected.expose_secret().as_bytes())
                .into()
        });
        if !matches {
            return Err(AppError::unauthorized(
                "The metrics token is missing or wrong.",
            ));
        }
    }
    // The queue's depth is one count over the jobs table; a scrape does not wait long for it.
    let jobs = tokio::time::timeout(JOBS_TIMEOUT, platform.jobs.depth())
        .await
        .ok()
        .and_then(Result::ok);
    let body = platform
        .metrics
        .render(platform.db.stats(), jobs)
        .map_err(AppError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}
