//! HTTP: parse, authorize, call the service, shape the answer.

use std::time::Instant;

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::cards::{self, MAX_IMPORT_BYTES};
use super::listing::{Filters, Sort};
use super::lorebook;
use super::rules::{INPUT_FIELDS, Input};
use super::service::{CardFile, CatalogError, Service, Viewer};
use super::store::CharacterRow;
use crate::platform::http::{
    AppError, AuthUser, ErrorCode, FieldErrors, MaybeUser, Page, Paging, Role, Routes, search_text,
    strict_body,
};

pub const MAX_PAGE_SIZE: i64 = 100;
const MAX_SEARCH: usize = 200;

pub fn routes(routes: &mut Routes) {
    routes
        .resource("/characters", |r| r.get(list).post(create))
        // Before `/characters/{id}`, which would otherwise take `import` for an id.
        .resource("/characters/import", |r| r.post(import))
        .resource("/characters/{id}", |r| {
            r.get(get).put(replace).patch(patch).delete(delete)
        })
        .resource("/characters/{id}/rating", |r| r.get(rating).post(rate))
        .resource("/characters/{id}/card.json", |r| r.get(card_json))
        .resource("/characters/{id}/card.png", |r| r.get(card_png))
        .resource("/characters/{id}/hide", |r| r.post(hide).delete(unhide))
        .resource("/categories", |r| r.get(categories))
        .resource("/admin/characters", |r| r.get(staff_list))
        .resource("/admin/characters/{id}", |r| r.patch(staff_patch));
}

fn viewer(user: &MaybeUser) -> Viewer {
    match &user.0 {
        None => Viewer::anonymous(),
        Some(user) => Viewer::from(user),
    }
}

impl From<&AuthUser> for Viewer {
    fn from(user: &AuthUser) -> Self {
        Self {
            user_id: Some(user.user_id),
            role: user.role,
            tier: user.tier.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PersonalityView {
    greeting: String,
    tone: String,
    interests: Vec<String>,
    summary: String,
}

/// DESIGN.md's character plus the card fields. Listings leave out the long card fields.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CharacterView {
    id: Uuid,
    name: String,
    description: String,
    avatar_url: Option<String>,
    avatar_media_id: Option<Uuid>,
    category: String,
    traits: Vec<String>,
    personality: PersonalityView,
    rating: f32,
    rating_count: i32,
    conversation_count: i64,
    is_public: bool,
    visibility: String,
    nsfw: bool,
    tags: Vec<String>,
    owner_id: Option<Uuid>,
    hidden: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The long card fields: in a character's detail, not in listings (the document
    /// describes the detail as [`CharacterDetail`]).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    card: Option<CardFields>,
}

/// A character's detail: the listing's fields and the card's.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // A schema only: the detail is a `CharacterView` with its card.
struct CharacterDetail {
    #[serde(flatten)]
    character: CharacterView,
    #[serde(flatten)]
    card: CardFields,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CardFields {
    scenario: String,
    example_dialogue: String,
    alternate_greetings: Vec<String>,
    system_prompt: String,
    post_history_instructions: String,
    creator_notes: String,
    creator: String,
    character_version: String,
    #[schema(value_type = Object)]
    extensions: Value,
    /// The character book, or `null`.
    #[schema(value_type = Option<Object>)]
    lorebook: Value,
}

fn view(row: CharacterRow, full: bool) -> CharacterView {
    let card = full.then(|| CardFields {
        scenario: row.scenario,
        example_dialogue: row.example_dialogue,
        alternate_greetings: row.alternate_greetings,
        system_prompt: row.system_prompt,
        post_history_instructions: row.post_history_instructions,
        creator_notes: row.creator_notes,
        creator: row.creator,
        character_version: row.character_version,
        extensions: row.extensions,
        lorebook: row.lorebook.as_ref().map_or(Value::Null, lorebook::to_api),
    });
    CharacterView {
        id: row.id,
        name: row.name,
        description: row.description,
        avatar_url: super::avatar_url(row.avatar_media_id),
        avatar_media_id: row.avatar_media_id,
        category: row.category,
        traits: row.traits,
        personality: PersonalityView {
            greeting: row.greeting,
            tone: row.tone,
            interests: row.interests,
            summary: row.personality_summary,
        },
        // Two decimals are all a star average needs.
        rating: (row.rating * 100.0).round() / 100.0,
        rating_count: row.rating_count,
        conversation_count: row.conversation_count,
        is_public: row.visibility == "public",
        visibility: row.visibility,
        nsfw: row.nsfw,
        tags: row.tags,
        owner_id: row.owner_id,
        hidden: row.hidden_at.is_some(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        card,
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[param(minimum = 0, maximum = 100000)]
    page: Option<i64>,
    /// Above 100 is read as 100.
    #[param(minimum = 1)]
    size: Option<i64>,
    /// A category id from `GET /categories`.
    category: Option<String>,
    /// Words of the name, description or tags.
    #[param(max_length = 200)]
    search: Option<String>,
    tag: Option<String>,
    /// `popular` (default, also when empty), `rating` or `new`.
    #[param(pattern = "^(|popular|rating|new)$")]
    sort: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[utoipa::path(get, path = "/characters", tag = "catalog",
    security((), ("bearer" = [])), params(ListParams),
    responses((status = 200, description = "Characters the caller may see (public ones, and \
        their own).", body = Page<CharacterView>)))]
async fn list(
    service: web::Data<Service>,
    user: MaybeUser,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    let params = params.into_inner();
    let mut errors = FieldErrors::new();
    let page = params.page.unwrap_or(0);
    if !(0..=100_000).contains(&page) {
        errors.add("page", "must be between 0 and 100000");
    }
    let size = params.size.unwrap_or(20);
    if size < 1 {
        errors.add("size", "must be at least 1");
    }
    let size = size.min(MAX_PAGE_SIZE);
    let sort = match params.sort.as_deref().map(str::trim) {
        None | Some("") => Sort::Popular,
        Some(value) => Sort::parse(value).unwrap_or_else(|| {
            errors.add("sort", "must be popular, rating or new");
            Sort::Popular
        }),
    };
    let search = non_empty(params.search);
    if search
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SEARCH)
    {
        errors.add("search", "must be at most 200 characters");
    }
    let filters = Filters {
        category: non_empty(params.category).map(|c| c.to_lowercase()),
        tag: non_empty(params.tag).map(|t| t.to_lowercase()),
        search,
    };
    errors.finish(())?;
    let found = service
        .list(&viewer(&user), filters, sort, page, size)
        .await?;
    let content: Vec<_> = found
        .content
        .into_iter()
        .map(|row| view(row, false))
        .collect();
    Ok(HttpResponse::Ok().json(Paging { page, size }.answer(content, found.total)))
}

/// The detail is the same for everyone who may see it, so a character anyone may open is
/// answered from the read cache (`cache.rs`).
#[utoipa::path(get, path = "/characters/{id}", tag = "catalog",
    security((), ("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")),
    responses((status = 200, description = "The character with its card fields.",
        body = CharacterDetail)))]
async fn get(
    service: web::Data<Service>,
    user: MaybeUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let json = |body: Bytes| {
        HttpResponse::Ok()
            .content_type(header::ContentType::json())
            .body(body)
    };
    if let Some(body) = service.cached_detail(id).await {
        return Ok(json(body));
    }
    let read_at = Instant::now();
    let row = service.get(&viewer(&user), id).await?;
    let shared = Viewer::anyone_may_see(&row);
    let body = Bytes::from(serde_json::to_vec(&view(row, true)).map_err(AppError::internal)?);
    if shared {
        service.remember_detail(id, body.clone(), read_at).await;
    }
    Ok(json(body))
}

/// A card's free-form parts (`extensions`, `lorebook`) come from other tools as they are:
/// NUL characters, which PostgreSQL cannot store, are dropped from them rather than refused.
fn free_form_cleaned(mut body: Value) -> Value {
    for field in ["extensions", "lorebook"] {
        if let Some(value) = body.get_mut(field) {
            *value = crate::platform::db::strip_nul(value.take());
        }
    }
    body
}

#[utoipa::path(post, path = "/characters", tag = "catalog",
    security(("bearer" = [])), request_body = Input,
    responses((status = 201, description = "Created, owned by the caller.", body = CharacterDetail)))]
async fn create(
    service: web::Data<Service>,
    user: AuthUser,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let input: Input = strict_body(free_form_cleaned(body.into_inner()), INPUT_FIELDS)?;
    let row = service.create(&Viewer::from(&user), input).await?;
    Ok(HttpResponse::Created().json(view(row, true)))
}

async fn update(
    service: web::Data<Service>,
    user: AuthUser,
    id: Uuid,
    body: Value,
    replace: bool,
) -> Result<HttpResponse, AppError> {
    let input: Input = strict_body(free_form_cleaned(body), INPUT_FIELDS)?;
    let row = service
        .update(&Viewer::from(&user), id, input, replace)
        .await?;
    Ok(HttpResponse::Ok().json(view(row, true)))
}

#[utoipa::path(put, path = "/characters/{id}", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")), request_body = Input,
    responses((status = 200, description = "Replaced (absent fields are reset).",
        body = CharacterDetail)))]
async fn replace(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    update(service, user, id.into_inner(), body.into_inner(), true).await
}

#[utoipa::path(patch, path = "/characters/{id}", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")), request_body = Input,
    responses((status = 200, description = "Changed (absent fields kept).", body = CharacterDetail)))]
async fn patch(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    update(service, user, id.into_inner(), body.into_inner(), false).await
}

#[utoipa::path(delete, path = "/characters/{id}", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")),
    responses((status = 204, description = "Deleted.")))]
async fn delete(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    service
        .delete(&Viewer::from(&user), id.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RatingBody {
    /// A whole number (`4` or `4.0`).
    #[schema(value_type = i64, minimum = 1, maximum = 5)]
    stars: serde_json::Number,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RatingView {
    rating: f32,
    rating_count: i32,
    /// The caller's stars, if they rated it.
    my_rating: Option<i16>,
}

#[utoipa::path(post, path = "/characters/{id}/rating", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")), request_body = RatingBody,
    responses((status = 200, description = "The caller's rating is recorded.", body = RatingView)))]
async fn rate(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let body: RatingBody = strict_body(body.into_inner(), &["stars"])?;
    // JSON has one number type: `4.0` is the whole number 4.
    let whole = body.stars.as_i64().or_else(|| {
        body.stars
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= 1e6)
            .map(|f| f as i64)
    });
    let stars = whole
        .and_then(|s| i16::try_from(s).ok())
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| {
            let mut errors = FieldErrors::new();
            errors.add("stars", "must be a whole number from 1 to 5");
            errors.into_error()
        })?;
    let (rating, count, stars) = service
        .rate(&Viewer::from(&user), id.into_inner(), stars)
        .await?;
    Ok(HttpResponse::Ok().json(RatingView {
        rating: (rating * 100.0).round() / 100.0,
        rating_count: count,
        my_rating: Some(stars),
    }))
}

#[utoipa::path(get, path = "/characters/{id}/rating", tag = "catalog",
    security((), ("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")),
    responses((status = 200, description = "The average, and the caller's own stars.",
        body = RatingView)))]
async fn rating(
    service: web::Data<Service>,
    user: MaybeUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let (rating, count, mine) = service.rating(&viewer(&user), id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(RatingView {
        rating: (rating * 100.0).round() / 100.0,
        rating_count: count,
        my_rating: mine,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportParams {
    /// `public`, `unlisted` or `private` (default `private`).
    #[param(pattern = "^(public|unlisted|private)$")]
    visibility: Option<String>,
}

/// The card file is the raw body (drag and drop sends it as is), read up to the limit: past
/// it the answer is 413 at once, without reading the rest.
#[utoipa::path(post, path = "/characters/import", tag = "catalog",
    security(("bearer" = [])), params(ImportParams),
    request_body(description = "A character card: Character Card V1/V2/V3 JSON, a PNG with \
        the card in its text chunk, or a CHARX archive. The format is read from the bytes, \
        whatever the `Content-Type` (except a multipart form, which is refused).",
        content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "The imported character (PNG art becomes its avatar).",
        body = CharacterDetail)))]
async fn import(
    service: web::Data<Service>,
    user: AuthUser,
    request: actix_web::HttpRequest,
    params: web::Query<ImportParams>,
    mut body: web::Payload,
) -> Result<HttpResponse, AppError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("multipart/") {
        return Err(AppError::new(
            ErrorCode::UnsupportedMediaType,
            "Send the card file itself as the request body, not a form.",
        ));
    }
    let visibility =
        cards::visibility_override(params.visibility.as_deref()).map_err(CatalogError::Card)?;
    let mut file = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|_| AppError::bad_request("The request body could not be read."))?;
        if file.len() + chunk.len() > MAX_IMPORT_BYTES {
            return Err(AppError::new(
                ErrorCode::PayloadTooLarge,
                format!("A card file may be at most {MAX_IMPORT_BYTES} bytes."),
            ));
        }
        file.extend_from_slice(&chunk);
    }
    if file.is_empty() {
        let mut errors = FieldErrors::new();
        errors.add(
            "card",
            "send the card file (JSON, PNG or CHARX) as the request body",
        );
        return Err(errors.into_error());
    }
    let row = service
        .import(&Viewer::from(&user), file, visibility)
        .await?;
    Ok(HttpResponse::Created().json(view(row, true)))
}

fn download(file: CardFile, content_type: &'static str) -> HttpResponse {
    let disposition = ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![DispositionParam::Filename(file.name)],
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(disposition)
        .body(file.bytes)
}

#[utoipa::path(get, path = "/characters/{id}/card.json", tag = "catalog",
    security((), ("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")),
    responses((status = 200, description = "A Character Card V3 file.",
        content_type = "application/json", body = Object)))]
async fn card_json(
    service: web::Data<Service>,
    user: MaybeUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let file = service
        .export_card(&viewer(&user), id.into_inner(), false)
        .await?;
    Ok(download(file, "application/json"))
}

#[utoipa::path(get, path = "/characters/{id}/card.png", tag = "catalog",
    security((), ("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")),
    responses((status = 200, description = "The card inside the avatar (or a plain image).",
        content_type = "image/png", body = Vec<u8>)))]
async fn card_png(
    service: web::Data<Service>,
    user: MaybeUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let file = service
        .export_card(&viewer(&user), id.into_inner(), true)
        .await?;
    Ok(download(file, "image/png"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct HideBody {
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

#[utoipa::path(post, path = "/characters/{id}/hide", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")), request_body(content = Option<HideBody>),
    responses((status = 200, description = "Hidden from listings (moderators).",
        body = CharacterDetail)))]
async fn hide(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: Bytes,
) -> Result<HttpResponse, AppError> {
    // The service checks the role too, but the body is read first: refuse before reading it.
    user.require(Role::Moderator)?;
    // No body, or `null`: no reason. A body that is not JSON is refused, not ignored.
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| AppError::bad_request("The body is not valid JSON."))?
    };
    let reason = match body {
        Value::Null => None,
        body => strict_body::<HideBody>(body, &["reason"])?.reason,
    };
    if reason.as_ref().is_some_and(|r| r.chars().count() > 1_000) {
        let mut errors = FieldErrors::new();
        errors.add("reason", "must be at most 1000 characters");
        return Err(errors.into_error());
    }
    let row = service
        .set_hidden(&Viewer::from(&user), id.into_inner(), true, reason)
        .await?;
    Ok(HttpResponse::Ok().json(view(row, true)))
}

#[utoipa::path(delete, path = "/characters/{id}/hide", tag = "catalog",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")),
    responses((status = 200, description = "Shown again (moderators).", body = CharacterDetail)))]
async fn unhide(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, AppError> {
    let row = service
        .set_hidden(&Viewer::from(&user), id.into_inner(), false, None)
        .await?;
    Ok(HttpResponse::Ok().json(view(row, true)))
}

#[utoipa::path(get, path = "/categories", tag = "catalog",
    responses((status = 200, description = "Categories with how many public characters each has.",
        body = Vec<CategoryView>)))]
async fn categories(service: web::Data<Service>) -> Result<HttpResponse, AppError> {
    let categories = service.categories().await?;
    let body: Vec<CategoryView> = categories
        .iter()
        .map(|c| CategoryView {
            id: c.slug.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            character_count: c.count,
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CategoryView {
    id: String,
    name: String,
    description: String,
    character_count: i64,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StaffListParams {
    /// Only hidden (`true`) or only shown (`false`) characters.
    hidden: Option<bool>,
    search: Option<String>,
    #[param(minimum = 0, maximum = 100000)]
    page: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    size: Option<i64>,
}

/// A character as the moderation list shows it: the catalog view plus when and why it
/// was hidden.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct StaffView {
    #[serde(flatten)]
    character: CharacterView,
    hidden_at: Option<DateTime<Utc>>,
    hidden_reason: Option<String>,
}

fn staff_view(row: CharacterRow, reason: Option<String>) -> StaffView {
    StaffView {
        hidden_at: row.hidden_at,
        character: view(row, false),
        hidden_reason: reason,
    }
}

/// `GET /admin/characters?hidden=&search=&page=&size=` (moderators and admins).
#[utoipa::path(get, path = "/admin/characters", tag = "administration",
    security(("bearer" = [])), params(StaffListParams),
    responses((status = 200, description = "Characters for moderation (moderators and admins).",
        body = Page<StaffView>)))]
async fn staff_list(
    service: web::Data<Service>,
    user: AuthUser,
    params: web::Query<StaffListParams>,
) -> Result<HttpResponse, AppError> {
    user.require(Role::Moderator)?;
    let params = params.into_inner();
    let mut errors = FieldErrors::new();
    let paging = Paging::checked(params.page, params.size, &mut errors);
    errors.finish(())?;
    let search = search_text(params.search, MAX_SEARCH);
    let (rows, total) = service
        .staff_list(&Viewer::from(&user), params.hidden, search, paging)
        .await?;
    let content = rows
        .into_iter()
        .map(|(row, reason)| staff_view(row, reason))
        .collect::<Vec<_>>();
    Ok(HttpResponse::Ok().json(paging.answer(content, total)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StaffPatch {
    hidden: bool,
    /// Why (kept with the audit entry), at most 1000 characters.
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

/// `PATCH /admin/characters/{id} {hidden, reason?}`: hide or show again, with a reason.
#[utoipa::path(patch, path = "/admin/characters/{id}", tag = "administration",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The character.")), request_body = StaffPatch,
    responses((status = 200, description = "Hidden or shown, with the reason recorded.",
        body = StaffView)))]
async fn staff_patch(
    service: web::Data<Service>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    user.require(Role::Moderator)?;
    let patch: StaffPatch = strict_body(body.into_inner(), &["hidden", "reason"])?;
    let reason = patch
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 1_000) {
        let mut errors = FieldErrors::new();
        errors.add("reason", "must be at most 1000 characters");
        return Err(errors.into_error());
    }
    let row = service
        .set_hidden(
            &Viewer::from(&user),
            id.into_inner(),
            patch.hidden,
            reason.clone(),
        )
        .await?;
    let reason = reason.filter(|_| patch.hidden);
    Ok(HttpResponse::Ok().json(staff_view(row, reason)))
}

/// This module's part of the document: a create and a replace need `name`, which a patch
/// may leave out (one `Input` schema serves the three).
pub(super) fn docs() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder};
    use utoipa::openapi::{Ref, RefOr};
    let mut doc = Docs::openapi();
    let named = AllOfBuilder::new()
        .item(Ref::from_schema_name("Input"))
        .item(ObjectBuilder::new().required("name"))
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        let operation = match path.as_str() {
            "/characters" => item.post.as_mut(),
            "/characters/{id}" => item.put.as_mut(),
            _ => None,
        };
        let contents = operation
            .and_then(|op| op.request_body.as_mut())
            .map(|body| body.content.values_mut());
        for content in contents.into_iter().flatten() {
            content.schema = Some(RefOr::T(named.clone().into()));
        }
    }
    doc
}

/// This module's operations, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(
        list,
        create,
        import,
        get,
        replace,
        patch,
        delete,
        rating,
        rate,
        card_json,
        card_png,
        hide,
        unhide,
        categories,
        staff_list,
        staff_patch
    ),
    components(schemas(Input))
)]
pub(super) struct Docs;
