#![doc = include_str!("README.md")]

mod board;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use tokio_util::sync::CancellationToken;

use crate::modules::billing::Subscriptions;
use crate::modules::chat::Activity;
use crate::modules::identity::Census;
use crate::platform::Platform;
use crate::platform::http::Routes;

/// How often each instance refreshes the user gauges it exports.
const GAUGE_EVERY: Duration = Duration::from_secs(60);

/// The operators' board: construct once in `app.rs` with the other modules' counting traits.
#[derive(Clone)]
pub struct Admin {
    board: board::Board,
}

impl Admin {
    pub fn new(
        platform: &Platform,
        census: Arc<dyn Census>,
        subscriptions: Arc<dyn Subscriptions>,
        activity: Arc<dyn Activity>,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            board: board::Board::new(platform, census, subscriptions, activity)?,
        })
    }

    pub fn routes(&self, routes: &mut Routes) {
        routes.config().app_data(web::Data::new(self.board.clone()));
        board::routes(routes);
    }

    /// This module's part of the OpenAPI document (paths relative to `/api/v1`).
    pub fn api_docs() -> utoipa::openapi::OpenApi {
        <board::Docs as utoipa::OpenApi>::openapi()
    }

    /// Keeps the user gauges of `/metrics` fresh until `stop` is cancelled.
    pub fn start_gauges(&self, stop: CancellationToken) {
        let board = self.board.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(GAUGE_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => {
                        if let Err(error) = board.users().await {
                            tracing::warn!(error = %error.message(), "could not refresh the user gauges");
                        }
                    }
                }
            }
        });
    }
}
