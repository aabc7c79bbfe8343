//! The media routes: upload (multipart), download (whole or one range), delete.

use actix_files::HttpRange;
use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::TryStreamExt;
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::form::{self, FormError};
use super::images::{ImageError, MAX_PIXELS};
use super::service::{MediaError, Received, Service, disposition, object_key, thumbnail_key};
use super::sniff::Kind;
use super::store::MediaRow;
use crate::platform::http::{
    AppError, AuthUser, ErrorCode, FieldErrors, MaybeUser, Page, Paging, Routes,
};

/// The longest text field of an upload form (`type`, `characterId`).
const TEXT_FIELD_BYTES: usize = 64;

pub fn routes(routes: &mut Routes) {
    routes
        .resource("/media", |r| r.get(list))
        .resource("/media/upload", |r| r.post(upload))
        .resource("/media/{id}", |r| {
            r.get(download).head(download).delete(delete)
        })
        .resource("/media/{id}/thumbnail", |r| {
            r.get(download_thumbnail).head(download_thumbnail)
        });
}

impl From<MediaError> for AppError {
    fn from(error: MediaError) -> Self {
        match error {
            MediaError::NotFound => AppError::not_found(),
            MediaError::Unsupported(kind) => AppError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "The file is not an allowed {kind} format (JPEG, PNG, WebP or GIF images; \
                     MP3, OGG, WAV or M4A audio; MP4 or WebM video), or it does not match `type`."
                ),
            ),
            MediaError::TooLarge { limit } => AppError::new(
                ErrorCode::PayloadTooLarge,
                format!("The file is larger than the {limit} bytes allowed for its type."),
            )
            .with_details(json!({ "limitBytes": limit })),
            MediaError::OverQuota { quota, used } => AppError::new(
                ErrorCode::StorageQuotaExceeded,
                format!(
                    "The file does not fit your storage quota: {used} of {quota} bytes are used. \
                     Delete some media or change plans."
                ),
            )
            .with_details(json!({ "quotaBytes": quota, "usedBytes": used })),
            MediaError::Image(ImageError::TooManyPixels { width, height }) => AppError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "The image is {width}×{height} pixels; at most {MAX_PIXELS} pixels are allowed."
                ),
            )
            .with_details(json!({ "width": width, "height": height, "maxPixels": MAX_PIXELS })),
            MediaError::Image(ImageError::Unreadable(cause)) => AppError::new(
                ErrorCode::UnsupportedMediaType,
                "The image could not be read: its start names a format its contents do not follow.",
            )
            .with_cause(anyhow::anyhow!(cause)),
            MediaError::Cut(cause) => {
                AppError::bad_request("The upload was cut off before it ended.")
                    .with_cause(anyhow::anyhow!(cause))
            }
            MediaError::Db(error) => error.into(),
            MediaError::Store(error) => AppError::unavailable(error),
        }
    }
}

fn form_error(error: FormError) -> AppError {
    match error {
        FormError::NotMultipart => AppError::new(
            ErrorCode::UnsupportedMediaType,
            "Send the upload as multipart/form-data with the fields `file` and `type`.",
        ),
        FormError::TooMuchSkipped => AppError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "The form holds more than {} bytes besides its file and fields.",
                form::SKIP_BYTES
            ),
        ),
        FormError::Payload(cause) => AppError::bad_request("The multipart body could not be read.")
            .with_cause(anyhow::anyhow!(cause.to_string())),
        // Each of these names what is wrong with the form, and holds nothing of its content.
        other => AppError::bad_request(format!("The multipart body could not be read: {other}.")),
    }
}

/// A media object as the API shows it.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaView {
    id: Uuid,
    url: String,
    thumbnail_url: Option<String>,
    /// `ready`: made during the upload (or since); `pending`: a job is making it; `failed`:
    /// the image could not be decoded; `null` for audio and video.
    thumbnail_status: Option<String>,
    width: Option<i32>,
    height: Option<i32>,
    /// `image`, `audio` or `video`.
    #[serde(rename = "type")]
    kind: String,
    size: i64,
    /// Decided from the file's first bytes, not from what the client claimed.
    content_type: String,
    character_id: Option<Uuid>,
    is_public: bool,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl MediaView {
    pub fn new(row: &MediaRow) -> Self {
        let url = super::Media::url(row.id);
        let (thumbnail_url, thumbnail_status) = match row.thumbnail.as_str() {
            "none" => (None, None),
            state @ ("ready" | "pending") => (Some(format!("{url}/thumbnail")), Some(state)),
            state => (None, Some(state)),
        };
        Self {
            id: row.id,
            thumbnail_url,
            thumbnail_status: thumbnail_status.map(str::to_owned),
            url,
            width: row.width,
            height: row.height,
            kind: row.kind.clone(),
            size: row.size,
            content_type: row.content_type.clone(),
            character_id: row.character_id,
            is_public: row.is_public,
            created_at: row.created_at,
        }
    }
}

/// The JSON of a media object (an export's `media.json` entry starts from it).
pub fn view(row: &MediaRow) -> Value {
    serde_json::to_value(MediaView::new(row)).unwrap_or_default()
}

/// Reads a short text field whole; longer ones are refused.
async fn text_field(
    multipart: &mut form::Form<web::Payload>,
    name: &str,
    errors: &mut FieldErrors,
) -> Result<Option<String>, AppError> {
    let mut text = Vec::new();
    while let Some(chunk) = multipart.chunk().await {
        let chunk = chunk.map_err(form_error)?;
        if text.len() + chunk.len() > TEXT_FIELD_BYTES {
            // The rest of the field is skipped when the next one is asked for.
            errors.add(name, "is too long");
            return Ok(None);
        }
        text.extend_from_slice(&chunk);
    }
    match String::from_utf8(text) {
        Ok(text) => Ok(Some(text)),
        Err(_) => {
            errors.add(name, "must be text");
            Ok(None)
        }
    }
}

/// An upload form as it is read.
#[derive(Default)]
struct Form {
    declared: Option<Kind>,
    character: Option<Uuid>,
    received: Option<Received>,
    errors: FieldErrors,
}

impl Form {
    /// Reads the fields in whatever order they come; the file streams to the store.
    async fn read(
        &mut self,
        service: &Service,
        owner: Uuid,
        quota: Option<u64>,
        multipart: &mut form::Form<web::Payload>,
    ) -> Result<(), AppError> {
        while let Some(part) = multipart.next_part().await.map_err(form_error)? {
            let name = part.name;
            match name.as_str() {
                "type" => {
                    if let Some(text) = text_field(multipart, "type", &mut self.errors).await? {
                        self.declared = Kind::parse(&text);
                        if self.declared.is_none() {
                            self.errors.add("type", "must be image, audio or video");
                        }
                    }
                }
                "characterId" => {
                    let text = text_field(multipart, "characterId", &mut self.errors).await?;
                    if let Some(text) = text {
                        self.character = text.trim().parse().ok();
                        if self.character.is_none() {
                            self.errors.add("characterId", "must be a UUID");
                        }
                    }
                }
                "file" if self.received.is_none() => {
                    let stream = multipart.body();
                    let received = service.receive(owner, stream, self.declared, quota).await?;
                    self.received = Some(received);
                }
                _ => {
                    let problem = if name == "file" {
                        "only one file per upload"
                    } else {
                        "is not a field of an upload"
                    };
                    // Its content is skipped when the next part is asked for.
                    self.errors.add(name, problem);
                }
            }
        }
        Ok(())
    }

    /// What is missing or wrong once the whole form is read.
    fn check(&mut self) -> Result<(), AppError> {
        if self.received.is_none() {
            self.errors.add("file", "is required");
        }
        if self.declared.is_none() && !self.errors.has("type") {
            self.errors
                .add("type", "is required (image, audio or video)");
        }
        std::mem::take(&mut self.errors).finish(())?;
        // `type` may come after the file: the match is checked again here.
        match (&self.received, self.declared) {
            (Some(received), Some(kind)) if received.format.kind != kind => {
                Err(MediaError::Unsupported(kind.as_str().to_owned()).into())
            }
            _ => Ok(()),
        }
    }
}

#[utoipa::path(post, path = "/media/upload", tag = "media", security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "Stored; an image's thumbnail is made now or by a \
        job (`thumbnailStatus`).", body = MediaView)))]
async fn upload(
    service: web::Data<Service>,
    user: AuthUser,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let boundary =
        form::boundary(request.headers().get(header::CONTENT_TYPE)).map_err(form_error)?;
    let mut multipart = form::Form::new(payload, &boundary);
    let owner = user.user_id;
    let quota = service.quota(&user.tier);
    let mut form = Form::default();
    let read = form.read(&service, owner, quota, &mut multipart).await;
    let checked = read.and_then(|()| form.check());
    let received = match (checked, form.received) {
        (Ok(()), Some(received)) => received,
        (outcome, received) => {
            // Refused after the file was stored: it is removed again.
            if let Some(received) = &received {
                service.discard(owner, received).await;
            }
            return Err(outcome
                .err()
                .unwrap_or_else(|| AppError::bad_request("The upload held no file.")));
        }
    };
    let row = service
        .record(owner, received, form.character, quota)
        .await?;
    Ok(HttpResponse::Created().json(MediaView::new(&row)))
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[param(minimum = 0, maximum = 100000)]
    page: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    size: Option<i64>,
    /// `image`, `audio` or `video`.
    #[serde(rename = "type")]
    #[param(pattern = "^(image|audio|video)$")]
    kind: Option<String>,
}

/// The upload form, for the OpenAPI document (the handler reads the parts as they stream).
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
struct UploadForm {
    /// The file. Its type is decided from its bytes: JPEG, PNG, WebP, GIF; MP3, OGG, WAV,
    /// M4A; MP4, WebM.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// `image`, `audio` or `video`: must match the file.
    #[schema(rename = "type", pattern = "^(image|audio|video)$")]
    kind: String,
    /// A character of the caller's that this media belongs to.
    #[schema(required = false)]
    character_id: Uuid,
}

/// The caller's own media, newest first, a page at a time (to see what takes their quota).
#[utoipa::path(get, path = "/media", tag = "media", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "The caller's media, newest first.",
        body = Page<MediaView>)))]
async fn list(
    service: web::Data<Service>,
    user: AuthUser,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    let mut errors = FieldErrors::new();
    let paging = Paging::checked(params.page, params.size, &mut errors);
    let kind = match params.kind.as_deref() {
        None => None,
        Some(text) => {
            let kind = Kind::parse(text);
            if kind.is_none() {
                errors.add("type", "must be image, audio or video");
            }
            kind
        }
    };
    errors.finish(())?;
    let (rows, total) = service
        .list(user.user_id, kind, paging.offset(), paging.size)
        .await?;
    let content: Vec<MediaView> = rows.iter().map(MediaView::new).collect();
    Ok(HttpResponse::Ok().json(paging.answer(content, total)))
}

/// One stored object to serve: a media's file or its thumbnail.
struct Served {
    key: object_store::path::Path,
    content_type: String,
    size: u64,
    /// Quoted, as HTTP wants it.
    etag: String,
}

#[utoipa::path(get, path = "/media/{id}", tag = "media", security((), ("bearer" = [])), params(("id" = Uuid, Path, description = "The media.")),
    responses((status = 200, description = "The bytes, with the type sniffed at upload (`Range` gives \
        206 with one part).",
        content((Vec<u8> = "image/*"), (Vec<u8> = "audio/*"), (Vec<u8> = "video/*"))),
        (status = 206, description = "The range asked for.",
        content((Vec<u8> = "image/*"), (Vec<u8> = "audio/*"), (Vec<u8> = "video/*"))),
        (status = 302, description = "With presigned downloads on: where to fetch it."),
        (status = 304, description = "Not modified since the `ETag` sent.")))]
async fn download(
    service: web::Data<Service>,
    user: MaybeUser,
    request: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let viewer = user.0.map(|user| user.user_id);
    let row = service.visible(viewer, id.into_inner()).await?;
    let served = Served {
        key: object_key(row.owner_id, row.id),
        content_type: row.content_type.clone(),
        size: u64::try_from(row.size).unwrap_or(0),
        // A media's bytes never change (an edit is a new upload), so its id names them.
        etag: format!("\"{}\"", row.id),
    };
    serve(&service, &request, &row, served).await
}

#[utoipa::path(get, path = "/media/{id}/thumbnail", tag = "media",
    security((), ("bearer" = [])), params(("id" = Uuid, Path, description = "The media.")),
    responses((status = 200, description = "The bytes, with the type sniffed at upload (`Range` gives \
        206 with one part).",
        content((Vec<u8> = "image/*"), (Vec<u8> = "audio/*"), (Vec<u8> = "video/*"))),
        (status = 206, description = "The range asked for.",
        content((Vec<u8> = "image/*"), (Vec<u8> = "audio/*"), (Vec<u8> = "video/*"))),
        (status = 302, description = "With presigned downloads on: where to fetch it."),
        (status = 304, description = "Not modified since the `ETag` sent.")))]
async fn download_thumbnail(
    service: web::Data<Service>,
    user: MaybeUser,
    request: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let viewer = user.0.map(|user| user.user_id);
    let row = service.visible(viewer, id.into_inner()).await?;
    match (row.thumbnail.as_str(), &row.thumbnail_type) {
        ("ready", Some(content_type)) => {
            let served = Served {
                key: thumbnail_key(row.owner_id, row.id),
                content_type: content_type.clone(),
                size: row
                    .thumbnail_size
                    .and_then(|size| u64::try_from(size).ok())
                    .unwrap_or(0),
                etag: format!("\"{}-thumb\"", row.id),
            };
            serve(&service, &request, &row, served).await
        }
        ("pending", _) => Err(AppError::new(
            ErrorCode::NotFound,
            "The thumbnail is still being made; try again in a moment.",
        )
        .with_details(json!({ "thumbnailStatus": "pending" }))),
        _ => Err(AppError::not_found()),
    }
}

/// Answers `served` with its headers: conditional (`If-None-Match`), one range, HEAD.
async fn serve(
    service: &Service,
    request: &HttpRequest,
    row: &MediaRow,
    served: Served,
) -> Result<HttpResponse, AppError> {
    let Served {
        key,
        content_type,
        size,
        etag: tag,
    } = served;
    let cache = if row.is_public {
        "public, max-age=3600"
    } else {
        // Owner-only: kept by the owner's browser, checked again before each use.
        "private, no-cache"
    };
    let not_modified = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if not_modified {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .insert_header((header::CACHE_CONTROL, cache))
            .finish());
    }
    // With a store that signs URLs, a GET goes to the store itself for a few minutes; the
    // redirect is not kept, since the URL it names expires.
    if request.method() == actix_web::http::Method::GET
        && let Some(url) = service.presigned(&key, row.id, &content_type).await?
    {
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, url.as_str()))
            .insert_header((header::CACHE_CONTROL, "private, no-store"))
            .finish());
    }
    // One range is served as asked; several (rare) get the whole file, as HTTP allows.
    let range = match request
        .headers()
        .get(header::RANGE)
        .map(HeaderValue::to_str)
    {
        Some(Ok(text)) if size > 0 => match HttpRange::parse(text, size) {
            Ok(ranges) => match ranges.as_slice() {
                [one] => Some((one.start, one.start + one.length - 1)),
                _ => None,
            },
            Err(_) if text.trim_start().starts_with("bytes=") => {
                let mut refused = AppError::new(
                    ErrorCode::RangeNotSatisfiable,
                    format!("The range is outside the file, which has {size} bytes."),
                )
                .error_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    refused.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return Ok(refused);
            }
            Err(_) => None,
        },
        _ => None,
    };
    let disposition = disposition(row.id, &content_type);
    let length = range.map_or(size, |(first, last)| last - first + 1);
    let mut response = if range.is_some() {
        HttpResponse::PartialContent()
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type(content_type)
        .insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        // Whatever a browser makes of the bytes, nothing in them runs.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ));
    if let Some((first, last)) = range {
        response.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {first}-{last}/{size}"),
        ));
    }
    if request.method() == actix_web::http::Method::HEAD {
        // A body that says its size and is never read: HEAD answers the headers of a GET,
        // `Content-Length` included, without opening the object.
        let nothing = futures_util::stream::empty::<Result<bytes::Bytes, actix_web::Error>>();
        return Ok(response.body(SizedStream::new(length, nothing)));
    }
    let body = service
        .open(&key, range)
        .await?
        .map_err(|error| actix_web::error::ErrorInternalServerError(error.to_string()));
    Ok(response.no_chunking(length).streaming(body))
}

#[utoipa::path(delete, path = "/media/{id}", tag = "media", security(("bearer" = [])), params(("id" = Uuid, Path, description = "The media.")),
    responses((status = 204, description = "Deleted with its thumbnail; avatars using it have \
        none.")))]
async fn delete(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    service.delete(user.user_id, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `HEAD` of a download: the same headers, no body.
#[utoipa::path(head, path = "/media/{id}", tag = "media", security((), ("bearer" = [])), params(("id" = Uuid, Path, description = "The media.")),
    responses((status = 200, description = "The headers a GET would answer.")))]
#[allow(dead_code)]
fn head_download() {}

#[utoipa::path(head, path = "/media/{id}/thumbnail", tag = "media", security((), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "The media.")), responses((status = 200, description = "The headers a GET would answer.")))]
#[allow(dead_code)]
fn head_thumbnail() {}

/// This module's operations, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(
    list,
    upload,
    download,
    head_download,
    delete,
    download_thumbnail,
    head_thumbnail
))]
pub(super) struct Docs;
