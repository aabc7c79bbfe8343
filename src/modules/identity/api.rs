//! HTTP: parse, authorize, call the service, shape the answer.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::account::Profile;
use super::admin::{AdminChange, AdminUser};
use super::rules::{MAX_BIO_LEN, check_display_name, level_for_experience, next_level_at};
use super::service::{Issued, Service};
use super::store::{AuditRow, ProfileChanges, UserRow};
use crate::modules::billing::{Grant, Standing};
use crate::modules::media::Media;
use crate::platform::http::{
    AppError, AuthUser, ClientInfo, FieldErrors, Page, Paging, Role, Routes, search_text,
    strict_body,
};

pub fn routes(routes: &mut Routes) {
    routes
        .resource("/auth/register", |r| r.post(register))
        .resource("/auth/login", |r| r.post(login))
        .resource("/auth/refresh", |r| r.post(refresh))
        .resource("/auth/logout", |r| r.post(logout))
        .resource("/auth/verify-email", |r| r.post(verify_email))
        .resource("/auth/forgot-password", |r| r.post(forgot_password))
        .resource("/auth/reset-password", |r| r.post(reset_password))
        .resource("/users/profile", |r| r.get(get_profile).put(put_profile))
        .resource("/users/password", |r| r.put(change_password))
        .resource("/admin/audit-log", |r| r.get(audit_log))
        .resource("/admin/users", |r| r.get(admin_users))
        .resource("/admin/users/{id}", |r| r.patch(admin_patch_user));
}

/// The `user` object of DESIGN.md §2, plus what the profile page needs.
#[derive(Serialize, ToSchema)]
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
    /// `{language?, theme?, notifications?}`.
    #[schema(value_type = Object)]
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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TokensView {
    /// The access token (a JWT), sent as `Authorization: Bearer …`.
    token: String,
    /// Opaque; trade it at `POST /auth/refresh` (once) for new tokens.
    refresh_token: String,
    /// The access token's lifetime, in seconds.
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

// The request bodies, for the OpenAPI document (handlers parse with `credentials`, which
// names each wrong field).

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Registration {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 128 characters, not one of the most common passwords.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// 1 to 50 characters once trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    display_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Credentials {
    #[schema(max_length = 254)]
    email: String,
    #[schema(max_length = 1024)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct RefreshRequest {
    refresh_token: String,
}

/// A token from an email (verification).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EmailToken {
    #[schema(min_length = 1, max_length = 256)]
    token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ForgotPassword {
    #[schema(format = Email, max_length = 254)]
    email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ResetPassword {
    #[schema(min_length = 1, max_length = 256)]
    token: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct PasswordChange {
    current_password: String,
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EmailVerified {
    email_verified: bool,
}

#[derive(Serialize, ToSchema)]
struct Notice {
    message: &'static str,
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

#[utoipa::path(post, path = "/auth/register", tag = "identity",
    request_body = Registration,
    responses((status = 201, description = "The account, signed in.", body = TokensView)))]
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

#[utoipa::path(post, path = "/auth/login", tag = "identity",
    request_body = Credentials,
    responses((status = 200, description = "Signed in.", body = TokensView)))]
async fn login(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [email, password] = credentials(body.into_inner(), ["email", "password"])?;
    let issued = service.login(&email, password, client).await?;
    Ok(HttpResponse::Ok().json(TokensView::from(issued)))
}

/// Rotates the refresh token. Presenting one already rotated ends its whole session (401).
#[utoipa::path(post, path = "/auth/refresh", tag = "identity",
    request_body = RefreshRequest,
    responses((status = 200, description = "New tokens; the old refresh token is spent.",
        body = TokensView)))]
async fn refresh(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [token] = credentials(body.into_inner(), ["refreshToken"])?;
    let issued = service.refresh(&token, client).await?;
    Ok(HttpResponse::Ok().json(TokensView::from(issued)))
}

#[utoipa::path(post, path = "/auth/logout", tag = "identity",
    security(("bearer" = [])),
    responses((status = 204, description = "The session is over; its tokens stop working.")))]
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

#[utoipa::path(post, path = "/auth/verify-email", tag = "identity",
    request_body = EmailToken,
    responses((status = 200, description = "The address is verified.", body = EmailVerified)))]
async fn verify_email(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [token] = credentials(body.into_inner(), ["token"])?;
    service.verify_email(&token, client).await?;
    Ok(HttpResponse::Ok().json(EmailVerified {
        email_verified: true,
    }))
}

/// The same answer whether or not an account uses the address.
#[utoipa::path(post, path = "/auth/forgot-password", tag = "identity",
    request_body = ForgotPassword,
    responses((status = 202, description = "A reset link is sent if the account exists.",
        body = Notice)))]
async fn forgot_password(
    service: web::Data<Service>,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [email] = credentials(body.into_inner(), ["email"])?;
    service.forgot_password(&email).await?;
    Ok(HttpResponse::Accepted().json(Notice {
        message: "If an account uses this address, a link to reset its password is on its way.",
    }))
}

#[utoipa::path(post, path = "/auth/reset-password", tag = "identity",
    request_body = ResetPassword,
    responses((status = 204, description = "The password is changed; every session ended.")))]
async fn reset_password(
    service: web::Data<Service>,
    client: ClientInfo,
    body: web::Json<Value>,
) -> Result<HttpResponse, AppError> {
    let [token, password] = credentials(body.into_inner(), ["token", "password"])?;
    service.reset_password(&token, password, client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(put, path = "/users/password", tag = "identity",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204, description = "Changed; every other session ended.")))]
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

#[utoipa::path(get, path = "/users/profile", tag = "identity",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's profile.", body = ProfileView)))]
async fn get_profile(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    Ok(profile_view(service.profile(user.user_id).await?))
}

fn profile_view(profile: Profile) -> HttpResponse {
    HttpResponse::Ok().json(ProfileView {
        user: UserView::new(profile.user, profile.standing),
        storage: Storage {
            used_bytes: profile.used,
            quota_bytes: profile.quota,
        },
    })
}

/// The profile: the `user` object and the storage its media take.
#[derive(Serialize, ToSchema)]
struct ProfileView {
    #[serde(flatten)]
    user: UserView,
    storage: Storage,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Storage {
    used_bytes: u64,
    /// `null`: unlimited.
    quota_bytes: Option<u64>,
}

/// `null` clears `bio` / `avatarMediaId`; an absent field stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileUpdate {
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    display_name: Option<String>,
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<String>, max_length = 500)]
    bio: Option<Option<String>>,
    /// Refused (set `avatarMediaId`), so not in the document.
    #[serde(default, with = "serde_with_null")]
    #[schema(ignore)]
    avatar_url: Option<Option<String>>,
    /// An image the caller uploaded, or `null` for none.
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<Uuid>)]
    avatar_media_id: Option<Option<Uuid>>,
    #[schema(value_type = Option<Preferences>)]
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

/// What `preferences` may hold (each optional); `check_preferences` reads them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Preferences {
    /// A language tag such as `en` or `fr-CA`.
    #[schema(required = false, pattern = "^[A-Za-z0-9-]{2,16}$")]
    language: String,
    #[schema(required = false, pattern = "^(light|dark|system)$")]
    theme: String,
    #[schema(required = false)]
    notifications: bool,
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

/// Changes only what the body names; any other field is refused (422) by name.
#[utoipa::path(put, path = "/users/profile", tag = "identity",
    security(("bearer" = [])),
    request_body = ProfileUpdate,
    responses((status = 200, description = "The profile as changed.", body = ProfileView)))]
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
    service
        .update_profile(user.user_id, changes, client)
        .await?;
    // The change is committed: the profile's one joint read shows it.
    Ok(profile_view(service.profile(user.user_id).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Events about this account.
    user_id: Option<Uuid>,
    /// Events of this action (`auth.login`, `admin.user`…).
    action: Option<String>,
    #[serde(default)]
    page: i64,
    size: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AuditView {
    id: Uuid,
    occurred_at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    user_id: Option<Uuid>,
    action: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// Any JSON: the changed value before and after.
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

#[utoipa::path(get, path = "/admin/audit-log", tag = "administration",
    security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, description = "Audit events, newest first (admins only).",
        body = Page<AuditView>)))]
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
    Ok(HttpResponse::Ok().json(Paging { page, size }.answer(content, total)))
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UsersQuery {
    /// Part of an email or display name.
    search: Option<String>,
    /// From 0.
    #[param(minimum = 0, maximum = 100000)]
    page: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    size: Option<i64>,
}

/// An account as the admin page lists it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AdminUserView {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    tier: String,
    subscription: Standing,
    /// `active`, `disabled` or `pending_deletion`.
    status: &'static str,
    email_verified: bool,
    created_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

fn admin_user_view(user: &AdminUser) -> AdminUserView {
    AdminUserView {
        id: user.row.id,
        email: user.row.email.clone(),
        display_name: user.row.display_name.clone(),
        role: user.row.role.clone(),
        tier: user.subscription.tier.clone(),
        subscription: user.subscription.clone(),
        status: user.status(),
        email_verified: user.row.email_verified_at.is_some(),
        created_at: user.row.created_at,
        last_login_at: user.row.last_login_at,
    }
}

#[utoipa::path(get, path = "/admin/users", tag = "administration",
    security(("bearer" = [])), params(UsersQuery),
    responses((status = 200, description = "Accounts, newest first (admins only).",
        body = Page<AdminUserView>)))]
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
    let search = search_text(query.search, 200);
    let (users, total) = service.list_users(search, paging).await?;
    let content: Vec<AdminUserView> = users.iter().map(admin_user_view).collect();
    Ok(HttpResponse::Ok().json(paging.answer(content, total)))
}

/// `tier` and `validUntil` go together: a tier without `validUntil` lasts until changed.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdminPatch {
    /// `user`, `moderator` or `admin`.
    #[schema(pattern = "^(user|moderator|admin)$")]
    role: Option<String>,
    /// `free`, `premium` or `enterprise`.
    #[schema(pattern = "^(free|premium|enterprise)$")]
    tier: Option<String>,
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    valid_until: Option<Option<DateTime<Utc>>>,
    disabled: Option<bool>,
}

#[utoipa::path(patch, path = "/admin/users/{id}", tag = "administration",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The account.")),
    request_body = AdminPatch,
    responses((status = 200, description = "The account as changed (admins only).",
        body = AdminUserView)))]
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

/// This module's operations, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(
    register,
    login,
    refresh,
    logout,
    verify_email,
    forgot_password,
    reset_password,
    get_profile,
    put_profile,
    change_password,
    audit_log,
    admin_users,
    admin_patch_user
))]
pub(super) struct Docs;
