//! Diesel table definitions for the `identity` schema (migrations/V3__identity.sql).

diesel::table! {
    identity.users (id) {
        id -> Uuid,
        email -> Text,
        password_hash -> Text,
        display_name -> Text,
        avatar_media_id -> Nullable<Uuid>,
        bio -> Nullable<Text>,
        preferences -> Jsonb,
        role -> Text,
        experience -> Int8,
        email_verified_at -> Nullable<Timestamptz>,
        disabled_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deletion_scheduled_for -> Nullable<Timestamptz>,
        last_login_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    identity.sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    identity.refresh_tokens (token_hash) {
        token_hash -> Bytea,
        session_id -> Uuid,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    identity.email_tokens (token_hash) {
        token_hash -> Bytea,
        user_id -> Uuid,
        purpose -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    identity.audit_log (id) {
        id -> Uuid,
        occurred_at -> Timestamptz,
        actor_id -> Nullable<Uuid>,
        subject_id -> Nullable<Uuid>,
        action -> Text,
        resource_type -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        old_value -> Nullable<Jsonb>,
        new_value -> Nullable<Jsonb>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        outcome -> Text,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(users, sessions, refresh_tokens);
