#![doc = include_str!("README.md")]

mod api;
mod follow;
mod generation;
mod prompt;
mod schema;
mod service;
mod store;
mod views;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use crate::modules::catalog::CharacterDirectory;
use crate::modules::identity::{Experience, People};
use crate::platform::Platform;
use crate::platform::db::{Db, DbError};
use crate::platform::jobs::JobRegistry;
use crate::platform::llm::{self, LlmBuildError};

const REPAIR_JOB: &str = "chat.repair_interrupted";

/// Marks replies whose generator died as `interrupted` and frees their conversations.
async fn repair(db: &Db) -> Result<(), DbError> {
    let repaired = db
        .run(|conn| store::repair_stale(conn, generation::STALE_SECS).map_err(DbError::from))
        .await?;
    if !repaired.is_empty() {
        tracing::warn!(count = repaired.len(), "replies marked interrupted");
    }
    Ok(())
}

/// The chat module: construct once in `app.rs`, mount its routes and jobs, and call
/// [`Chat::shutdown`] when the server stops.
#[derive(Clone)]
pub struct Chat {
    service: service::Service,
}

impl Chat {
    pub fn new(
        platform: &Platform,
        directory: Arc<dyn CharacterDirectory>,
        people: Arc<dyn People>,
        experience: Arc<dyn Experience>,
    ) -> Result<Self, LlmBuildError> {
        let model = llm::from_settings(&platform.settings.llm)?;
        let engine = generation::Engine::new(
            platform.db.clone(),
            model,
            platform.realtime.clone(),
            experience,
        );
        Ok(Self {
            service: service::Service::new(
                platform.db.clone(),
                directory,
                people,
                engine,
                platform.realtime.clone(),
                platform.settings.llm.clone(),
            ),
        })
    }

    pub fn routes(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.service.clone()));
        api::routes(cfg);
    }

    /// The recurring repair of replies whose process died (every 30 s on one instance).
    pub fn jobs(&self, registry: &mut JobRegistry, db: Db) {
        registry.register(REPAIR_JOB, move |_job| {
            let db = db.clone();
            async move {
                repair(&db).await?;
                Ok(())
            }
        });
        registry.schedule(REPAIR_JOB, REPAIR_JOB, Duration::from_secs(30));
    }

    /// The same repair once now, at start-up, without waiting for the schedule.
    pub fn repair_at_start(&self, db: Db) {
        tokio::spawn(async move {
            if let Err(error) = repair(&db).await {
                tracing::warn!(%error, "could not repair interrupted replies at start-up");
            }
        });
    }

    /// Ends the replies running here as `interrupted`, storing what they had, within
    /// `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.service.engine().shutdown(grace).await;
    }
}
