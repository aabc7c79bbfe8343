#![doc = include_str!("README.md")]

mod api;
mod archive;
mod personal;
mod schema;
mod service;
mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use uuid::Uuid;

use crate::modules::identity::Accounts;
use crate::platform::Platform;
use crate::platform::http::Routes;
use crate::platform::jobs::{Job, JobRegistry};
use crate::platform::personal::{PersonalData, Retention};

/// The privacy module: construct once in `app.rs` with identity's [`Accounts`], every
/// module's [`PersonalData`] (in erasure order: identity's last) and the retention rules.
#[derive(Clone)]
pub struct Privacy {
    service: service::Service,
}

fn id_of(job: &Job, field: &str) -> anyhow::Result<Uuid> {
    Ok(serde_json::from_value(job.payload[field].clone())?)
}

impl Privacy {
    pub fn new(
        platform: &Platform,
        accounts: Arc<dyn Accounts>,
        shares: Vec<Arc<dyn PersonalData>>,
        retention: Vec<Arc<dyn Retention>>,
    ) -> Self {
        let own: Arc<dyn PersonalData> = Arc::new(personal::Own {
            db: platform.db.clone(),
            storage: platform.storage.clone(),
        });
        let shares = std::iter::once(own).chain(shares).collect();
        Self {
            service: service::Service::new(
                platform.db.clone(),
                platform.storage.clone(),
                platform.settings.privacy.clone(),
                platform.settings.server.public_url.clone(),
                accounts,
                shares,
                retention,
            ),
        }
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

    /// The archive job, its expiry, the erasure job and the daily retention run.
    pub fn jobs(&self, registry: &mut JobRegistry) {
        let service = self.service.clone();
        registry.register(service::EXPORT_JOB, move |job| {
            let service = service.clone();
            async move {
                let id = id_of(&job, "exportId")?;
                let outcome = service.run_export(id).await;
                if let Err(error) = &outcome
                    && job.attempt >= service::EXPORT_ATTEMPTS
                {
                    service.export_failed(id, error).await?;
                }
                outcome
            }
        });
        let service = self.service.clone();
        registry.register(service::EXPIRE_EXPORT_JOB, move |job| {
            let service = service.clone();
            async move { service.expire_export_by_id(id_of(&job, "exportId")?).await }
        });
        let service = self.service.clone();
        registry.register(service::ERASE_JOB, move |job| {
            let service = service.clone();
            async move { service.run_erasure(id_of(&job, "erasureId")?).await }
        });
        let service = self.service.clone();
        registry.register(service::RETENTION_JOB, move |_job| {
            let service = service.clone();
            async move { service.retention_run().await.map(|_| ()) }
        });
        registry.schedule(
            service::RETENTION_JOB,
            service::RETENTION_JOB,
            Duration::from_secs(24 * 3600),
        );
    }

    /// Every share of a person's data privacy works through, privacy's own first.
    pub fn personal_data(&self) -> Vec<Arc<dyn PersonalData>> {
        self.service.shares()
    }

    /// After a restore: erases again every restored account the erasure ledger names
    /// (`companion admin restore`); returns how many.
    pub async fn reapply_erasures(&self) -> anyhow::Result<usize> {
        self.service.reapply_erasures().await
    }

    /// Runs the retention job's work now (operators, tests); returns what it did.
    pub async fn retention_run(&self) -> anyhow::Result<serde_json::Value> {
        self.service.retention_run().await
    }
}
