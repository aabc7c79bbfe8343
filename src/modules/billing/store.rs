//! Every query on the billing tables. Synchronous diesel, run through `Db` by the service.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::schema::{subscriptions, usage, webhook_events};
use crate::platform::db::{Prepared, RowRead};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions, check_for_backend(diesel::pg::Pg))]
pub struct SubscriptionRow {
    pub user_id: Uuid,
    pub tier: String,
    pub status: String,
    pub valid_until: Option<DateTime<Utc>>,
    pub source: String,
    pub provider_customer_id: Option<String>,
    pub provider_subscription_id: Option<String>,
    pub event_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What a change writes (every field: the row is replaced as a whole).
#[derive(Debug, Clone, Insertable, AsChangeset)]
#[diesel(table_name = subscriptions, treat_none_as_null = true)]
pub struct SubscriptionChange {
    pub user_id: Uuid,
    pub tier: String,
    pub status: String,
    pub valid_until: Option<DateTime<Utc>>,
    pub source: String,
    pub provider_customer_id: Option<String>,
    pub provider_subscription_id: Option<String>,
    pub event_at: Option<DateTime<Utc>>,
}

pub fn find(conn: &mut PgConnection, user: Uuid) -> QueryResult<Option<SubscriptionRow>> {
    subscriptions::table
        .find(user)
        .select(SubscriptionRow::as_select())
        .first(conn)
        .optional()
}

/// A subscription's terms (tier, status, valid until): billing's part of a joint read about
/// a user, or read alone (`Db::read_part`), on the pipelined connection.
pub const TERMS: RowRead = RowRead {
    sql: "SELECT tier, status, valid_until FROM billing.subscriptions WHERE user_id = $1",
    columns: 3,
};

/// The row, locked until the transaction ends (changes to one subscription queue up).
pub fn find_for_update(
    conn: &mut PgConnection,
    user: Uuid,
) -> QueryResult<Option<SubscriptionRow>> {
    subscriptions::table
        .find(user)
        .select(SubscriptionRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn find_many(conn: &mut PgConnection, users: &[Uuid]) -> QueryResult<Vec<SubscriptionRow>> {
    subscriptions::table
        .filter(subscriptions::user_id.eq_any(users))
        .select(SubscriptionRow::as_select())
        .load(conn)
}

/// The account a provider's subscription or customer belongs to.
pub fn user_of_provider(
    conn: &mut PgConnection,
    subscription: Option<&str>,
    customer: Option<&str>,
) -> QueryResult<Option<Uuid>> {
    if let Some(id) = subscription {
        let found = subscriptions::table
            .filter(subscriptions::provider_subscription_id.eq(id))
            .select(subscriptions::user_id)
            .first(conn)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    match customer {
        Some(id) => subscriptions::table
            .filter(subscriptions::provider_customer_id.eq(id))
            .select(subscriptions::user_id)
            .first(conn)
            .optional(),
        None => Ok(None),
    }
}

pub fn upsert(conn: &mut PgConnection, change: &SubscriptionChange) -> QueryResult<()> {
    diesel::insert_into(subscriptions::table)
        .values(change)
        .on_conflict(subscriptions::user_id)
        .do_update()
        .set((change, subscriptions::updated_at.eq(now)))
        .execute(conn)?;
    Ok(())
}

/// Paid subscriptions whose time ran out become free; the rows as they were.
pub fn lapse_expired(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<SubscriptionRow>> {
    let due: Vec<SubscriptionRow> = subscriptions::table
        .filter(subscriptions::tier.ne("free"))
        .filter(subscriptions::valid_until.lt(now))
        .select(SubscriptionRow::as_select())
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)?;
    let ids: Vec<Uuid> = due.iter().map(|row| row.user_id).collect();
    if ids.is_empty() {
        return Ok(due);
    }
    diesel::update(subscriptions::table.filter(subscriptions::user_id.eq_any(&ids)))
        .set((
            subscriptions::tier.eq("free"),
            subscriptions::status.eq("expired"),
            subscriptions::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(due)
}

/// Accounts on each paid tier whose time has not run out.
pub fn paid_counts(conn: &mut PgConnection) -> QueryResult<Vec<(String, i64)>> {
    use diesel::dsl::count_star;
    subscriptions::table
        .filter(subscriptions::tier.ne("free"))
        .filter(
            subscriptions::valid_until
                .is_null()
                .or(subscriptions::valid_until.ge(now)),
        )
        .group_by(subscriptions::tier)
        .select((subscriptions::tier, count_star()))
        .load(conn)
}

#[derive(Debug, Clone, Copy, Queryable, Selectable)]
#[diesel(table_name = usage, check_for_backend(diesel::pg::Pg))]
pub struct UsageRow {
    pub period: NaiveDate,
    pub requests: i64,
    pub tokens: i64,
}

/// The subscription (if any) and the usage of `period` (if any), in one round trip: asked
/// before every reply, so kept prepared.
pub fn find_with_usage(
    conn: &mut PgConnection,
    user: Uuid,
    period: NaiveDate,
) -> QueryResult<(Option<SubscriptionRow>, Option<UsageRow>)> {
    use diesel::sql_types::{BigInt, Date, Nullable, Text, Timestamptz};
    #[derive(QueryableByName)]
    struct Both {
        #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
        user_id: Option<Uuid>,
        #[diesel(sql_type = Nullable<Text>)]
        tier: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        status: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        valid_until: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Text>)]
        source: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        provider_customer_id: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        provider_subscription_id: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        event_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        created_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Date>)]
        period: Option<NaiveDate>,
        #[diesel(sql_type = Nullable<BigInt>)]
        requests: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        tokens: Option<i64>,
    }
    let both = Prepared(
        diesel::sql_query(
            "SELECT s.user_id, s.tier, s.status, s.valid_until, s.source, \
                    s.provider_customer_id, s.provider_subscription_id, s.event_at, \
                    s.created_at, u.period, u.requests, u.tokens \
             FROM (SELECT $1::uuid AS id) k \
             LEFT JOIN billing.subscriptions s ON s.user_id = k.id \
             LEFT JOIN billing.usage u ON u.user_id = k.id AND u.period = $2",
        )
        .bind::<diesel::sql_types::Uuid, _>(user)
        .bind::<Date, _>(period),
    )
    .get_result::<Both>(conn)?;
    let subscription = match (
        both.user_id,
        both.tier,
        both.status,
        both.source,
        both.created_at,
    ) {
        (Some(user_id), Some(tier), Some(status), Some(source), Some(created_at)) => {
            Some(SubscriptionRow {
                user_id,
                tier,
                status,
                valid_until: both.valid_until,
                source,
                provider_customer_id: both.provider_customer_id,
                provider_subscription_id: both.provider_subscription_id,
                event_at: both.event_at,
                created_at,
            })
        }
        _ => None,
    };
    let usage = match (both.period, both.requests, both.tokens) {
        (Some(period), Some(requests), Some(tokens)) => Some(UsageRow {
            period,
            requests,
            tokens,
        }),
        _ => None,
    };
    Ok((subscription, usage))
}

/// Adds one request and `tokens` to the month's usage, in one atomic statement.
pub fn add_usage(
    conn: &mut PgConnection,
    user: Uuid,
    period: NaiveDate,
    tokens: i64,
) -> QueryResult<()> {
    // Once per reply, so kept prepared: it returns a column to run through `load`
    // (`platform::db::Prepared`).
    Prepared(
        diesel::insert_into(usage::table)
            .values((
                usage::user_id.eq(user),
                usage::period.eq(period),
                usage::requests.eq(1),
                usage::tokens.eq(tokens),
            ))
            .on_conflict((usage::user_id, usage::period))
            .do_update()
            .set((
                usage::requests.eq(usage::requests + 1),
                usage::tokens.eq(usage::tokens + tokens),
            ))
            .returning(usage::user_id),
    )
    .load::<Uuid>(conn)?;
    Ok(())
}

pub fn usage_of(conn: &mut PgConnection, user: Uuid) -> QueryResult<Vec<UsageRow>> {
    usage::table
        .filter(usage::user_id.eq(user))
        .order(usage::period)
        .select(UsageRow::as_select())
        .load(conn)
}

/// Stores an event the first time its id is seen; `false` for a replay.
pub fn insert_event(
    conn: &mut PgConnection,
    id: &str,
    kind: &str,
    created_at: DateTime<Utc>,
    payload: &Value,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(webhook_events::table)
        .values((
            webhook_events::id.eq(id),
            webhook_events::kind.eq(kind),
            webhook_events::created_at.eq(created_at),
            webhook_events::payload.eq(payload),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(inserted == 1)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub payload: Value,
    pub processed_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

pub fn event_for_update(conn: &mut PgConnection, id: &str) -> QueryResult<Option<EventRow>> {
    webhook_events::table
        .find(id)
        .select(EventRow::as_select())
        .for_update()
        .first(conn)
        .optional()
}

pub fn mark_processed(
    conn: &mut PgConnection,
    id: &str,
    user: Option<Uuid>,
    outcome: &str,
) -> QueryResult<()> {
    diesel::update(webhook_events::table.find(id))
        .set((
            webhook_events::user_id.eq(user),
            webhook_events::processed_at.eq(now),
            webhook_events::outcome.eq(outcome),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn events_of(conn: &mut PgConnection, user: Uuid) -> QueryResult<Vec<EventRow>> {
    webhook_events::table
        .filter(webhook_events::user_id.eq(user))
        .order(webhook_events::created_at)
        .select(EventRow::as_select())
        .load(conn)
}

/// Removes everything billing keeps about `user`.
pub fn erase(conn: &mut PgConnection, user: Uuid) -> QueryResult<()> {
    diesel::delete(webhook_events::table.filter(webhook_events::user_id.eq(user))).execute(conn)?;
    diesel::delete(usage::table.filter(usage::user_id.eq(user))).execute(conn)?;
    diesel::delete(subscriptions::table.find(user)).execute(conn)?;
    Ok(())
}
