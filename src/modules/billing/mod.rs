#![doc = include_str!("README.md")]

mod api;
mod personal;
mod schema;
mod service;
mod store;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::web;
use chrono::{DateTime, Utc};
use diesel::PgConnection;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::modules::media::MediaDirectory;
use crate::platform::Platform;
use crate::platform::db::{Columns, DbError, RowRead};
use crate::platform::http::Routes;
use crate::platform::jobs::JobRegistry;
use crate::platform::personal::PersonalData;

/// The job billing announces a security-relevant event with (a refused webhook, a tier that
/// changed). Its payload is an [`AuditNote`]; `app.rs` hands it to the audit log, which
/// belongs to identity (identity asks billing for tiers, so billing never calls identity).
pub const AUDIT_JOB: &str = "billing.audit";

/// The payload of an [`AUDIT_JOB`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditNote {
    pub action: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    pub actor_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub old_value: Option<serde_json::Value>,
    pub new_value: Option<serde_json::Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A user's subscription as it stands now: a lapsed one already reads as free.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Standing {
    /// `free`, `premium` or `enterprise`.
    pub tier: String,
    /// `active`, `trialing`, `past_due`, `canceled` or `expired`.
    pub status: String,
    pub valid_until: Option<DateTime<Utc>>,
}

impl Standing {
    pub fn free() -> Self {
        Self {
            tier: "free".to_owned(),
            status: "active".to_owned(),
            valid_until: None,
        }
    }
}

/// A tier an operator grants (`PATCH /admin/users/{id}`, `companion admin set-user`).
#[derive(Debug, Clone)]
pub struct Grant {
    pub tier: String,
    /// When it lapses back to free; `None`: until changed.
    pub valid_until: Option<DateTime<Utc>>,
}

/// What identity asks of billing: the tier is billing's (DESIGN.md §1, identity ──> billing).
pub trait Subscriptions: Send + Sync {
    /// The user's standing (free when they never subscribed).
    fn standing(&self, user: Uuid) -> BoxFuture<'_, Result<Standing, DbError>>;

    /// Billing's part of a joint read about a user (`platform::db::JointRead`): the terms
    /// their standing is made of. Read them back with [`Subscriptions::standing_from`].
    fn standing_read(&self) -> RowRead;

    /// The standing that [`Subscriptions::standing_read`]'s columns say.
    fn standing_from(&self, terms: Columns<'_>) -> Result<Standing, DbError>;

    /// The standing of each of `users` (those missing are free).
    fn standings(
        &self,
        users: Vec<Uuid>,
    ) -> BoxFuture<'_, Result<HashMap<Uuid, Standing>, DbError>>;

    /// Sets the user's tier by an operator's decision; the standing before and after.
    fn grant(
        &self,
        user: Uuid,
        grant: Grant,
    ) -> BoxFuture<'_, Result<(Standing, Standing), DbError>>;

    /// How many accounts each paid tier has now (free is everyone else).
    fn paid_counts(&self) -> BoxFuture<'_, Result<HashMap<String, i64>, DbError>>;
}

/// Why a generation may not start: the month's tokens are spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub quota: u64,
    pub used: u64,
    pub resets_at: DateTime<Utc>,
}

/// What a user's plan allows a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// How many tokens of conversation its prompt may carry.
    pub context_tokens: u32,
}

/// What chat asks of billing (DESIGN.md §1, chat ──> billing).
pub trait TokenQuota: Send + Sync {
    /// Whether `user` may start a generation now, and what their plan allows it.
    fn allow(&self, user: Uuid)
    -> BoxFuture<'_, Result<Result<Allowance, QuotaExceeded>, DbError>>;

    /// The same question asked on a connection the caller holds (inside `Db::run`), so
    /// that a caller about to store something pays one trip to the database, not two.
    fn allow_on(
        &self,
        conn: &mut PgConnection,
        user: Uuid,
    ) -> Result<Result<Allowance, QuotaExceeded>, DbError>;

    /// Counts one reply and its prompt + completion tokens in this month's usage.
    fn record(&self, user: Uuid, tokens: u64) -> BoxFuture<'_, Result<(), DbError>>;
}

/// The billing module: construct once in `app.rs`, mount its routes and jobs, and hand its
/// traits to identity and chat.
#[derive(Clone)]
pub struct Billing {
    service: service::Service,
}

impl Billing {
    pub fn new(
        platform: &Platform,
        media: Arc<dyn MediaDirectory>,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            service: service::Service::new(platform, media)?,
        })
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

    /// Webhook events are applied by a job; lapsed subscriptions are written down as free
    /// by a recurring one.
    pub fn jobs(&self, registry: &mut JobRegistry) {
        self.service.register_jobs(registry);
    }

    pub fn subscriptions(&self) -> Arc<dyn Subscriptions> {
        Arc::new(self.service.clone())
    }

    pub fn token_quota(&self) -> Arc<dyn TokenQuota> {
        Arc::new(self.service.clone())
    }

    /// Billing's share of a person's data: the subscription, monthly usage and the
    /// provider's events about them.
    pub fn personal_data(&self) -> Arc<dyn PersonalData> {
        Arc::new(self.service.clone())
    }
}

impl Subscriptions for service::Service {
    fn standing(&self, user: Uuid) -> BoxFuture<'_, Result<Standing, DbError>> {
        self.standing(user).boxed()
    }

    fn standing_read(&self) -> RowRead {
        store::TERMS
    }

    fn standing_from(&self, terms: Columns<'_>) -> Result<Standing, DbError> {
        service::standing_from(terms)
    }

    fn standings(
        &self,
        users: Vec<Uuid>,
    ) -> BoxFuture<'_, Result<HashMap<Uuid, Standing>, DbError>> {
        self.standings(users).boxed()
    }

    fn grant(
        &self,
        user: Uuid,
        grant: Grant,
    ) -> BoxFuture<'_, Result<(Standing, Standing), DbError>> {
        self.grant(user, grant).boxed()
    }

    fn paid_counts(&self) -> BoxFuture<'_, Result<HashMap<String, i64>, DbError>> {
        self.paid_counts().boxed()
    }
}

impl TokenQuota for service::Service {
    fn allow(
        &self,
        user: Uuid,
    ) -> BoxFuture<'_, Result<Result<Allowance, QuotaExceeded>, DbError>> {
        self.allow(user).boxed()
    }

    fn allow_on(
        &self,
        conn: &mut PgConnection,
        user: Uuid,
    ) -> Result<Result<Allowance, QuotaExceeded>, DbError> {
        self.allow_on(conn, user)
    }

    fn record(&self, user: Uuid, tokens: u64) -> BoxFuture<'_, Result<(), DbError>> {
        self.record(user, tokens).boxed()
    }
}
