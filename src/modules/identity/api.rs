//! HTTP: parse, authorize, call the service, shape the answer.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::admin::{AdminChange, AdminUser};
use super::rules::{MAX_BIO_LEN, check_display_name, level_for_experience, next_level_at};
use super::service::{Issued, Service};
use super::store::{AuditRow, ProfileChanges, UserRow};
use crate::modules::billing::{Grant, Standing};
use crate::modules::media::Media;
use crate::platform::http::{
    AppError, AuthUser, ClientInfo, FieldErrors, Paging, Role, strict_body,
};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/register").route(web::post().to(register)))
        .service(web::resource("/auth/login").route(web::post().to(login)))
        .service(web::resource("/auth/refresh").route(web::post().to(refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(logout)))
        .service(web::resource("/auth/verify-email").route(web::post().to(verify_email)))
        .service(web::resource("/auth/forgot-password").route(web::post().to(forgot_password)))
        .service(web::resource("/auth/reset-password").route(web::post().to(reset_password)))
        .service(
            web::resource("/users/profile")
                .route(web::get().to(get_profile))
                .route(web::put().to(put_profile)),
        )
        .service(web::resource("/users/password").route(web::put().to(change_password)))
        .service(web::resource("/admin/audit-log").route(web::get().to(audit_log)))
        .service(web::resource("/admin/users").route(web::get().to(admin_users)))
        .service(web::resource("/admin/users/{id}").route(web::patch().to(admin_patch_user)));
}

/// The `user` object of DESIGN.md §2, plus what the profile page needs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserView {
    id: Uuid,
    email: String,
    display_name: String,
    avatar_url: Option<String>,
    avatar_media_id: Option<Uuid>,
    bio: Option<String>,
    level: u32,
    experience: i64,
    next_level_at: i64,
    role: String,
    subscription: Standing,
    email_verified: bool,
    preferences: Value,
    created_at: DateTime<Utc>,
}

impl UserView {
    fn new(user: UserRow, subscription: Standing) -> Self {
        let level = level_for_experience(user.experience);
        Self {
            id: user.id,
            email: user.email,
            display_name: user.display_name,
            avatar_url: user.avatar_media_id.map(Media::url),
            avatar_media_id: user.avatar_media_id,
            bio: user.bio,
            level,
            experience: user.experience,
            next_level_at: next_level_at(level),
            role: user.role,
            subscription,
            email_verified: user.email_verified_at.is_some(),
            preferences: user.preferences,
            created_at: user.created_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokensView {
    token: String,
    refresh_token: String,
    expires_in: u64,
    user: UserView,
}

impl From<Issued> for TokensView {
    fn from(issued: Issued) -> Self {
        Self {
            token: issued.token,
            refresh_token: issued.refresh_token,
            expires_in: issued.expires_in,
            user: UserView::new(issued.user, issued.subscription),
        }
    }
}

/// The `user` object, as `GET /users/profile` shows it (an export's `profile.json`).
pub(super) fn user_body(user: UserRow, subscription: Standing) -> Value {
    serde_json::to_value(UserView::new(user, subscription)).unwrap_or_default()
}

/// The body of register, login and refresh (and of an account's restore).
pub(super) fn tokens_body(issued: Issued) -> Value {
    serde_json::to_value(TokensView::from(issued)).unwrap_or_default()
}

/// Parses a body of exactly `fields`, all required strings, in that order. Unknown, missing
/// and non-string fields are each reported by name.
fn credentials<const N: usize>(body: Value, fields: [&str; N]) -> Result<[String; N], AppError> {
    let mut parsed: Map<String, Value> = strict_body(body, &fields)?;
    let mut errors = FieldErrors::new();
    let values = fields.map(|field| match parsed.remove(field) {
        Some(Value::String(value)) => value,
        Some(Value::Null) | None => {
            errors.add(field, "is required");
            String::new()
        }
        Some(_) => {
            errors.add(field, "must be a string");
            String::new()
        }
    });
    errors.finish(values)
}

async fn register(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [email, password, display_name] =
        credentials(body.into_inner(), ["email", "password", "displayName"])?;
    let issued = service
        .register(&email, password, &display_name, client)
        .await?;
    Ok(HttpResponse::Created().json(TokensView::from(issued)))
}

async fn login(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [email, password] = credentials(body.into_inner(), ["email", "password"])?;
    let issued = service.login(&email, password, client).await?;
    Ok(HttpResponse::Ok().json(TokensView::from(issued)))
}

async fn refresh(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [token] = credentials(body.into_inner(), ["refreshToken"])?;
    let issued = service.refresh(&token, client).await?;
    Ok(HttpResponse::Ok().json(TokensView::from(issued)))
}

async fn logout(
    service: web::Data<Service>,
    user: AuthUser,
    client: ClientInfo,
) -> Result<HttpResponse, AppError> {
    service
        .logout(user.user_id, user.session_id, client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn verify_email(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [token] = credentials(body.into_inner(), ["token"])?;
    service.verify_email(&token, client).await?;
    Ok(HttpResponse::Ok().json(json!({ "emailVerified": true })))
}

async fn forgot_password(
    service: web::Data<Service>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [email] = credentials(body.into_inner(), ["email"])?;
    service.forgot_password(&email).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "message": "If an account uses this address, a link to reset its password is on its way."
    })))
}

async fn reset_password(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [token, password] = credentials(body.into_inner(), ["token", "password"])?;
    service.reset_password(&token, password, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn change_password(
    service: web::Data<Service>,
    user: AuthUser,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [current, new] = credentials(body.into_inner(), ["currentPassword", "newPassword"])?;
    service
        .change_password(user.user_id, user.session_id, current, new, client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn get_profile(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    // The account and its subscription are read together.
    let (row, standing) = futures_util::try_join!(
        async { Ok::<_, AppError>(service.user(user.user_id).await?) },
        async { Ok::<_, AppError>(service.subscriptions.standing(user.user_id).await?) },
    )?;
    profile_view(&service, &user, row, standing).await
}

/// The profile: the user, and how much of their storage quota their media take.
async fn profile_view(
    service: &Service,
    user: &AuthUser,
    row: UserRow,
    standing: Standing,
) -> Result<HttpResponse, AppError> {
    let (used, quota) = service.storage(user.user_id, &standing.tier).await?;
    let mut view =
        serde_json::to_value(UserView::new(row, standing)).map_err(AppError::internal)?;
    view["storage"] = json!({ "usedBytes": used, "quotaBytes": quota });
    Ok(HttpResponse::Ok().json(view))
}

/// `null` clears `bio` / `avatarMediaId`; an absent field stays as it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileUpdate {
    display_name: Option<String>,
    #[serde(default, with = "serde_with_null")]
    bio: Option<Option<String>>,
    #[serde(default, with = "serde_with_null")]
    avatar_url: Option<Option<String>>,
    #[serde(default, with = "serde_with_null")]
    avatar_media_id: Option<Option<Uuid>>,
    preferences: Option<Map<String, Value>>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

const PROFILE_FIELDS: &[&str] = &[
    "displayName",
    "bio",
    "avatarUrl",
    "avatarMediaId",
    "preferences",
];
const THEMES: &[&str] = &["light", "dark", "system"];

fn check_preferences(prefs: Map<String, Value>, errors: &mut FieldErrors) -> Value {
    for (key, value) in &prefs {
        let ok = match key.as_str() {
            "language" => value.as_str().is_some_and(|l| {
                (2..=16).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }),
            "theme" => value.as_str().is_some_and(|t| THEMES.contains(&t)),
            "notifications" => value.is_boolean(),
            _ => {
                errors.add(format!("preferences.{key}"), "is not accepted here");
                continue;
            }
        };
        if !ok {
            let problem = match key.as_str() {
                "language" => "must be a language tag such as \"en\" or \"fr-CA\"",
                "theme" => "must be light, dark or system",
                _ => "must be true or false",
            };
            errors.add(format!("preferences.{key}"), problem);
        }
    }
    Value::Object(prefs)
}

async fn put_profile(
    service: web::Data<Service>,
    user: AuthUser,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let update: ProfileUpdate = strict_body(body.into_inner(), PROFILE_FIELDS)?;
    let mut errors = FieldErrors::new();
    let mut changes = ProfileChanges::default();
    if let Some(name) = update.display_name {
        changes.display_name = check_display_name(&name)
            .map_err(|p| errors.add("displayName", p))
            .ok();
    }
    if let Some(bio) = update.bio {
        if bio
            .as_ref()
            .is_some_and(|b| b.chars().count() > MAX_BIO_LEN)
        {
            errors.add("bio", "must be at most 500 characters");
        }
        changes.bio = Some(bio.filter(|b| !b.trim().is_empty()));
    }
    if update.avatar_url.is_some() {
        errors.add(
            "avatarUrl",
            "is set through avatarMediaId: upload the image to /api/v1/media/upload, then give its id",
        );
    }
    if let Some(avatar) = update.avatar_media_id {
        if let Some(id) = avatar
            && !service.avatar_usable(user.user_id, id).await?
        {
            errors.add("avatarMediaId", "must be the id of an image you uploaded");
        }
        changes.avatar_media_id = Some(avatar);
    }
    if let Some(prefs) = update.preferences {
        changes.preferences = Some(check_preferences(prefs, &mut errors));
    }
    let changes = errors.finish(changes)?;
    let row = service
        .update_profile(user.user_id, changes, client)
        .await?;
    let standing = service.subscriptions.standing(user.user_id).await?;
    profile_view(&service, &user, row, standing).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuditQuery {
    user_id: Option<Uuid>,
    action: Option<String>,
    #[serde(default)]
    page: i64,
    size: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditView {
    id: Uuid,
    occurred_at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    user_id: Option<Uuid>,
    action: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    old_value: Option<Value>,
    new_value: Option<Value>,
    ip: Option<String>,
    user_agent: Option<String>,
    outcome: String,
}

impl From<AuditRow> for AuditView {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            occurred_at: row.occurred_at,
            actor_id: row.actor_id,
            user_id: row.subject_id,
            action: row.action,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            old_value: row.old_value,
            new_value: row.new_value,
            ip: row.ip,
            user_agent: row.user_agent,
            outcome: row.outcome,
        }
    }
}

const MAX_PAGE_SIZE: i64 = 100;

async fn audit_log(
    service: web::Data<Service>,
    user: AuthUser,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    user.require(Role::Admin)?;
    let query = query.into_inner();
    let size = query.size.unwrap_or(20).clamp(1, MAX_PAGE_SIZE);
    let page = query.page.clamp(0, 1_000_000);
    let action = query
        .action
        .filter(|a| !a.is_empty())
        .map(|a| a.chars().take(100).collect());
    let (rows, total) = service
        .audit()
        .list(query.user_id, action, page, size)
        .await?;
    let content: Vec<AuditView> = rows.into_iter().map(AuditView::from).collect();
    Ok(HttpResponse::Ok().json(json!({
        "content": content,
        "totalElements": total,
        "totalPages": (total + size - 1) / size,
        "number": page,
        "size": size,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UsersQuery {
    search: Option<String>,
    page: Option<i64>,
    size: Option<i64>,
}

/// An account as the admin page lists it.
fn admin_user_view(user: &AdminUser) -> Value {
    json!({
        "id": user.row.id,
        "email": user.row.email,
        "displayName": user.row.display_name,
        "role": user.row.role,
        "tier": user.subscription.tier,
        "subscription": user.subscription,
        "status": user.status(),
        "emailVerified": user.row.email_verified_at.is_some(),
        "createdAt": user.row.created_at,
        "lastLoginAt": user.row.last_login_at,
    })
}

async fn admin_users(
    service: web::Data<Service>,
    user: AuthUser,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, AppError> {
    user.require(Role::Admin)?;
    let query = query.into_inner();
    let mut errors = FieldErrors::new();
    let paging = Paging::checked(query.page, query.size, &mut errors);
    errors.finish(())?;
    let search = query
        .search
        .map(|s| s.trim().chars().take(200).collect::<String>())
        .filter(|s| !s.is_empty());
    let (users, total) = service.list_users(search, paging).await?;
    let content: Vec<Value> = users.iter().map(admin_user_view).collect();
    Ok(HttpResponse::Ok().json(paging.answer(content, total)))
}

/// `tier` and `validUntil` go together: a tier without `validUntil` lasts until changed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminPatch {
    role: Option<String>,
    tier: Option<String>,
    #[serde(default, with = "serde_with_null")]
    valid_until: Option<Option<DateTime<Utc>>>,
    disabled: Option<bool>,
}

async fn admin_patch_user(
    service: web::Data<Service>,
    user: AuthUser,
    client: ClientInfo,
    id: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    user.require(Role::Admin)?;
    let patch: AdminPatch = strict_body(
        body.into_inner(),
        &["role", "tier", "validUntil", "disabled"],
    )?;
    let mut errors = FieldErrors::new();
    if patch.valid_until.is_some() && patch.tier.is_none() {
        errors.add("validUntil", "goes with tier");
    }
    if let Some(Some(until)) = patch.valid_until
        && until <= Utc::now()
    {
        errors.add("validUntil", "must be in the future");
    }
    if patch.role.is_none() && patch.tier.is_none() && patch.disabled.is_none() {
        errors.add("role", "give role, tier or disabled");
    }
    errors.finish(())?;
    let change = AdminChange {
        role: patch.role,
        tier: patch.tier.map(|tier| Grant {
            tier,
            valid_until: patch.valid_until.flatten(),
        }),
        disabled: patch.disabled,
    };
    let changed = service
        .administer(Some(user.user_id), id.into_inner(), change, &client)
        .await?;
    Ok(HttpResponse::Ok().json(admin_user_view(&changed)))
}
