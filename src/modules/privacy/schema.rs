//! Diesel table definitions for the `privacy` schema (migrations/V12__privacy.sql).

diesel::table! {
    privacy.consents (user_id, purpose) {
        user_id -> Uuid,
        purpose -> Text,
        granted -> Bool,
        changed_at -> Timestamptz,
    }
}

diesel::table! {
    privacy.consent_events (id) {
        id -> Uuid,
        user_id -> Uuid,
        purpose -> Text,
        granted -> Bool,
        occurred_at -> Timestamptz,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    privacy.exports (id) {
        id -> Uuid,
        user_id -> Uuid,
        state -> Text,
        object_key -> Text,
        size_bytes -> Nullable<Int8>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    privacy.erasures (id) {
        id -> Uuid,
        user_id -> Nullable<Uuid>,
        pseudonym -> Uuid,
        state -> Text,
        requested_at -> Timestamptz,
        scheduled_for -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        steps -> Array<Text>,
    }
}
