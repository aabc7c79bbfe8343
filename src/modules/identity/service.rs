//! The rules of accounts and sessions: registration, login, refresh, logout. Handlers call
//! these; these call the store. The other flows are `impl Service` blocks in `recovery.rs`
//! (verification, password change and reset) and `account.rs` (profile, role and tier).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::audit::{self, Audit};
use super::recovery::RESET_REQUEST_JOB;
use super::rules::{MAX_EMAIL_LEN, check_display_name, level_for_experience, normalize_email};
use super::sessions::Sessions;
use super::store::{self, NewUser, UserRow};
use super::{AuditEntry, Experience, Outcome, People, Progress, password, secret};
use crate::config::Settings;
use crate::modules::billing::{Standing, Subscriptions};
use crate::modules::media::MediaDirectory;
use crate::platform::Platform;
use crate::platform::db::{Db, DbError, JointRead};
use crate::platform::http::{AppError, ClientInfo, ErrorCode, FieldErrors, TokenKeys, refusal};
use crate::platform::jobs::JobRegistry;
use crate::platform::ratelimit::{Decision, Limits, Quota};
use crate::platform::realtime::Realtime;

const CLEANUP_JOB: &str = "identity.cleanup";

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
    #[error("the account is scheduled for deletion")]
    PendingDeletion(chrono::DateTime<Utc>),
    #[error("the account is not scheduled for deletion")]
    NotPendingDeletion,
    #[error("the account is disabled")]
    Disabled,
    #[error("{0}")]
    Conflict(&'static str),
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
    pub(super) fn field(name: &str, problem: &str) -> Self {
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
            IdentityError::NotPendingDeletion => {
                AppError::conflict("This account is not scheduled for deletion.")
            }
            IdentityError::PendingDeletion(at) => AppError::from_code(
                ErrorCode::AccountPendingDeletion,
            )
            .with_details(serde_json::json!({
                "scheduledFor": at,
                "restore": "/api/v1/users/account/restore",
            })),
            IdentityError::Disabled => AppError::from_code(ErrorCode::AccountDisabled),
            IdentityError::Conflict(message) => AppError::conflict(message),
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
    pub subscription: Standing,
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
    pub(super) db: Db,
    tokens: Arc<TokenKeys>,
    pub(super) settings: Arc<Settings>,
    pub(super) limits: Limits,
    pub(super) sessions: Arc<Sessions>,
    pub(super) audit: Audit,
    pub(super) media: Arc<dyn MediaDirectory>,
    pub(super) subscriptions: Arc<dyn Subscriptions>,
    pub(super) realtime: Realtime,
    /// The profile's rows (account, subscription, storage) as one statement.
    pub(super) profile_read: Arc<JointRead>,
}

impl Service {
    pub fn new(
        platform: &Platform,
        media: Arc<dyn MediaDirectory>,
        subscriptions: Arc<dyn Subscriptions>,
    ) -> Self {
        let profile_read = Arc::new(JointRead::new(&[
            store::USER_BY_ID,
            subscriptions.standing_read(),
            media.usage_read(),
        ]));
        Self {
            media,
            subscriptions,
            profile_read,
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
            realtime: platform.realtime.clone(),
        }
    }

    pub fn sessions(&self) -> Arc<Sessions> {
        self.sessions.clone()
    }

    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// Counts one attempt against a strict endpoint limit (never unlimited when Redis fails).
    pub(super) async fn limit(
        &self,
        key: String,
        limit: u32,
        period: Duration,
    ) -> Result<(), IdentityError> {
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

    /// Signs an access token carrying the tier billing says the user has now.
    pub(super) async fn issue(
        &self,
        user: UserRow,
        session_id: Uuid,
        refresh_token: String,
    ) -> Result<Issued, IdentityError> {
        let subscription = self.subscriptions.standing(user.id).await?;
        let ttl = self.settings.auth.access_ttl();
        let token = self
            .tokens
            .issue_access(user.id, session_id, &user.role, &subscription.tier, ttl)
            .map_err(anyhow::Error::from)?;
        Ok(Issued {
            token,
            refresh_token,
            expires_in: ttl.as_secs(),
            user,
            subscription,
        })
    }

    /// Starts a session with its first refresh token, in the caller's transaction.
    pub(super) fn start_session(
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
                store::touch_login(conn, user.id)?;
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
        self.issue(user, session_id, refresh).await
    }

    /// Counts a password guess against the login limits, then looks the account up and
    /// checks the password (against a dummy hash when there is no account, so the time is
    /// the same): the account, if any, and whether the password is its own.
    pub(super) async fn credentials(
        &self,
        email: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<(Option<UserRow>, bool), IdentityError> {
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

        let user = store::read_user_by_email(&self.db, &email).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matches = password::verify_blocking(password, stored).await?;
        Ok((user, matches))
    }

    pub async fn login(
        &self,
        email: &str,
        password: String,
        client: ClientInfo,
    ) -> Result<Issued, IdentityError> {
        let (user, matches) = self.credentials(email, password, &client).await?;

        let (refresh, refresh_hash) = secret::generate();
        let refresh_expires_at = Utc::now() + self.settings.auth.refresh_ttl();
        // Every branch writes one statement, so none needs a transaction of its own.
        let outcome = self
            .db
            .run(move |conn| {
                let user = match user {
                    Some(user) if matches && user.disabled_at.is_none() => user,
                    // The right password for an account waiting for its erasure: the owner
                    // is told, so the client can offer to restore it (nobody else learns it).
                    Some(user) if matches && user.deletion_scheduled_for.is_some() => {
                        audit::record_in(
                            conn,
                            AuditEntry::new("auth.login", Outcome::Denied)
                                .by_self(user.id)
                                .client(&client),
                        )?;
                        return Ok(Err(IdentityError::PendingDeletion(
                            user.deletion_scheduled_for.unwrap_or_default(),
                        )));
                    }
                    // Disabled by an operator: the owner is told so (nobody else learns it).
                    Some(user) if matches => {
                        audit::record_in(
                            conn,
                            AuditEntry::new("auth.login", Outcome::Denied)
                                .by_self(user.id)
                                .client(&client),
                        )?;
                        return Ok(Err(IdentityError::Disabled));
                    }
                    other => {
                        let mut entry =
                            AuditEntry::new("auth.login", Outcome::Failure).client(&client);
                        if let Some(user) = other {
                            entry = entry.subject(user.id);
                        }
                        audit::record_in(conn, entry)?;
                        return Ok(Err(IdentityError::InvalidCredentials));
                    }
                };
                let session_id = Uuid::now_v7();
                let login = store::NewLogin {
                    session_id,
                    user_id: user.id,
                    ip: client.ip.as_deref(),
                    user_agent: client.user_agent.as_deref(),
                    refresh_hash: &refresh_hash,
                    refresh_expires_at,
                };
                let entry = AuditEntry::new("auth.login", Outcome::Success)
                    .by_self(user.id)
                    .resource("session", session_id)
                    .client(&client);
                store::record_login(conn, &login, &audit::row(entry))?;
                Ok::<_, IdentityError>(Ok((user, session_id, refresh)))
            })
            .await?;
        let (user, session_id, refresh) = outcome?;
        self.issue(user, session_id, refresh).await
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
            Rotation::Rotated(user, session_id, refresh) => {
                self.issue(*user, session_id, refresh).await
            }
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

    pub async fn user(&self, user_id: Uuid) -> Result<UserRow, IdentityError> {
        store::read_user(&self.db, user_id)
            .await?
            .ok_or(IdentityError::UnknownAccount)
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

impl People for Service {
    fn display_name(&self, user_id: Uuid) -> BoxFuture<'_, Result<Option<String>, DbError>> {
        Box::pin(async move {
            let user = self
                .db
                .run(move |conn| store::find_user(conn, user_id).map_err(DbError::from))
                .await?;
            Ok(user.map(|u| u.display_name))
        })
    }
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
