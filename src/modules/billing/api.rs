//! HTTP: the plans, the caller's subscription, and the provider's webhook.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};

use super::service::{Service, period_of};
use crate::config::Plan;
use crate::platform::http::{AppError, AuthUser, ClientInfo};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/billing/plans").route(web::get().to(plans)))
        .service(web::resource("/billing/subscription").route(web::get().to(subscription)))
        .service(web::resource("/billing/webhook").route(web::post().to(receive)));
}

/// A limit of 0 is "unlimited": `null` in the API.
fn limit(value: u64) -> Value {
    if value == 0 {
        Value::Null
    } else {
        json!(value)
    }
}

fn plan_view(service: &Service, tier: &str, plan: &Plan) -> Value {
    json!({
        "tier": tier,
        "name": plan.name,
        "requestsPerMinute": limit(plan.requests_per_minute.into()),
        "monthlyTokens": limit(plan.monthly_tokens),
        "storageBytes": limit(plan.storage_bytes),
        "customCharacters": plan.custom_characters,
        "contextTokens": service.context_of(plan),
        "priceCents": plan.price_cents,
        "currency": service.settings.currency,
    })
}

async fn plans(service: web::Data<Service>) -> HttpResponse {
    let plans: Vec<Value> = service
        .plans
        .all()
        .iter()
        .map(|(tier, plan)| plan_view(&service, tier, plan))
        .collect();
    HttpResponse::Ok().json(json!({ "content": plans }))
}

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
    Ok(HttpResponse::Ok().json(json!({
        "tier": standing.tier,
        "status": standing.status,
        "validUntil": standing.valid_until,
        "plan": plan_view(&service, &standing.tier, plan),
        "period": { "start": start, "resetsAt": resets_at },
        "usage": {
            "requests": usage.requests,
            "tokens": usage.tokens,
            "storageBytes": storage,
        },
    })))
}

/// The provider's events. 404 without a configured secret; 400 (and an audit entry) for a
/// signature that does not hold; 200 once the event is stored and queued, or was before.
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
    Ok(HttpResponse::Ok().json(json!({ "received": true, "duplicate": !fresh })))
}
