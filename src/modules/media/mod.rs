#![doc = include_str!("README.md")]

mod api;
mod form;
mod images;
mod personal;
mod schema;
mod service;
mod sniff;
mod store;

use actix_web::web;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::platform::Platform;
use crate::platform::db::{Columns, RowRead};
use crate::platform::http::{AppError, Routes};

pub use service::REMOVED_JOB;

/// What other modules may ask of media: avatars (identity for a profile's picture, catalog
/// for a character's) and storage use. Media still decides access alone: it is told which
/// objects are public, and never asks why.
pub trait MediaDirectory: Send + Sync {
    /// Whether `media` is an image `owner` uploaded, so it may be their avatar.
    fn usable(&self, owner: Uuid, media: Uuid) -> BoxFuture<'_, Result<bool, AppError>>;

    /// Makes `media` public (anyone may download it) or owner-only again.
    fn set_public(&self, media: Uuid, public: bool) -> BoxFuture<'_, Result<(), AppError>>;

    /// Stores an image that came inside something else (a character card) as `owner`'s
    /// media, checked and stripped like an upload and counted in their quota (`tier`'s).
    fn store_image(
        &self,
        owner: Uuid,
        tier: &str,
        image: Vec<u8>,
    ) -> BoxFuture<'_, Result<Uuid, AppError>>;

    /// The bytes of an image, whoever's it is (to put it in an exported card).
    fn read(&self, media: Uuid) -> BoxFuture<'_, Result<Option<Bytes>, AppError>>;

    /// The bytes `owner`'s media take.
    fn usage(&self, owner: Uuid) -> BoxFuture<'_, Result<u64, AppError>>;

    /// Media's part of a joint read about a user (`platform::db::JointRead`): the bytes
    /// their media take. Read it back with [`MediaDirectory::usage_from`].
    fn usage_read(&self) -> RowRead;

    /// The bytes that [`MediaDirectory::usage_read`]'s column says.
    fn usage_from(&self, used: Columns<'_>) -> Result<u64, AppError>;

    /// The storage quota of `tier` (`None`: unlimited).
    fn quota(&self, tier: &str) -> Option<u64>;
}

impl MediaDirectory for service::Service {
    fn usable(&self, owner: Uuid, media: Uuid) -> BoxFuture<'_, Result<bool, AppError>> {
        async move { Ok(self.is_image_of(owner, media).await?) }.boxed()
    }

    fn set_public(&self, media: Uuid, public: bool) -> BoxFuture<'_, Result<(), AppError>> {
        async move { Ok(service::Service::set_public(self, media, public).await?) }.boxed()
    }

    fn store_image(
        &self,
        owner: Uuid,
        tier: &str,
        image: Vec<u8>,
    ) -> BoxFuture<'_, Result<Uuid, AppError>> {
        let quota = self.quota(tier);
        async move { Ok(self.store_image(owner, quota, image).await?) }.boxed()
    }

    fn read(&self, media: Uuid) -> BoxFuture<'_, Result<Option<Bytes>, AppError>> {
        async move { Ok(self.read_whole(media).await?) }.boxed()
    }

    fn usage(&self, owner: Uuid) -> BoxFuture<'_, Result<u64, AppError>> {
        async move { Ok(service::Service::usage(self, owner).await?) }.boxed()
    }

    fn quota(&self, tier: &str) -> Option<u64> {
        service::Service::quota(self, tier)
    }

    fn usage_read(&self) -> RowRead {
        store::USAGE
    }

    fn usage_from(&self, used: Columns<'_>) -> Result<u64, AppError> {
        Ok(store::usage_from(used)?)
    }
}

/// The media module: construct once in `app.rs` and mount its routes.
#[derive(Clone)]
pub struct Media {
    service: service::Service,
}

impl Media {
    pub fn new(platform: &Platform) -> Self {
        Self {
            service: service::Service::new(
                platform.db.clone(),
                platform.storage.clone(),
                platform.settings.media.clone(),
                platform.settings.plans.clone(),
            ),
        }
    }

    /// Where media `id` is served (an avatar's URL, for the modules that keep its id).
    pub fn url(id: Uuid) -> String {
        format!("/api/v1/media/{id}")
    }

    pub fn directory(&self) -> std::sync::Arc<dyn MediaDirectory> {
        std::sync::Arc::new(self.service.clone())
    }

    /// Media's share of a person's data, for the privacy module.
    pub fn personal_data(&self) -> std::sync::Arc<dyn crate::platform::personal::PersonalData> {
        std::sync::Arc::new(self.service.clone())
    }

    pub fn jobs(&self, registry: &mut crate::platform::jobs::JobRegistry) {
        self.service.register_jobs(registry);
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
}
