//! HTTP handlers of the privacy module (DESIGN.md §2, Privacy).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::service::{PURPOSES, Service, export_file_name};
use super::store::ExportRow;
use crate::platform::http::{AppError, AuthUser, ClientInfo, FieldErrors, strict_body};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/users/consents")
            .route(web::get().to(get_consents))
            .route(web::put().to(put_consents)),
    )
    .service(
        web::resource("/users/data-export")
            .route(web::get().to(export_now))
            .route(web::post().to(request_export)),
    )
    .service(web::resource("/users/data-exports").route(web::get().to(recent_exports)))
    .service(web::resource("/users/data-export/{id}").route(web::get().to(export_status)))
    .service(web::resource("/users/data-export/{id}/download").route(web::get().to(download)))
    .service(web::resource("/users/account").route(web::delete().to(delete_account)))
    .service(web::resource("/users/account/restore").route(web::post().to(restore)));
}

async fn get_consents(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(service.consents(user.user_id).await?))
}

/// `{marketing?, analytics?, tracking?}`: booleans; absent purposes stay as they are.
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

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

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

fn status(row: &ExportRow) -> Value {
    let ready = row.state == "ready";
    json!({
        "jobId": row.id,
        "status": row.state,
        "createdAt": row.created_at,
        "startedAt": row.started_at,
        "completedAt": row.completed_at,
        "expiresAt": row.expires_at,
        "size": row.size_bytes,
        "error": row.error,
        "downloadUrl": ready.then(|| format!("/api/v1/users/data-export/{}/download", row.id)),
    })
}

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

async fn recent_exports(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    let rows = service.recent_exports(user.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "content": rows.iter().map(status).collect::<Vec<_>>() })))
}

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

#[derive(Deserialize)]
struct Reauth {
    password: Option<String>,
}

#[derive(Deserialize)]
struct Credentials {
    email: Option<String>,
    password: Option<String>,
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
    Ok(HttpResponse::Accepted().json(json!({ "scheduledFor": at })))
}

/// `{email, password}` of a closed account → 200 with the login's body.
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
