//! HTTP: the plans, the caller's subscription, and the provider's webhook.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::service::{Service, period_of};
use crate::config::Plan;
use crate::platform::http::{AppError, AuthUser, ClientInfo, Routes};

pub fn routes(routes: &mut Routes) {
    routes
        .resource("/billing/plans", |r| r.get(plans))
        .resource("/billing/subscription", |r| r.get(subscription))
        .resource("/billing/webhook", |r| r.post(receive));
}

/// A limit of 0 is "unlimited": `null` in the API.
fn limit(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

/// A plan as clients see it; `null` limits are unlimited.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PlanView {
    /// `free`, `premium` or `enterprise`.
    tier: String,
    name: String,
    requests_per_minute: Option<u64>,
    monthly_tokens: Option<u64>,
    storage_bytes: Option<u64>,
    custom_characters: bool,
    /// The conversation context a reply is written from, in tokens.
    context_tokens: u32,
    price_cents: u64,
    currency: String,
}

fn plan_view(service: &Service, tier: &str, plan: &Plan) -> PlanView {
    PlanView {
        tier: tier.to_owned(),
        name: plan.name.clone(),
        requests_per_minute: limit(plan.requests_per_minute.into()),
        monthly_tokens: limit(plan.monthly_tokens),
        storage_bytes: limit(plan.storage_bytes),
        custom_characters: plan.custom_characters,
        context_tokens: service.context_of(plan),
        price_cents: plan.price_cents,
        currency: service.settings.currency.clone(),
    }
}

#[derive(Serialize, ToSchema)]
struct PlanList {
    content: Vec<PlanView>,
}

#[utoipa::path(get, path = "/billing/plans", tag = "billing",
    responses((status = 200, description = "Every plan, free first.", body = PlanList)))]
async fn plans(service: web::Data<Service>) -> HttpResponse {
    let content = service
        .plans
        .all()
        .iter()
        .map(|(tier, plan)| plan_view(&service, tier, plan))
        .collect();
    HttpResponse::Ok().json(PlanList { content })
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Period {
    /// The first day of this calendar month (UTC).
    start: NaiveDate,
    resets_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Usage {
    /// Replies this month.
    requests: i64,
    /// Language-model tokens this month.
    tokens: i64,
    /// Media stored now.
    storage_bytes: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SubscriptionView {
    tier: String,
    /// `active`, `trialing`, `past_due`, `canceled` or `expired`.
    status: String,
    valid_until: Option<DateTime<Utc>>,
    plan: PlanView,
    period: Period,
    usage: Usage,
}

#[utoipa::path(get, path = "/billing/subscription", tag = "billing",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's plan and this month's use.",
        body = SubscriptionView)))]
async fn subscription(
    service: web::Data<Service>,
    user: AuthUser,
) -> Result<HttpResponse, AppError> {
    let ((standing, usage, resets_at), storage) = futures_util::try_join!(
        async { Ok::<_, AppError>(service.standing_and_usage(user.user_id).await?) },
        service.storage_used(user.user_id),
    )?;
    let plan = service.plans.get(&standing.tier);
    let (start, _) = period_of(Utc::now());
    Ok(HttpResponse::Ok().json(SubscriptionView {
        plan: plan_view(&service, &standing.tier, plan),
        tier: standing.tier,
        status: standing.status,
        valid_until: standing.valid_until,
        period: Period { start, resets_at },
        usage: Usage {
            requests: usage.requests,
            tokens: usage.tokens,
            storage_bytes: storage,
        },
    }))
}

#[derive(Serialize, ToSchema)]
struct Received {
    received: bool,
    /// The event was delivered before (it is not applied twice).
    duplicate: bool,
}

/// The provider's events. 404 without a configured secret; 400 (and an audit entry) for a
/// signature that does not hold; 200 once the event is stored and queued, or was before.
#[utoipa::path(post, path = "/billing/webhook", tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "`t=…,v1=…`")),
    request_body(content = Object, description = "The provider's event, as signed."),
    responses((status = 200, description = "Stored and queued, or seen before.", body = Received)))]
async fn receive(
    service: web::Data<Service>,
    req: HttpRequest,
    client: ClientInfo,
    body: Bytes,
) -> Result<HttpResponse, AppError> {
    let signature = req
        .headers()
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    let fresh = service
        .receive(signature, &body, client)
        .await
        .ok_or_else(AppError::not_found)??;
    Ok(HttpResponse::Ok().json(Received {
        received: true,
        duplicate: !fresh,
    }))
}

/// This module's operations, for the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(plans, subscription, receive))]
pub(super) struct Docs;
