//! `GET /admin/stats`: what operators watch, counted by the modules that own the data, and
//! the user gauges of `/metrics` set from the same counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{HttpResponse, web};
use prometheus::{IntGauge, IntGaugeVec, Opts};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::config::Plans;
use crate::modules::billing::Subscriptions;
use crate::modules::chat::Activity;
use crate::modules::identity::Census;
use crate::platform::Platform;
use crate::platform::http::{AppError, AuthUser, Role, Routes};
use crate::platform::jobs::JobQueue;

pub fn routes(routes: &mut Routes) {
    routes.resource("/admin/stats", |r| r.get(stats));
}

#[derive(Clone)]
pub struct Board {
    census: Arc<dyn Census>,
    subscriptions: Arc<dyn Subscriptions>,
    activity: Arc<dyn Activity>,
    jobs: JobQueue,
    active_users: IntGauge,
    users_by_tier: IntGaugeVec,
}

impl Board {
    pub fn new(
        platform: &Platform,
        census: Arc<dyn Census>,
        subscriptions: Arc<dyn Subscriptions>,
        activity: Arc<dyn Activity>,
    ) -> Result<Self, prometheus::Error> {
        let active_users = IntGauge::new(
            "virtual_companion_active_users",
            "Accounts with a session used in the last 24 hours",
        )?;
        let users_by_tier = IntGaugeVec::new(
            Opts::new("virtual_companion_users", "Accounts by subscription tier"),
            &["tier"],
        )?;
        platform.metrics.register(Box::new(active_users.clone()))?;
        platform.metrics.register(Box::new(users_by_tier.clone()))?;
        Ok(Self {
            census,
            subscriptions,
            activity,
            jobs: JobQueue::new(platform.db.clone()),
            active_users,
            users_by_tier,
        })
    }

    /// Counts everything (the reads run together) and sets the gauges.
    pub async fn stats(&self) -> Result<Stats, AppError> {
        let (users, today, jobs) = futures_util::try_join!(
            self.users(),
            async { Ok::<_, AppError>(self.activity.today().await?) },
            async { Ok::<_, AppError>(self.jobs.depth().await?) },
        )?;
        Ok(Stats {
            users,
            messages_today: today.messages,
            failed_replies_today: today.failed_replies,
            jobs: Jobs {
                queued: jobs.queued,
                running: jobs.running,
                dead: jobs.dead,
            },
        })
    }

    /// Counts the accounts and sets the user gauges; what the periodic refresh reads. The
    /// day's messages are left to `GET /admin/stats`: counting them costs more as the day
    /// goes on, and no gauge shows them.
    pub async fn users(&self) -> Result<Users, AppError> {
        let (accounts, paid) = futures_util::try_join!(self.census.counts(), async {
            Ok::<_, AppError>(self.subscriptions.paid_counts().await?)
        },)?;
        let paid_of = |tier: &str| paid.get(tier).copied().unwrap_or(0);
        let free = (accounts.users - paid_of("premium") - paid_of("enterprise")).max(0);
        let by_tier = Plans::TIERS
            .iter()
            .map(|tier| {
                let count = if *tier == "free" { free } else { paid_of(tier) };
                self.users_by_tier.with_label_values(&[tier]).set(count);
                ((*tier).to_owned(), count)
            })
            .collect();
        self.active_users.set(accounts.active_24h);
        Ok(Users {
            total: accounts.users,
            active_24h: accounts.active_24h,
            by_tier,
        })
    }
}

/// What `GET /admin/stats` answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    users: Users,
    messages_today: i64,
    failed_replies_today: i64,
    jobs: Jobs,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Users {
    total: i64,
    /// Accounts with a session used in the last 24 hours.
    #[serde(rename = "active24h")]
    active_24h: i64,
    /// Accounts per tier: `free`, `premium`, `enterprise`.
    by_tier: BTreeMap<String, i64>,
}

/// The job queue's depth.
#[derive(Serialize, ToSchema)]
struct Jobs {
    queued: i64,
    running: i64,
    /// Jobs that failed every attempt.
    dead: i64,
}

#[utoipa::path(get, path = "/admin/stats", tag = "administration",
    security(("bearer" = [])),
    responses((status = 200, description = "Accounts, today's activity and the job queue \
        (admins only; others 403).", body = Stats)))]
async fn stats(board: web::Data<Board>, user: AuthUser) -> Result<HttpResponse, AppError> {
    user.require(Role::Admin)?;
    Ok(HttpResponse::Ok().json(board.stats().await?))
}

/// This module's operations, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(stats))]
pub(super) struct Docs;
