//! The rules of accounts and sessions. Handlers call these; these call the store.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

use super::audit::{self, Audit};
use super::sessions::Sessions;
use super::store::{self, NewUser, ProfileChanges, UserRow};
use super::{AuditEntry, AuditLog, Experience, Outcome, Progress, emails, password, secret};
use crate::config::Settings;
use crate::platform::Platform;
use crate::platform::db::{Db, DbError};
use crate::platform::http::{AppError, ClientInfo, FieldErrors, TokenKeys, refusal};
use crate::platform::jobs::{self, JobRegistry, NewJob};
use crate::platform::mail;
use crate::platform::ratelimit::{Decision, Limits, Quota};

const VERIFY_EMAIL: &str = "verify_email";
const RESET_PASSWORD: &str = "reset_password";
const VERIFY_TTL: Duration = Duration::from_secs(24 * 3600);
const RESET_TTL: Duration = Duration::from_secs(3600);
const RESET_REQUEST_JOB: &str = "identity.password_reset_requested";
const CLEANUP_JOB: &str = "identity.cleanup";

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_DISPLAY_NAME_LEN: usize = 50;
pub const MAX_BIO_LEN: usize = 500;
pub const MAX_AVATAR_URL_LEN: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid input")]
    Invalid(FieldErrors),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("the refresh token is not valid")]
    InvalidRefresh,
    #[error("no such account")]
    UnknownAccount,
    #[error("rate limited")]
    RateLimited(Decision),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<DieselError> for IdentityError {
    fn from(err: DieselError) -> Self {
        Self::Db(DbError::Query(err))
    }
}

impl IdentityError {
    fn field(name: &str, problem: &str) -> Self {
        let mut errors = FieldErrors::new();
        errors.add(name, problem);
        Self::Invalid(errors)
    }
}

impl From<IdentityError> for AppError {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::Invalid(fields) => fields.into_error(),
            IdentityError::EmailTaken => {
                AppError::conflict("An account with this email cannot be created.")
            }
            IdentityError::InvalidCredentials => {
                AppError::unauthorized("Email or password is incorrect.")
            }
            IdentityError::InvalidRefresh => {
                AppError::unauthorized("The session has ended; log in again.")
            }
            IdentityError::UnknownAccount => AppError::not_found(),
            IdentityError::RateLimited(decision) => refusal(&decision),
            IdentityError::Db(err) => err.into(),
            IdentityError::Other(err) => AppError::internal(err),
        }
    }
}

/// What register, login and refresh answer.
pub struct Issued {
    pub token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub user: UserRow,
}

/// Level `n` needs `50·n·(n−1)` experience: level 2 at 100, 3 at 300, 4 at 600, 5 at 1,000…
/// each level costs 100 more than the one before.
pub fn level_for_experience(experience: i64) -> u32 {
    let mut level = 1u32;
    while next_level_at(level) <= experience {
        level += 1;
    }
    level
}

/// The experience at which level `level + 1` starts.
pub fn next_level_at(level: u32) -> i64 {
    let n = i64::from(level) + 1;
    50 * n * (n - 1)
}

/// Trimmed and lower-cased; checked for shape.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("is required");
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err("must be at most 254 characters");
    }
    match email.parse::<lettre::Address>() {
        Ok(address) if address.domain().contains('.') => Ok(email),
        _ => Err("is not a valid email address"),
    }
}

/// Trimmed, 1 to 50 characters, no control characters.
pub fn check_display_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 {
        Err("is required")
    } else if len > MAX_DISPLAY_NAME_LEN {
        Err("must be at most 50 characters")
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else {
        Ok(name.to_owned())
    }
}

fn is_unique_violation(err: &DieselError) -> bool {
    matches!(
        err,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("users_email_key")
    )
}

#[derive(Clone)]
pub struct Service {
    db: Db,
    tokens: Arc<TokenKeys>,
    settings: Arc<Settings>,
    limits: Limits,
    sessions: Arc<Sessions>,
    audit: Audit,
}

impl Service {
    pub fn new(platform: &Platform) -> Self {
        Self {
            db: platform.db.clone(),
            tokens: platform.tokens.clone(),
            settings: platform.settings.clone(),
            limits: platform.limits.clone(),
            sessions: Sessions::new(
                platform.db.clone(),
                platform.redis.clone(),
                platform.settings.auth.access_ttl(),
            ),
            audit: Audit::new(platform.db.clone()),
        }
    }

    pub fn sessions(&self) -> Arc<Sessions> {
        self.sessions.clone()
    }

    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// Counts one attempt against a strict endpoint limit (never unlimited when Redis fails).
    async fn limit(&self, key: String, limit: u32, period: Duration) -> Result<(), IdentityError> {
        let Some(quota) = Quota::configured(limit, period) else {
            return Ok(());
        };
        let decision = self.limits.strict(&key, quota).await;
        if decision.allowed {
            Ok(())
        } else {
            Err(IdentityError::RateLimited(decision))
        }
    }

    fn issue(
        &self,
        user: UserRow,
        session_id: Uuid,
        refresh_token: String,
    ) -> Result<Issued, IdentityError> {
        let ttl = self.settings.auth.access_ttl();
        let token = self
            .tokens
            .issue_access(user.id, session_id, &user.role, &user.tier, ttl)
            .map_err(anyhow::Error::from)?;
        Ok(Issued {
            token,
            refresh_token,
            expires_in: ttl.as_secs(),
            user,
        })
    }

    /// Starts a session with its first refresh token, in the caller's transaction.
    fn start_session(
        &self,
        conn: &mut PgConnection,
        user_id: Uuid,
        client: &ClientInfo,
    ) -> diesel::QueryResult<(Uuid, String)> {
        let session_id = Uuid::now_v7();
        store::insert_session(
            conn,
            session_id,
            user_id,
            client.ip.as_deref(),
            client.user_agent.as_deref(),
        )?;
        let refresh = self.new_refresh_token(conn, session_id)?;
        Ok((session_id, refresh))
    }

    fn new_refresh_token(
        &self,
        conn: &mut PgConnection,
        session_id: Uuid,
    ) -> diesel::QueryResult<String> {
        let (token, hash) = secret::generate();
        let expires = Utc::now() + self.settings.auth.refresh_ttl();
        store::insert_refresh_token(conn, &hash, session_id, expires)?;
        Ok(token)
    }

    pub async fn register(
        &self,
        email: &str,
        password: String,
        display_name: &str,
        client: ClientInfo,
    ) -> Result<Issued, IdentityError> {
        let ip = client.ip.clone().unwrap_or_default();
        self.limit(
            format!("register:{ip}"),
            self.settings.ratelimit.register_per_minute,
            Duration::from_secs(60),
        )
        .await?;

        let mut errors = FieldErrors::new();
        let email = normalize_email(email)
            .map_err(|p| errors.add("email", p))
            .ok();
        if let Some(problem) = password::policy_violation(&password) {
            errors.add("password", problem);
        }
        let display_name = check_display_name(display_name)
            .map_err(|p| errors.add("displayName", p))
            .ok();
        let (Some(email), Some(display_name)) = (email, display_name) else {
            return Err(IdentityError::Invalid(errors));
        };
        if !errors.is_empty() {
            return Err(IdentityError::Invalid(errors));
        }

        let hash = password::hash_blocking(password).await?;
        let service = self.clone();
        let (user, session_id, refresh) = self
            .db
            .transaction(move |conn| {
                let user = store::insert_user(
                    conn,
                    &NewUser {
                        id: Uuid::now_v7(),
                        email: &email,
                        password_hash: &hash,
                        display_name: &display_name,
                    },
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        IdentityError::EmailTaken
                    } else {
                        e.into()
                    }
                })?;
                let (session_id, refresh) = service.start_session(conn, user.id, &client)?;
                service.send_verification(conn, &user)?;
                audit::record_in(
                    conn,
                    AuditEntry::new("auth.register", Outcome::Success)
                        .by_self(user.id)
                        .client(&client),
                )?;
                Ok::<_, IdentityError>((user, session_id, refresh))
            })
            .await?;
        self.issue(user, session_id, refresh)
    }

    fn send_verification(
        &self,
        conn: &mut PgConnection,
        user: &UserRow,
    ) -> diesel::QueryResult<()> {
        let (token, hash) = secret::generate();
        store::insert_email_token(conn, &hash, user.id, VERIFY_EMAIL, Utc::now() + VERIFY_TTL)?;
        let email = emails::verify_address(
            &user.email,
            &user.display_name,
            &self.settings.server.public_url,
            &token,
        );
        jobs::enqueue(conn, &mail::send_job(&email))?;
        Ok(())
    }

    pub async fn login(
        &self,
        email: &str,
        password: String,
        client: ClientInfo,
    ) -> Result<Issued, IdentityError> {
        // A malformed address cannot match an account: it is checked like any other, so the
        // answer is the same 401 and the limits still count it.
        // Bounded, so an oversized "email" cannot make an oversized limiter key; anything
        // longer than an address can be matches no account anyway.
        let email: String = email
            .trim()
            .to_lowercase()
            .chars()
            .take(MAX_EMAIL_LEN + 1)
            .collect();
        let ip = client.ip.clone().unwrap_or_default();
        let limits = &self.settings.ratelimit;
        self.limit(
            format!("login:{email}:{ip}"),
            limits.login_per_minute,
            Duration::from_secs(60),
        )
        .await?;
        self.limit(
            format!("login-account:{email}"),
            limits.login_account_per_hour,
            Duration::from_secs(3600),
        )
        .await?;

        let lookup = email.clone();
        let user = self
            .db
            .run(move |conn| store::find_user_by_email(conn, &lookup).map_err(IdentityError::from))
            .await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matches = password::verify_blocking(password, stored).await?;

        let service = self.clone();
        let outcome = self
            .db
            .transaction(move |conn| {
                let user = match user {
                    Some(user) if matches && user.disabled_at.is_none() => user,
                    other => {
                        let mut entry =
                            AuditEntry::new("auth.login", Outcome::Failure).client(&client);
                        if let Some(user) = other {
                            entry = entry.subject(user.id);
                        }
                        audit::record_in(conn, entry)?;
                        return Ok(None);
                    }
                };
                let (session_id, refresh) = service.start_session(conn, user.id, &client)?;
                audit::record_in(
                    conn,
                    AuditEntry::new("auth.login", Outcome::Success)
                        .by_self(user.id)
                        .resource("session", session_id)
                        .client(&client),
                )?;
                Ok::<_, IdentityError>(Some((user, session_id, refresh)))
            })
            .await?;
        let (user, session_id, refresh) = outcome.ok_or(IdentityError::InvalidCredentials)?;
        self.issue(user, session_id, refresh)
    }

    /// Rotates a refresh token. Presenting one that was already rotated means it leaked (or
    /// the legitimate holder and a thief both have it): the whole session is revoked.
    pub async fn refresh(
        &self,
        presented: &str,
        client: ClientInfo,
    ) -> Result<Issued, IdentityError> {
        enum Rotation {
            Rotated(Box<UserRow>, Uuid, String),
            Reused(Uuid),
            Invalid,
        }
        let hash = secret::digest(presented);
        let service = self.clone();
        let rotation = self
            .db
            .transaction(move |conn| {
                let Some(found) = store::find_refresh_token(conn, &hash)? else {
                    return Ok(Rotation::Invalid);
                };
                if found.used_at.is_some() {
                    if store::revoke_session(conn, found.session_id, "refresh_token_reuse")? {
                        audit::record_in(
                            conn,
                            AuditEntry::new("auth.refresh_reuse", Outcome::Denied)
                                .subject(found.user.id)
                                .resource("session", found.session_id)
                                .client(&client),
                        )?;
                    }
                    return Ok(Rotation::Reused(found.session_id));
                }
                if found.session_revoked_at.is_some()
                    || found.expires_at <= Utc::now()
                    || found.user.disabled_at.is_some()
                {
                    return Ok(Rotation::Invalid);
                }
                if !store::mark_refresh_used(conn, &hash)? {
                    return Ok(Rotation::Invalid);
                }
                let refresh = service.new_refresh_token(conn, found.session_id)?;
                store::touch_session(conn, found.session_id)?;
                Ok::<_, IdentityError>(Rotation::Rotated(
                    Box::new(found.user),
                    found.session_id,
                    refresh,
                ))
            })
            .await?;
        match rotation {
            Rotation::Rotated(user, session_id, refresh) => self.issue(*user, session_id, refresh),
            Rotation::Reused(session_id) => {
                self.sessions.revoked(&[session_id]).await;
                Err(IdentityError::InvalidRefresh)
            }
            Rotation::Invalid => Err(IdentityError::InvalidRefresh),
        }
    }

    pub async fn logout(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        client: ClientInfo,
    ) -> Result<(), IdentityError> {
        self.db
            .transaction(move |conn| {
                if store::revoke_session(conn, session_id, "logout")? {
                    audit::record_in(
                        conn,
                        AuditEntry::new("auth.logout", Outcome::Success)
                            .by_self(user_id)
                            .resource("session", session_id)
                            .client(&client),
                    )?;
                }
                Ok::<_, IdentityError>(())
            })
            .await?;
        self.sessions.revoked(&[session_id]).await;
        Ok(())
    }

    /// Changes the password (the current one is required) and ends every other session.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        current: String,
        new: String,
        client: ClientInfo,
    ) -> Result<(), IdentityError> {
        if let Some(problem) = password::policy_violation(&new) {
            return Err(IdentityError::field("newPassword", problem));
        }
        let user = self.user(user_id).await?;
        // Guessing the current password here is limited like guessing it at login.
        self.limit(
            format!("login-account:{}", user.email),
            self.settings.ratelimit.login_account_per_hour,
            Duration::from_secs(3600),
        )
        .await?;
        if !password::verify_blocking(current, Some(user.password_hash)).await? {
            self.audit
                .record(
                    AuditEntry::new("password.change", Outcome::Failure)
                        .by_self(user_id)
                        .client(&client),
                )
                .await?;
            return Err(IdentityError::field("currentPassword", "is not correct"));
        }
        let hash = password::hash_blocking(new).await?;
        let revoked = self
            .db
            .transaction(move |conn| {
                store::set_password(conn, user_id, &hash)?;
                let revoked = store::revoke_user_sessions(
                    conn,
                    user_id,
                    Some(session_id),
                    "password_changed",
                )?;
                audit::record_in(
                    conn,
                    AuditEntry::new("password.change", Outcome::Success)
                        .by_self(user_id)
                        .change(None, Some(json!({ "sessionsEnded": revoked.len() })))
                        .client(&client),
                )?;
                Ok::<_, IdentityError>(revoked)
            })
            .await?;
        self.sessions.revoked(&revoked).await;
        Ok(())
    }

    /// Always the same answer, and the same work on the request path, whether or not the
    /// account exists: the lookup happens in a job.
    pub async fn forgot_password(&self, email: &str) -> Result<(), IdentityError> {
        let email = normalize_email(email).map_err(|p| IdentityError::field("email", p))?;
        self.limit(
            format!("forgot:{email}"),
            self.settings.ratelimit.forgot_password_per_hour,
            Duration::from_secs(3600),
        )
        .await?;
        let job = NewJob::new(RESET_REQUEST_JOB, json!({ "email": email })).max_attempts(5);
        self.db
            .run(move |conn| jobs::enqueue(conn, &job).map_err(IdentityError::from))
            .await?;
        Ok(())
    }

    /// The job behind [`Service::forgot_password`]: a reset token and its email, together.
    async fn send_reset(&self, email: String) -> Result<(), IdentityError> {
        let public_url = self.settings.server.public_url.clone();
        self.db
            .transaction(move |conn| {
                let Some(user) = store::find_user_by_email(conn, &email)? else {
                    return Ok(());
                };
                if user.disabled_at.is_some() {
                    return Ok(());
                }
                store::expire_email_tokens(conn, user.id, RESET_PASSWORD)?;
                let (token, hash) = secret::generate();
                store::insert_email_token(
                    conn,
                    &hash,
                    user.id,
                    RESET_PASSWORD,
                    Utc::now() + RESET_TTL,
                )?;
                let message =
                    emails::reset_password(&user.email, &user.display_name, &public_url, &token);
                jobs::enqueue(conn, &mail::send_job(&message))?;
                audit::record_in(
                    conn,
                    AuditEntry::new("password.reset_requested", Outcome::Success).subject(user.id),
                )?;
                Ok::<_, IdentityError>(())
            })
            .await
    }

    /// Sets a new password from a reset link; ends every session.
    pub async fn reset_password(
        &self,
        token: &str,
        new: String,
        client: ClientInfo,
    ) -> Result<(), IdentityError> {
        if let Some(problem) = password::policy_violation(&new) {
            return Err(IdentityError::field("password", problem));
        }
        let hash = password::hash_blocking(new).await?;
        let token_hash = secret::digest(token);
        let revoked = self
            .db
            .transaction(move |conn| {
                let Some(user_id) = store::consume_email_token(conn, &token_hash, RESET_PASSWORD)?
                else {
                    return Err(IdentityError::field("token", "is invalid, used or expired"));
                };
                store::set_password(conn, user_id, &hash)?;
                // The link arrived by email: the address is proven.
                store::set_email_verified(conn, user_id)?;
                let revoked = store::revoke_user_sessions(conn, user_id, None, "password_reset")?;
                audit::record_in(
                    conn,
                    AuditEntry::new("password.reset", Outcome::Success)
                        .by_self(user_id)
                        .change(None, Some(json!({ "sessionsEnded": revoked.len() })))
                        .client(&client),
                )?;
                Ok(revoked)
            })
            .await?;
        self.sessions.revoked(&revoked).await;
        Ok(())
    }

    pub async fn verify_email(&self, token: &str, client: ClientInfo) -> Result<(), IdentityError> {
        let token_hash = secret::digest(token);
        self.db
            .transaction(move |conn| {
                let Some(user_id) = store::consume_email_token(conn, &token_hash, VERIFY_EMAIL)?
                else {
                    return Err(IdentityError::field("token", "is invalid, used or expired"));
                };
                store::set_email_verified(conn, user_id)?;
                audit::record_in(
                    conn,
                    AuditEntry::new("email.verified", Outcome::Success)
                        .by_self(user_id)
                        .client(&client),
                )?;
                Ok(())
            })
            .await
    }

    pub async fn user(&self, user_id: Uuid) -> Result<UserRow, IdentityError> {
        self.db
            .run(move |conn| store::find_user(conn, user_id).map_err(IdentityError::from))
            .await?
            .ok_or(IdentityError::UnknownAccount)
    }

    pub async fn update_profile(
        &self,
        user_id: Uuid,
        changes: ProfileChanges,
        client: ClientInfo,
    ) -> Result<UserRow, IdentityError> {
        self.db
            .transaction(move |conn| {
                let before =
                    store::find_user(conn, user_id)?.ok_or(IdentityError::UnknownAccount)?;
                let after = store::update_profile(conn, user_id, &changes)?;
                let (old, new) = profile_diff(&before, &after);
                if !new.is_empty() {
                    audit::record_in(
                        conn,
                        AuditEntry::new("profile.update", Outcome::Success)
                            .by_self(user_id)
                            .change(Some(Value::Object(old)), Some(Value::Object(new)))
                            .client(&client),
                    )?;
                }
                Ok(after)
            })
            .await
    }

    /// Sets role and tier by email. A role change ends the account's sessions so no token
    /// keeps a role it no longer has.
    pub async fn set_user(
        &self,
        actor: Option<Uuid>,
        email: &str,
        role: Option<&str>,
        tier: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), IdentityError> {
        let email = normalize_email(email).map_err(|p| IdentityError::field("email", p))?;
        if let Some(role) = role
            && !matches!(role, "user" | "moderator" | "admin")
        {
            return Err(IdentityError::field(
                "role",
                "must be user, moderator or admin",
            ));
        }
        if let Some(tier) = tier
            && !matches!(tier, "free" | "premium" | "enterprise")
        {
            return Err(IdentityError::field(
                "tier",
                "must be free, premium or enterprise",
            ));
        }
        let (role, tier, client) = (
            role.map(str::to_owned),
            tier.map(str::to_owned),
            client.clone(),
        );
        let revoked = self
            .db
            .transaction(move |conn| {
                let user = store::find_user_by_email(conn, &email)?
                    .ok_or(IdentityError::UnknownAccount)?;
                let new_role = role.unwrap_or_else(|| user.role.clone());
                let new_tier = tier.unwrap_or_else(|| user.tier.clone());
                store::set_role_and_tier(conn, user.id, &new_role, &new_tier)?;
                let mut revoked = Vec::new();
                for (action, old, new) in [
                    ("user.role_change", &user.role, &new_role),
                    ("user.tier_change", &user.tier, &new_tier),
                ] {
                    if old == new {
                        continue;
                    }
                    let mut entry = AuditEntry::new(action, Outcome::Success)
                        .subject(user.id)
                        .change(Some(json!(old)), Some(json!(new)))
                        .client(&client);
                    if let Some(actor) = actor {
                        entry = entry.actor(actor);
                    }
                    audit::record_in(conn, entry)?;
                    if action == "user.role_change" {
                        revoked = store::revoke_user_sessions(conn, user.id, None, "role_changed")?;
                    }
                }
                Ok::<_, IdentityError>(revoked)
            })
            .await?;
        self.sessions.revoked(&revoked).await;
        Ok(())
    }

    pub fn register_jobs(&self, registry: &mut JobRegistry) {
        let service = self.clone();
        registry.register(RESET_REQUEST_JOB, move |job| {
            let service = service.clone();
            async move {
                let email = job.payload["email"].as_str().unwrap_or_default().to_owned();
                service.send_reset(email).await.map_err(anyhow::Error::from)
            }
        });
        let db = self.db.clone();
        registry.register(CLEANUP_JOB, move |_job| {
            let db = db.clone();
            async move {
                let deleted = db
                    .run(|conn| store::delete_expired(conn).map_err(DbError::from))
                    .await?;
                tracing::debug!(deleted, "expired identity tokens deleted");
                Ok(())
            }
        });
        registry.schedule(CLEANUP_JOB, CLEANUP_JOB, Duration::from_secs(3600));
    }
}

/// The changed profile fields, before and after.
fn profile_diff(
    before: &UserRow,
    after: &UserRow,
) -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
    let mut old = serde_json::Map::new();
    let mut new = serde_json::Map::new();
    let pairs = [
        (
            "displayName",
            json!(before.display_name),
            json!(after.display_name),
        ),
        ("bio", json!(before.bio), json!(after.bio)),
        (
            "avatarUrl",
            json!(before.avatar_url),
            json!(after.avatar_url),
        ),
        (
            "preferences",
            before.preferences.clone(),
            after.preferences.clone(),
        ),
    ];
    for (name, was, is) in pairs {
        if was != is {
            old.insert(name.to_owned(), was);
            new.insert(name.to_owned(), is);
        }
    }
    (old, new)
}

impl Experience for Service {
    fn award(
        &self,
        user_id: Uuid,
        points: u32,
    ) -> BoxFuture<'_, Result<Option<Progress>, DbError>> {
        Box::pin(async move {
            let total = self
                .db
                .run(move |conn| {
                    store::add_experience(conn, user_id, i64::from(points)).map_err(DbError::from)
                })
                .await?;
            Ok(total.map(|experience| Progress {
                experience,
                level: level_for_experience(experience),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_curve_grows_by_one_hundred_more_each_level() {
        assert_eq!(level_for_experience(0), 1);
        assert_eq!(level_for_experience(99), 1);
        assert_eq!(level_for_experience(100), 2);
        assert_eq!(level_for_experience(299), 2);
        assert_eq!(level_for_experience(300), 3);
        assert_eq!(level_for_experience(600), 4);
        assert_eq!(next_level_at(1), 100);
        assert_eq!(next_level_at(4), 1000);
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        assert!(normalize_email("not-an-email").is_err());
        assert!(normalize_email("a@b").is_err());
        assert!(normalize_email("").is_err());
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
