//! Diesel table definitions for the `billing` schema (migrations/V13__billing.sql).

diesel::table! {
    billing.subscriptions (user_id) {
        user_id -> Uuid,
        tier -> Text,
        status -> Text,
        valid_until -> Nullable<Timestamptz>,
        source -> Text,
        provider_customer_id -> Nullable<Text>,
        provider_subscription_id -> Nullable<Text>,
        event_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    billing.usage (user_id, period) {
        user_id -> Uuid,
        period -> Date,
        requests -> Int8,
        tokens -> Int8,
    }
}

diesel::table! {
    billing.webhook_events (id) {
        id -> Text,
        kind -> Text,
        created_at -> Timestamptz,
        received_at -> Timestamptz,
        payload -> Jsonb,
        user_id -> Nullable<Uuid>,
        processed_at -> Nullable<Timestamptz>,
        outcome -> Nullable<Text>,
    }
}
