//! HTTP handlers of the privacy module (DESIGN.md §2, Privacy).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::service::{PURPOSES, Service, export_file_name};
use super::store::ExportRow;
use crate::platform::http::{AppError, AuthUser, ClientInfo, FieldErrors, Routes, strict_body};

pub fn routes(routes: &mut Routes) {
    routes
        .resource("/users/consents", |r| r.get(get_consents).put(put_consents))
        .resource("/users/data-export", |r| {
            r.get(export_now).post(request_export)
        })
        .resource("/users/data-exports", |r| r.get(recent_exports))
        .resource("/users/data-export/{id}", |r| r.get(export_status))
        .resource("/users/data-export/{id}/download", |r| r.get(download))
        .resource("/users/account", |r| r.delete(delete_account))
        .resource("/users/account/restore", |r| r.post(restore));
}

/// The caller's consents, for the OpenAPI document (the service builds them from
/// `PURPOSES`).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
struct ConsentsView {
    marketing: bool,
    analytics: bool,
    tracking: bool,
    /// When each purpose last changed (`null`: never given).
    #[schema(value_type = Object)]
    changed_at: Value,
    /// Every change, newest first: `{purpose, granted, at}`.
    #[schema(value_type = Vec<Object>)]
    history: Value,
}

/// Purposes to change; absent ones stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ConsentsChange {
    #[schema(required = false)]
    marketing: bool,
    #[schema(required = false)]
    analytics: bool,
    #[schema(required = false)]
    tracking: bool,
}

#[utoipa::path(get, path = "/users/consents", tag = "privacy", security(("bearer" = [])),
    responses((status = 200, description = "Each purpose's consent and their history.",
        body = ConsentsView)))]
async fn get_consents(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(service.consents(user.user_id).await?))
}

/// `{marketing?, analytics?, tracking?}`: booleans; absent purposes stay as they are.
#[utoipa::path(put, path = "/users/consents", tag = "privacy", security(("bearer" = [])),
    request_body = ConsentsChange,
    responses((status = 200, description = "The consents as changed.", body = ConsentsView)))]
async fn put_consents(
    service: web::Data<Service>,
    user: AuthUser,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let given: Map<String, Value> = strict_body(body.into_inner(), &PURPOSES)?;
    let mut errors = FieldErrors::new();
    let mut changes = Vec::new();
    for purpose in PURPOSES {
        match given.get(purpose) {
            None => {}
            Some(Value::Bool(granted)) => changes.push((purpose, *granted)),
            Some(_) => errors.add(purpose, "must be true or false"),
        }
    }
    errors.finish(())?;
    Ok(HttpResponse::Ok().json(service.set_consents(user.user_id, changes, client).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// `json` (the only format here; the archive is `POST /users/data-export`).
    #[param(pattern = "^json$")]
    format: Option<String>,
}

#[utoipa::path(get, path = "/users/data-export", tag = "privacy", security(("bearer" = [])), params(ExportQuery),
    responses((status = 200, description = "Everything we hold about the caller, as one JSON \
        document (409 `EXPORT_TOO_LARGE` when it is too big: ask for the archive).",
        body = Object)))]
async fn export_now(
    service: web::Data<Service>,
    user: AuthUser,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, AppError> {
    if !matches!(query.format.as_deref(), None | Some("json")) {
        let mut errors = FieldErrors::new();
        errors.add(
            "format",
            "must be json (the archive is POST /users/data-export)",
        );
        errors.finish(())?;
    }
    let document = service.export_json(user.user_id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"companion-export.json\"",
        ))
        .json(document))
}

/// An export job.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ExportView {
    job_id: Uuid,
    /// `queued`, `running`, `ready`, `failed` or `expired`.
    status: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    size: Option<i64>,
    error: Option<String>,
    /// Once `ready`.
    download_url: Option<String>,
}

fn status(row: &ExportRow) -> ExportView {
    let ready = row.state == "ready";
    ExportView {
        job_id: row.id,
        status: row.state.clone(),
        created_at: row.created_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        expires_at: row.expires_at,
        size: row.size_bytes,
        error: row.error.clone(),
        download_url: ready.then(|| format!("/api/v1/users/data-export/{}/download", row.id)),
    }
}

#[derive(Serialize, ToSchema)]
struct ExportList {
    /// Newest first.
    content: Vec<ExportView>,
}

#[utoipa::path(post, path = "/users/data-export", tag = "privacy", security(("bearer" = [])),
    responses((status = 202, description = "An archive (ZIP) is being written; poll `Location`.",
        body = ExportView)))]
async fn request_export(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    let row = service.request_export(user.user_id).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/users/data-export/{}", row.id),
        ))
        .json(status(&row)))
}

#[utoipa::path(get, path = "/users/data-exports", tag = "privacy", security(("bearer" = [])),
    responses((status = 200, description = "The caller's recent export jobs.", body = ExportList)))]
async fn recent_exports(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    let rows = service.recent_exports(user.user_id).await?;
    Ok(HttpResponse::Ok().json(ExportList {
        content: rows.iter().map(status).collect(),
    }))
}

#[utoipa::path(get, path = "/users/data-export/{id}", tag = "privacy", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The export job.")),
    responses((status = 200, description = "The job.", body = ExportView)))]
async fn export_status(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let row = service.export(user.user_id, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(status(&row)))
}

/// The archive: a redirect to a short-lived URL when the store signs them, else streamed.
/// Only the owner, only while it is ready (404 once expired, 409 while being written).
#[utoipa::path(get, path = "/users/data-export/{id}/download", tag = "privacy", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The export job.")),
    responses((status = 200, description = "The archive.", content_type = "application/zip",
        body = Vec<u8>),
        (status = 307, description = "With presigned downloads on: a short-lived URL.")))]
async fn download(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let row = service.export(user.user_id, id.into_inner()).await?;
    match row.state.as_str() {
        "ready" => {}
        "queued" | "running" => {
            return Err(AppError::conflict("The archive is still being written."));
        }
        _ => return Err(AppError::not_found()),
    }
    let key = Path::from(row.object_key.clone());
    let disposition = format!("attachment; filename=\"{}\"", export_file_name(&row));
    if let Some(url) = service
        .storage
        .presigned_get(&key, "application/zip", &disposition)
        .await
        .map_err(AppError::internal)?
    {
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, url.to_string()))
            .insert_header((header::CACHE_CONTROL, "private, no-store"))
            .finish());
    }
    let found = match service.storage.store().get(&key).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Err(AppError::not_found()),
        Err(error) => return Err(AppError::internal(error)),
    };
    let size = found.meta.size;
    let body = found
        .into_stream()
        .map_err(|error| actix_web::error::ErrorInternalServerError(error.to_string()));
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .no_chunking(size)
        .streaming(body))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Reauth {
    /// The account's password, again.
    #[schema(value_type = String, min_length = 1, max_length = 1024)]
    password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RestoreRequest)]
struct Credentials {
    #[schema(value_type = String, min_length = 1, max_length = 254)]
    email: Option<String>,
    #[schema(value_type = String, min_length = 1, max_length = 1024)]
    password: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Scheduled {
    /// When the account and its data are erased, unless restored before.
    scheduled_for: DateTime<Utc>,
}

fn required(value: Option<String>, field: &str, errors: &mut FieldErrors) -> String {
    match value {
        Some(value) if !value.is_empty() => value,
        _ => {
            errors.add(field, "is required");
            String::new()
        }
    }
}

/// `{password}` → 202 `{scheduledFor}`.
#[utoipa::path(delete, path = "/users/account", tag = "privacy", security(("bearer" = [])), request_body = Reauth,
    responses((status = 202, description = "Signed out everywhere; erased after the grace \
        period.", body = Scheduled)))]
async fn delete_account(
    service: web::Data<Service>,
    user: AuthUser,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let body: Reauth = strict_body(body.into_inner(), &["password"])?;
    let mut errors = FieldErrors::new();
    let password = required(body.password, "password", &mut errors);
    errors.finish(())?;
    let at = service
        .delete_account(user.user_id, password, client)
        .await?;
    Ok(HttpResponse::Accepted().json(Scheduled { scheduled_for: at }))
}

/// `{email, password}` of a closed account → 200 with the login's body.
#[utoipa::path(post, path = "/users/account/restore", tag = "privacy",
    request_body = Credentials,
    responses((status = 200, description = "The account is back, signed in (the body of \
        `POST /auth/login`).", body = Object)))]
async fn restore(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let body: Credentials = strict_body(body.into_inner(), &["email", "password"])?;
    let mut errors = FieldErrors::new();
    let email = required(body.email, "email", &mut errors);
    let password = required(body.password, "password", &mut errors);
    errors.finish(())?;
    Ok(HttpResponse::Ok().json(service.restore(email, password, client).await?))
}

/// This module's operations, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(
    get_consents,
    put_consents,
    export_now,
    request_export,
    recent_exports,
    export_status,
    download,
    delete_account,
    restore
))]
pub(super) struct Docs;
