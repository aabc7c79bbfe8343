#![doc = include_str!("README.md")]

mod api;
mod demo;
mod follow;
mod generation;
mod metrics;
mod personal;
mod prompt;
mod schema;
mod service;
mod socket;
mod store;
mod views;
mod warm;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::config::LlmSettings;
use crate::modules::billing::TokenQuota;
use crate::modules::catalog::CharacterDirectory;
use crate::modules::identity::{Experience, People};
use crate::platform::Platform;
use crate::platform::db::{Db, DbError};
use crate::platform::http::Routes;
use crate::platform::jobs::JobRegistry;
use crate::platform::llm::{self, LlmBuildError};
pub use demo::seed as seed_demo_conversations;

/// Why chat could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChatSetupError {
    #[error(transparent)]
    Llm(#[from] LlmBuildError),
    #[error("could not register chat's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

const REPAIR_JOB: &str = "chat.repair_interrupted";

fn orphan_age(settings: &LlmSettings) -> i64 {
    i64::try_from(settings.orphaned_reply_secs).unwrap_or(i64::MAX)
}

/// Marks replies whose generator died (no heartbeat for `stale_secs`) as `interrupted` and
/// frees their conversations.
async fn repair(db: &Db, stale_secs: i64) -> Result<(), DbError> {
    let repaired = db
        .run(move |conn| store::repair_stale(conn, stale_secs).map_err(DbError::from))
        .await?;
    if !repaired.is_empty() {
        tracing::warn!(count = repaired.len(), "replies marked interrupted");
    }
    Ok(())
}

/// The SQL a first `GET /conversations/{id}/messages?limit=…` runs (the conversation, then
/// the branch from its active leaf `leaf`), values inlined: for `EXPLAIN` and pgbench
/// (`companion admin history-sql`).
pub fn history_statements(conversation: Uuid, user: Uuid, leaf: Uuid, limit: i64) -> String {
    store::history_statements(conversation, user, leaf, limit)
}

/// Messages written today (UTC) and the replies among them that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayActivity {
    pub messages: i64,
    pub failed_replies: i64,
}

/// What the operators' board asks of chat.
pub trait Activity: Send + Sync {
    fn today(&self) -> BoxFuture<'_, Result<DayActivity, DbError>>;
}

struct ActivityOf(Db);

impl Activity for ActivityOf {
    fn today(&self) -> BoxFuture<'_, Result<DayActivity, DbError>> {
        Box::pin(async move {
            let midnight = chrono::Utc::now()
                .date_naive()
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc();
            let (messages, failed_replies) = self
                .0
                .run(move |conn| store::activity_since(conn, midnight).map_err(DbError::from))
                .await?;
            Ok(DayActivity {
                messages,
                failed_replies,
            })
        })
    }
}

/// The chat module: construct once in `app.rs`, mount its routes and jobs, and call
/// [`Chat::shutdown`] when the server stops.
#[derive(Clone)]
pub struct Chat {
    service: service::Service,
    sockets: socket::Sockets,
}

impl Chat {
    pub fn new(
        platform: &Platform,
        directory: Arc<dyn CharacterDirectory>,
        people: Arc<dyn People>,
        experience: Arc<dyn Experience>,
        quota: Arc<dyn TokenQuota>,
    ) -> Result<Self, ChatSetupError> {
        let model = llm::from_settings(&platform.settings.llm)?;
        let metrics = metrics::ChatMetrics::new()?;
        metrics.register(&platform.metrics)?;
        let engine = generation::Engine::new(
            platform.db.clone(),
            model,
            platform.realtime.clone(),
            experience,
            metrics.clone(),
            quota,
        );
        Ok(Self {
            sockets: socket::Sockets::new(platform.settings.websocket.clone()),
            service: service::Service::new(
                platform.db.clone(),
                directory,
                people,
                engine,
                platform.realtime.clone(),
                platform.settings.llm.clone(),
                metrics,
            ),
        })
    }

    pub fn routes(&self, routes: &mut Routes) {
        routes
            .config()
            .app_data(web::Data::new(self.service.clone()))
            .app_data(web::Data::new(self.sockets.clone()));
        routes.resource("/ws", |r| r.get(socket::connect));
        api::routes(routes);
    }

    /// This module's part of the OpenAPI document (paths relative to `/api/v1`).
    pub fn api_docs() -> utoipa::openapi::OpenApi {
        <api::Docs as utoipa::OpenApi>::openapi()
    }

    /// Today's messages and failed replies (the operators' board).
    pub fn activity(&self, db: Db) -> Arc<dyn Activity> {
        Arc::new(ActivityOf(db))
    }

    /// Chat's share of a person's data (conversations and messages).
    pub fn personal_data(&self) -> Arc<dyn crate::platform::personal::PersonalData> {
        Arc::new(self.service.clone())
    }

    /// How long free-tier messages are kept (called by privacy's daily job).
    pub fn retention(&self) -> Arc<dyn crate::platform::personal::Retention> {
        Arc::new(self.service.clone())
    }

    /// The recurring repair of replies whose process died (every `llm.orphaned_reply_secs`,
    /// on one instance).
    pub fn jobs(&self, registry: &mut JobRegistry, db: Db, settings: &LlmSettings) {
        let stale_secs = orphan_age(settings);
        registry.register(REPAIR_JOB, move |_job| {
            let db = db.clone();
            async move {
                repair(&db, stale_secs).await?;
                Ok(())
            }
        });
        registry.schedule(
            REPAIR_JOB,
            REPAIR_JOB,
            Duration::from_secs(settings.orphaned_reply_secs),
        );
    }

    /// The same repair once now, at start-up, without waiting for the schedule.
    pub fn repair_at_start(&self, db: Db, settings: &LlmSettings) {
        let stale_secs = orphan_age(settings);
        tokio::spawn(async move {
            if let Err(error) = repair(&db, stale_secs).await {
                tracing::warn!(%error, "could not repair interrupted replies at start-up");
            }
        });
    }

    /// Ends the replies running here as `interrupted`, storing what they had, within
    /// `grace`, then closes the WebSockets (1001) so clients reconnect elsewhere.
    pub async fn shutdown(&self, grace: Duration) {
        self.service.engine().shutdown(grace).await;
        self.sockets.close_all(Duration::from_secs(1)).await;
    }
}
