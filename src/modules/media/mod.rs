#![doc = include_str!("README.md")]

mod api;
mod images;
mod schema;
mod service;
mod sniff;
mod store;

use actix_web::web;

use crate::platform::Platform;

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
            ),
        }
    }

    pub fn jobs(&self, registry: &mut crate::platform::jobs::JobRegistry) {
        self.service.register_jobs(registry);
    }

    pub fn routes(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.service.clone()));
        api::routes(cfg);
    }
}
