//! Billing's rules: a subscription's standing, operator grants, token quotas by month, and
//! the provider's events applied in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use diesel::{Connection, PgConnection};
use prometheus::{IntCounterVec, Opts};
use serde_json::{Value, json};
use uuid::Uuid;

use super::store::{self, SubscriptionChange, SubscriptionRow};
use super::webhook::{self, Effect, Parties, RENEWAL_GRACE, SignatureError};
use super::{AUDIT_JOB, Allowance, AuditNote, Grant, QuotaExceeded, Standing};
use crate::config::{BillingSettings, Plan, Plans};
use crate::modules::media::MediaDirectory;
use crate::platform::Platform;
use crate::platform::db::{Columns, Db, DbError};
use crate::platform::http::{AppError, ClientInfo};
use crate::platform::jobs::{self, JobRegistry, NewJob};
use crate::platform::realtime::Realtime;
use secrecy::ExposeSecret;

/// The job that applies one stored webhook event.
pub const EVENT_JOB: &str = "billing.event";
/// The recurring job that writes lapsed subscriptions down as free.
const EXPIRE_JOB: &str = "billing.expire";
const EXPIRE_BATCH: i64 = 500;

#[derive(Clone)]
pub struct Service {
    pub(super) db: Db,
    pub(super) plans: Arc<Plans>,
    pub(super) settings: Arc<BillingSettings>,
    /// The model's window: no plan's context is larger.
    model_context: u32,
    realtime: Realtime,
    media: Arc<dyn MediaDirectory>,
    quota_rejections: IntCounterVec,
}

/// The standing and this month's usage (zero when nothing was counted yet), in one
/// statement, and when the month ends.
fn standing_and_usage_on(
    conn: &mut PgConnection,
    user: Uuid,
) -> Result<(Standing, store::UsageRow, DateTime<Utc>), DbError> {
    let now = Utc::now();
    let (period, resets_at) = period_of(now);
    let (row, usage) = store::find_with_usage(conn, user, period)?;
    let usage = usage.unwrap_or(store::UsageRow {
        period,
        requests: 0,
        tokens: 0,
    });
    Ok((standing_of(row.as_ref(), now), usage, resets_at))
}

/// The first day of `at`'s month, and the first instant of the next month.
pub fn period_of(at: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let start = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or_default();
    let (year, month) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    let next = Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(at);
    (start, next)
}

/// A subscription as it stands at `now`: a paid tier whose time ran out reads as free.
fn standing_at(
    tier: &str,
    status: &str,
    valid_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Standing {
    let lapsed = tier != "free" && valid_until.is_some_and(|until| until <= now);
    let (tier, status) = if lapsed {
        ("free", "expired")
    } else {
        (tier, status)
    };
    Standing {
        tier: tier.to_owned(),
        status: status.to_owned(),
        valid_until,
    }
}

/// The standing [`store::TERMS`] read, as of now (NULLs: never subscribed, free).
pub fn standing_from(terms: Columns<'_>) -> Result<Standing, DbError> {
    let Some(tier) = terms.get::<Option<String>>(0)? else {
        return Ok(Standing::free());
    };
    let status: String = terms.get(1)?;
    Ok(standing_at(&tier, &status, terms.get(2)?, Utc::now()))
}

/// A row as it stands at `now` (no row: free).
pub fn standing_of(row: Option<&SubscriptionRow>, now: DateTime<Utc>) -> Standing {
    row.map_or_else(Standing::free, |row| {
        standing_at(&row.tier, &row.status, row.valid_until, now)
    })
}

/// What a change makes of the subscription, as of `now`.
fn standing_after(change: &SubscriptionChange, now: DateTime<Utc>) -> Standing {
    standing_at(&change.tier, &change.status, change.valid_until, now)
}

/// The realtime frame a user's clients get when their subscription changed: they refresh
/// their token, which then carries the new tier.
fn changed_frame(standing: &Standing) -> String {
    json!({ "type": "subscription", "subscription": standing }).to_string()
}

fn audit_job(note: &AuditNote) -> NewJob {
    NewJob::new(AUDIT_JOB, serde_json::to_value(note).unwrap_or_default()).max_attempts(20)
}

/// Announces a change of `user`'s standing, in the caller's transaction.
fn announce_change(
    conn: &mut PgConnection,
    action: &str,
    actor: Option<Uuid>,
    user: Uuid,
    before: &Standing,
    after: &Standing,
) -> diesel::QueryResult<()> {
    jobs::enqueue(
        conn,
        &audit_job(&AuditNote {
            action: action.to_owned(),
            outcome: "success".to_owned(),
            actor_id: actor,
            subject_id: Some(user),
            old_value: serde_json::to_value(before).ok(),
            new_value: serde_json::to_value(after).ok(),
            ip: None,
            user_agent: None,
        }),
    )?;
    Ok(())
}

impl Service {
    pub fn new(
        platform: &Platform,
        media: Arc<dyn MediaDirectory>,
    ) -> Result<Self, prometheus::Error> {
        let quota_rejections = IntCounterVec::new(
            Opts::new(
                "virtual_companion_quota_rejections_total",
                "Requests refused because a plan's quota was spent, by quota",
            ),
            &["quota"],
        )?;
        platform
            .metrics
            .register(Box::new(quota_rejections.clone()))?;
        Ok(Self {
            db: platform.db.clone(),
            plans: Arc::new(platform.settings.plans.clone()),
            settings: Arc::new(platform.settings.billing.clone()),
            model_context: platform.settings.llm.context_tokens,
            realtime: platform.realtime.clone(),
            media,
            quota_rejections,
        })
    }

    /// The context a plan's prompts get: its own, within the model's window.
    pub fn context_of(&self, plan: &Plan) -> u32 {
        plan.context_tokens.min(self.model_context)
    }

    /// The bytes the user's media take (media keeps that count).
    pub async fn storage_used(&self, user: Uuid) -> Result<u64, AppError> {
        self.media.usage(user).await
    }

    pub async fn standing(&self, user: Uuid) -> Result<Standing, DbError> {
        let row = self.db.read_part(store::TERMS, user).await?;
        match &row {
            Some(row) => standing_from(Columns::whole(row)),
            None => Ok(Standing::free()),
        }
    }

    pub async fn standings(&self, users: Vec<Uuid>) -> Result<HashMap<Uuid, Standing>, DbError> {
        let rows = self
            .db
            .run(move |conn| store::find_many(conn, &users).map_err(DbError::from))
            .await?;
        let now = Utc::now();
        Ok(rows
            .iter()
            .map(|row| (row.user_id, standing_of(Some(row), now)))
            .collect())
    }

    /// An operator sets the tier. Provider ids stay (a later provider event still applies);
    /// events older than this decision do not.
    pub async fn grant(&self, user: Uuid, grant: Grant) -> Result<(Standing, Standing), DbError> {
        let (before, after) = self
            .db
            .transaction(move |conn| {
                let row = store::find_for_update(conn, user)?;
                let now = Utc::now();
                let before = standing_of(row.as_ref(), now);
                let free = grant.tier == "free";
                let change = SubscriptionChange {
                    user_id: user,
                    tier: grant.tier.clone(),
                    status: "active".to_owned(),
                    valid_until: if free { None } else { grant.valid_until },
                    source: "admin".to_owned(),
                    provider_customer_id: row.as_ref().and_then(|r| r.provider_customer_id.clone()),
                    provider_subscription_id: row
                        .as_ref()
                        .and_then(|r| r.provider_subscription_id.clone()),
                    // Provider times have whole seconds: within the same second, their
                    // event wins.
                    event_at: Utc.timestamp_opt(now.timestamp(), 0).single(),
                };
                store::upsert(conn, &change)?;
                Ok::<_, DbError>((before, standing_after(&change, now)))
            })
            .await?;
        if before != after {
            self.realtime.publish(user, changed_frame(&after)).await;
        }
        Ok((before, after))
    }

    pub async fn paid_counts(&self) -> Result<HashMap<String, i64>, DbError> {
        let counts = self
            .db
            .run(|conn| store::paid_counts(conn).map_err(DbError::from))
            .await?;
        Ok(counts.into_iter().collect())
    }

    /// The standing and this month's usage, read together.
    pub async fn standing_and_usage(
        &self,
        user: Uuid,
    ) -> Result<(Standing, store::UsageRow, DateTime<Utc>), DbError> {
        self.db
            .run(move |conn| standing_and_usage_on(conn, user))
            .await
    }

    pub async fn allow(&self, user: Uuid) -> Result<Result<Allowance, QuotaExceeded>, DbError> {
        let (standing, usage, resets_at) = self.standing_and_usage(user).await?;
        Ok(self.judge(&standing, &usage, resets_at))
    }

    /// [`Self::allow`] on a connection the caller holds (on the blocking pool), so a
    /// caller that stores something next asks in the same trip to the database.
    pub fn allow_on(
        &self,
        conn: &mut PgConnection,
        user: Uuid,
    ) -> Result<Result<Allowance, QuotaExceeded>, DbError> {
        let (standing, usage, resets_at) = standing_and_usage_on(conn, user)?;
        Ok(self.judge(&standing, &usage, resets_at))
    }

    /// Whether the month's tokens are spent, and else what the plan allows a generation.
    fn judge(
        &self,
        standing: &Standing,
        usage: &store::UsageRow,
        resets_at: DateTime<Utc>,
    ) -> Result<Allowance, QuotaExceeded> {
        let plan = self.plans.get(&standing.tier);
        let used = u64::try_from(usage.tokens).unwrap_or(0);
        if let Some(quota) = plan.token_quota()
            && used >= quota
        {
            self.quota_rejections.with_label_values(&["tokens"]).inc();
            return Err(QuotaExceeded {
                quota,
                used,
                resets_at,
            });
        }
        Ok(Allowance {
            context_tokens: self.context_of(plan),
        })
    }

    pub async fn record(&self, user: Uuid, tokens: u64) -> Result<(), DbError> {
        let (period, _) = period_of(Utc::now());
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| store::add_usage(conn, user, period, tokens).map_err(DbError::from))
            .await
    }

    /// A webhook call: the signature checked (a refusal is announced for the audit log),
    /// then the event stored once and queued. `Ok(false)` for an event seen before; `None`
    /// when no secret is configured (the endpoint does not exist).
    pub async fn receive(
        &self,
        signature: Option<&str>,
        body: &[u8],
        client: ClientInfo,
    ) -> Option<Result<bool, AppError>> {
        let secret = self.settings.webhook_secret.as_ref()?;
        let verified = webhook::verify(
            signature,
            body,
            secret.expose_secret().as_bytes(),
            self.settings.webhook_tolerance_secs,
            Utc::now(),
        );
        Some(match verified {
            Err(refused) => self.refuse(refused, client).await,
            Ok(()) => self.accept(body).await,
        })
    }

    async fn refuse(&self, refused: SignatureError, client: ClientInfo) -> Result<bool, AppError> {
        tracing::warn!(reason = refused.reason(), "a webhook call was refused");
        self.refused_webhook(refused.reason(), client.ip, client.user_agent)
            .await?;
        Err(AppError::bad_request(format!(
            "The webhook signature was refused: {refused}."
        )))
    }

    async fn accept(&self, body: &[u8]) -> Result<bool, AppError> {
        let event: Value = serde_json::from_slice(body)
            .map_err(|_| AppError::bad_request("The event is not JSON."))?;
        let envelope = webhook::envelope(&event).ok_or_else(|| {
            AppError::bad_request("The event needs an id, a type, a created time and data.object.")
        })?;
        Ok(self.accept_event(envelope, event).await?)
    }

    /// Stores a verified event once and queues it; `false` when it was seen before.
    async fn accept_event(
        &self,
        envelope: webhook::Envelope,
        event: Value,
    ) -> Result<bool, DbError> {
        self.db
            .transaction(move |conn| {
                let fresh = store::insert_event(
                    conn,
                    &envelope.id,
                    &envelope.kind,
                    envelope.created,
                    &event,
                )?;
                if fresh {
                    jobs::enqueue(
                        conn,
                        &NewJob::new(EVENT_JOB, json!({ "id": envelope.id }))
                            .dedup_key(format!("{EVENT_JOB}:{}", envelope.id)),
                    )?;
                }
                Ok::<_, DbError>(fresh)
            })
            .await
    }

    /// Announces a refused webhook call (the audit log is identity's; see [`AUDIT_JOB`]).
    async fn refused_webhook(
        &self,
        reason: &str,
        ip: Option<String>,
        user_agent: Option<String>,
    ) -> Result<(), DbError> {
        let note = AuditNote {
            action: "billing.webhook".to_owned(),
            outcome: "denied".to_owned(),
            actor_id: None,
            subject_id: None,
            old_value: None,
            new_value: Some(json!({ "reason": reason })),
            ip,
            user_agent,
        };
        self.db
            .run(move |conn| {
                jobs::enqueue(conn, &audit_job(&note))
                    .map(|_| ())
                    .map_err(DbError::from)
            })
            .await
    }

    /// The tier a provider's price buys: listed in `billing.prices` by id or lookup key,
    /// or a lookup key that names a paid tier.
    fn tier_of_price(&self, price: &Value) -> Option<String> {
        let keys = ["id", "lookup_key"]
            .iter()
            .filter_map(|key| price.get(key).and_then(Value::as_str));
        for key in keys {
            if let Some(tier) = self.settings.prices.get(key) {
                return Some(tier.clone());
            }
            if matches!(key, "premium" | "enterprise") {
                return Some(key.to_owned());
            }
        }
        None
    }

    /// Applies stored event `id`: once, and only when it is newer than the last event
    /// applied to its subscription.
    pub async fn apply_event(&self, id: String) -> anyhow::Result<()> {
        let service = self.clone();
        let changed = self
            .db
            .transaction(move |conn| service.apply_in(conn, &id))
            .await?;
        if let Some((user, standing)) = changed {
            self.realtime.publish(user, changed_frame(&standing)).await;
        }
        Ok(())
    }

    fn apply_in(
        &self,
        conn: &mut PgConnection,
        id: &str,
    ) -> Result<Option<(Uuid, Standing)>, DbError> {
        let Some(event) = store::event_for_update(conn, id)? else {
            return Ok(None);
        };
        if event.processed_at.is_some() {
            return Ok(None);
        }
        let object = event
            .payload
            .pointer("/data/object")
            .cloned()
            .unwrap_or_default();
        let prices = |price: &Value| self.tier_of_price(price);
        let Some((parties, effect)) = webhook::interpret(&event.kind, &object, &prices) else {
            store::mark_processed(conn, id, None, "ignored")?;
            return Ok(None);
        };
        let Some(user) = self.user_of(conn, &parties)? else {
            tracing::warn!(event = %id, kind = %event.kind, "a billing event matched no account");
            store::mark_processed(conn, id, None, "unmatched")?;
            return Ok(None);
        };
        let row = store::find_for_update(conn, user)?;
        if row
            .as_ref()
            .and_then(|r| r.event_at)
            .is_some_and(|last| last > event.created_at)
        {
            store::mark_processed(conn, id, Some(user), "stale")?;
            return Ok(None);
        }
        let now = Utc::now();
        let before = standing_of(row.as_ref(), now);
        let Some(change) = self.change(user, row.as_ref(), &parties, &effect, event.created_at)
        else {
            // The account is known to exist only when it has a row.
            store::mark_processed(conn, id, row.as_ref().map(|r| r.user_id), "unchanged")?;
            return Ok(None);
        };
        // In a savepoint: an id in the metadata that names no account breaks the foreign key.
        match conn.transaction(|conn| store::upsert(conn, &change)) {
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => {
                tracing::warn!(event = %id, "a billing event named an account that does not exist");
                store::mark_processed(conn, id, None, "unmatched")?;
                return Ok(None);
            }
            other => other?,
        }
        let after = standing_after(&change, now);
        store::mark_processed(conn, id, Some(user), "applied")?;
        if before == after {
            return Ok(None);
        }
        announce_change(conn, "subscription.change", None, user, &before, &after)?;
        Ok(Some((user, after)))
    }

    /// Our account for the event: by the metadata the checkout set, else by the provider's
    /// subscription or customer id seen before. An id in the metadata that names no account
    /// matches nothing.
    fn user_of(&self, conn: &mut PgConnection, parties: &Parties) -> Result<Option<Uuid>, DbError> {
        if let Some(user) = parties.user {
            return Ok(Some(user));
        }
        Ok(store::user_of_provider(
            conn,
            parties.subscription.as_deref(),
            parties.customer.as_deref(),
        )?)
    }

    /// The row an event leads to; `None` when it changes nothing.
    fn change(
        &self,
        user: Uuid,
        row: Option<&SubscriptionRow>,
        parties: &Parties,
        effect: &Effect,
        event_at: DateTime<Utc>,
    ) -> Option<SubscriptionChange> {
        let paid_until = |end: Option<DateTime<Utc>>| end.map(|end| end + RENEWAL_GRACE);
        let (tier, status, valid_until) = match effect {
            Effect::Ignored => return None,
            Effect::Set {
                tier,
                status,
                period_end,
            } => {
                let tier = tier.clone().or_else(|| row.map(|r| r.tier.clone()))?;
                (tier, (*status).to_owned(), paid_until(*period_end))
            }
            Effect::Ended => ("free".to_owned(), "canceled".to_owned(), None),
            Effect::Paid { period_end } => {
                let row = row.filter(|r| r.tier != "free")?;
                let until = match (paid_until(*period_end), row.valid_until) {
                    (Some(new), Some(old)) => Some(new.max(old)),
                    (new, old) => new.or(old),
                };
                (row.tier.clone(), "active".to_owned(), until)
            }
            Effect::PaymentFailed => {
                let row = row.filter(|r| r.tier != "free")?;
                (row.tier.clone(), "past_due".to_owned(), row.valid_until)
            }
        };
        Some(SubscriptionChange {
            user_id: user,
            tier,
            status,
            valid_until,
            source: "provider".to_owned(),
            provider_customer_id: parties
                .customer
                .clone()
                .or_else(|| row.and_then(|r| r.provider_customer_id.clone())),
            provider_subscription_id: parties
                .subscription
                .clone()
                .or_else(|| row.and_then(|r| r.provider_subscription_id.clone())),
            event_at: Some(event_at),
        })
    }

    /// Writes lapsed subscriptions down as free (they already read as free).
    pub async fn expire(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let lapsed = self
                .db
                .transaction(|conn| {
                    let lapsed = store::lapse_expired(conn, EXPIRE_BATCH)?;
                    let mut changed = Vec::with_capacity(lapsed.len());
                    for row in lapsed {
                        let before = Standing {
                            tier: row.tier,
                            status: row.status,
                            valid_until: row.valid_until,
                        };
                        let after = standing_at("free", "expired", row.valid_until, Utc::now());
                        announce_change(
                            conn,
                            "subscription.lapsed",
                            None,
                            row.user_id,
                            &before,
                            &after,
                        )?;
                        changed.push((row.user_id, after));
                    }
                    Ok::<_, DbError>(changed)
                })
                .await?;
            total += lapsed.len();
            for (user, after) in &lapsed {
                self.realtime.publish(*user, changed_frame(after)).await;
            }
            if lapsed.len() < usize::try_from(EXPIRE_BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        if total > 0 {
            tracing::info!(count = total, "lapsed subscriptions moved to free");
        }
        Ok(total)
    }

    pub fn register_jobs(&self, registry: &mut JobRegistry) {
        let service = self.clone();
        registry.register(EVENT_JOB, move |job| {
            let service = service.clone();
            async move {
                let id: String = serde_json::from_value(job.payload["id"].clone())?;
                service.apply_event(id).await
            }
        });
        let service = self.clone();
        registry.register(EXPIRE_JOB, move |_job| {
            let service = service.clone();
            async move {
                service.expire().await?;
                Ok(())
            }
        });
        registry.schedule(
            EXPIRE_JOB,
            EXPIRE_JOB,
            Duration::from_secs(self.settings.expiry_check_secs.max(1)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_the_first_and_reset_on_the_next_first() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .single()
            .unwrap_or_default();
        let (start, next) = period_of(at);
        assert_eq!(
            start,
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default()
        );
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default()
        );
        let (start, next) = period_of(
            Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        );
        assert_eq!(
            start,
            NaiveDate::from_ymd_opt(2027, 2, 1).unwrap_or_default()
        );
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2027, 3, 1, 0, 0, 0)
                .single()
                .unwrap_or_default()
        );
    }
}
