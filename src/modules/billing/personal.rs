//! Billing's share of a person's data ([`PersonalData`]): the subscription, the usage of
//! each month and the provider's events that concerned them.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

use super::service::{Service, standing_of};
use super::store;
use crate::platform::db::DbError;
use crate::platform::personal::{Archive, Coverage, PersonalData};

impl PersonalData for Service {
    fn name(&self) -> &'static str {
        "billing"
    }

    fn coverage(&self) -> Coverage {
        Coverage {
            tables: &[
                "billing.subscriptions",
                "billing.usage",
                "billing.webhook_events",
            ],
            prefixes: &[],
        }
    }

    /// `billing.json`: the subscription as it stands, the usage of every month, and the
    /// payment provider's events about the account (as the provider sent them).
    fn export<'a>(
        &'a self,
        user: Uuid,
        archive: &'a mut dyn Archive,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let (row, usage, events) = self
                .db
                .run(move |conn| {
                    Ok::<_, DbError>((
                        store::find(conn, user)?,
                        store::usage_of(conn, user)?,
                        store::events_of(conn, user)?,
                    ))
                })
                .await?;
            let standing = standing_of(row.as_ref(), chrono::Utc::now());
            let usage: Vec<_> = usage
                .iter()
                .map(|u| json!({ "month": u.period, "requests": u.requests, "tokens": u.tokens }))
                .collect();
            let events: Vec<_> = events
                .iter()
                .map(|e| json!({ "id": e.id, "type": e.kind, "createdAt": e.created_at, "outcome": e.outcome, "payload": e.payload }))
                .collect();
            archive
                .json(
                    "billing.json",
                    json!({
                        "subscription": {
                            "tier": standing.tier,
                            "status": standing.status,
                            "validUntil": standing.valid_until,
                            "source": row.as_ref().map(|r| r.source.clone()),
                            "since": row.as_ref().map(|r| r.created_at),
                            "providerCustomerId": row.as_ref().and_then(|r| r.provider_customer_id.clone()),
                            "providerSubscriptionId": row.as_ref().and_then(|r| r.provider_subscription_id.clone()),
                        },
                        "usage": usage,
                        "providerEvents": events,
                    }),
                )
                .await
        }
        .boxed()
    }

    /// A few rows per person: one statement each. The provider keeps its own records of
    /// payments; cancelling there is the operator's part.
    fn erase(&self, user: Uuid, _pseudonym: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        async move {
            self.db
                .transaction(move |conn| store::erase(conn, user).map_err(DbError::from))
                .await?;
            Ok(())
        }
        .boxed()
    }
}
