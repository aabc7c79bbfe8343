#![doc = include_str!("README.md")]

mod account;
mod admin;
mod api;
mod audit;
mod deletion;
mod demo;
mod emails;
mod password;
mod personal;
mod recovery;
mod rules;
mod schema;
mod secret;
mod service;
mod sessions;
mod store;

use std::sync::Arc;

use actix_web::web;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use crate::platform::Platform;
use crate::platform::db::DbError;
use crate::platform::http::{AppError, ClientInfo, Routes, SessionCheck};
use crate::platform::jobs::JobRegistry;
use crate::platform::personal::PersonalData;

pub use demo::{DEMO_PASSWORD, seed as seed_demo_users};
pub use rules::{level_for_experience, next_level_at};
pub use service::IdentityError;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// One audit-log record. Build with [`AuditEntry::new`] and the setters.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub action: String,
    pub outcome: Outcome,
    pub actor_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl AuditEntry {
    /// `action` is a dotted name such as `auth.login` or `character.hidden`.
    pub fn new(action: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            action: action.into(),
            outcome,
            actor_id: None,
            subject_id: None,
            resource_type: None,
            resource_id: None,
            old_value: None,
            new_value: None,
            ip: None,
            user_agent: None,
        }
    }

    /// Who did it.
    pub fn actor(mut self, id: Uuid) -> Self {
        self.actor_id = Some(id);
        self
    }

    /// Whose account it concerns.
    pub fn subject(mut self, id: Uuid) -> Self {
        self.subject_id = Some(id);
        self
    }

    /// The actor acting on their own account.
    pub fn by_self(self, id: Uuid) -> Self {
        self.actor(id).subject(id)
    }

    pub fn resource(mut self, kind: impl Into<String>, id: impl ToString) -> Self {
        self.resource_type = Some(kind.into());
        self.resource_id = Some(id.to_string());
        self
    }

    pub fn change(mut self, old: Option<Value>, new: Option<Value>) -> Self {
        self.old_value = old;
        self.new_value = new;
        self
    }

    pub fn client(mut self, client: &ClientInfo) -> Self {
        self.ip = client.ip.clone();
        self.user_agent = client.user_agent.clone();
        self
    }
}

/// The audit log, for every module that does something security-relevant.
pub trait AuditLog: Send + Sync {
    fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), DbError>>;
}

/// Accounts in all, and those active (a session used) in the last 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountCounts {
    pub users: i64,
    pub active_24h: i64,
}

/// What the operators' board asks of identity.
pub trait Census: Send + Sync {
    fn counts(&self) -> BoxFuture<'_, Result<AccountCounts, AppError>>;
}

impl Census for service::Service {
    fn counts(&self) -> BoxFuture<'_, Result<AccountCounts, AppError>> {
        Box::pin(async move {
            let (users, active_24h) = self.census().await?;
            Ok(AccountCounts { users, active_24h })
        })
    }
}

/// A user's experience and level after an award.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub experience: i64,
    pub level: u32,
}

/// Experience points (chat awards them for conversation).
pub trait Experience: Send + Sync {
    /// Adds `points`; `None` when the user does not exist.
    fn award(&self, user_id: Uuid, points: u32)
    -> BoxFuture<'_, Result<Option<Progress>, DbError>>;
}

/// What other modules may know about a person.
pub trait People: Send + Sync {
    /// The name a user chose to be called (what `{{user}}` becomes in a prompt); `None`
    /// when there is no such user.
    fn display_name(&self, user_id: Uuid) -> BoxFuture<'_, Result<Option<String>, DbError>>;
}

/// Where to write to a person.
#[derive(Debug, Clone)]
pub struct Contact {
    pub email: String,
    pub display_name: String,
}

/// A closed account and the time its erasure was due.
pub type DueErasure = (Uuid, DateTime<Utc>);

/// What privacy asks of identity to close an account for its erasure and to reopen it
/// (DESIGN.md §1: privacy ──> identity).
pub trait Accounts: Send + Sync {
    /// Checks `password` (422 on `password` when wrong, limited like login), then disables
    /// the account with its erasure due at `erase_at`, ends every session and closes the
    /// user's live connections.
    fn close(
        &self,
        user: Uuid,
        password: String,
        erase_at: DateTime<Utc>,
        client: ClientInfo,
    ) -> BoxFuture<'_, Result<(), AppError>>;

    /// The account these credentials open, when it waits for its erasure: 401 like a failed
    /// login for wrong credentials, 409 for an account that is not closed.
    fn pending(
        &self,
        email: String,
        password: String,
        client: ClientInfo,
    ) -> BoxFuture<'_, Result<Uuid, AppError>>;

    /// Enables a closed account again and starts a session: the login's answer (409 when it
    /// was not closed).
    fn reopen(&self, user: Uuid, client: ClientInfo) -> BoxFuture<'_, Result<Value, AppError>>;

    /// Where to write to the user; `None` when there is no such account.
    fn contact(&self, user: Uuid) -> BoxFuture<'_, Result<Option<Contact>, DbError>>;

    /// Free-tier accounts after `after` in id order, `limit` at a time (retention).
    fn free_tier(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<Uuid>, DbError>>;

    /// Closed accounts whose erasure is due, with the time it was due.
    fn overdue(&self, limit: i64) -> BoxFuture<'_, Result<Vec<DueErasure>, DbError>>;
}

/// The identity module: construct once in `app.rs`, then mount its routes and jobs and hand
/// its traits to the modules that need them.
#[derive(Clone)]
pub struct Identity {
    service: service::Service,
}

impl Identity {
    pub fn new(
        platform: &Platform,
        media: Arc<dyn crate::modules::media::MediaDirectory>,
        subscriptions: Arc<dyn crate::modules::billing::Subscriptions>,
    ) -> Self {
        Self {
            service: service::Service::new(platform, media, subscriptions),
        }
    }

    /// Media `id` was deleted: a profile that had it as avatar has none (the handler of
    /// media's `media.removed` job calls this).
    pub async fn forget_avatar(&self, id: Uuid) -> Result<(), DbError> {
        self.service
            .db
            .run(move |conn| store::forget_avatar(conn, id).map_err(DbError::from))
            .await?;
        Ok(())
    }

    pub fn routes(&self, routes: &mut Routes) {
        routes
            .config()
            .app_data(web::Data::new(self.service.clone()));
        api::routes(routes);
    }

    /// This module's part of the OpenAPI document (paths relative to `/api/v1`).
    pub fn api_docs() -> utoipa::openapi::OpenApi {
        <api::Docs as utoipa::OpenApi>::openapi()
    }

    pub fn jobs(&self, registry: &mut JobRegistry) {
        self.service.register_jobs(registry);
    }

    /// What the platform's `AuthUser` extractor asks on every authenticated request.
    pub fn session_check(&self) -> Arc<dyn SessionCheck> {
        self.service.sessions()
    }

    pub fn audit_log(&self) -> Arc<dyn AuditLog> {
        Arc::new(self.service.audit())
    }

    pub fn experience(&self) -> Arc<dyn Experience> {
        Arc::new(self.service.clone())
    }

    pub fn people(&self) -> Arc<dyn People> {
        Arc::new(self.service.clone())
    }

    pub fn accounts(&self) -> Arc<dyn Accounts> {
        Arc::new(self.service.clone())
    }

    /// Identity's share of a person's data: the account, sessions and the audit events
    /// about them. Erase it last: every other module's rows refer to the account.
    pub fn personal_data(&self) -> Arc<dyn PersonalData> {
        Arc::new(self.service.clone())
    }

    /// Sets an account's role and/or tier (the `companion admin set-user` command); a
    /// paid tier lasts until `valid_until` when given.
    pub async fn set_user(
        &self,
        email: &str,
        role: Option<&str>,
        tier: Option<&str>,
        valid_until: Option<DateTime<Utc>>,
    ) -> Result<(), IdentityError> {
        self.service.set_user(email, role, tier, valid_until).await
    }

    /// What the operators' board counts of accounts.
    pub fn census(&self) -> Arc<dyn Census> {
        Arc::new(self.service.clone())
    }
}
