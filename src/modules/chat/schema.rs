//! Diesel table definitions for the `chat` schema (migrations/V6__chat.sql).

diesel::table! {
    chat.conversations (id) {
        id -> Uuid,
        user_id -> Uuid,
        character_id -> Uuid,
        character_name -> Text,
        character_avatar_url -> Nullable<Text>,
        title -> Text,
        active_leaf_id -> Nullable<Uuid>,
        pinned -> Bool,
        archived -> Bool,
        generating_id -> Nullable<Uuid>,
        last_message_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        revision -> Int8,
    }
}

diesel::table! {
    chat.messages (id) {
        id -> Uuid,
        conversation_id -> Uuid,
        parent_id -> Nullable<Uuid>,
        depth -> Int4,
        role -> Text,
        content -> Text,
        status -> Text,
        failure_code -> Nullable<Text>,
        failure_message -> Nullable<Text>,
        seq -> Int4,
        piece_ends -> Array<Int4>,
        heartbeat_at -> Nullable<Timestamptz>,
        stop_requested -> Bool,
        model -> Nullable<Text>,
        prompt_tokens -> Nullable<Int4>,
        completion_tokens -> Nullable<Int4>,
        prompt -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(messages -> conversations (conversation_id));
diesel::allow_tables_to_appear_in_same_query!(conversations, messages);
