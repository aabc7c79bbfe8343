//! Diesel table definitions for the `catalog` schema (migrations/V4__catalog.sql). The
//! generated `search` column is left out: only the listing's SQL reads it.

diesel::table! {
    catalog.categories (slug) {
        slug -> Text,
        name -> Text,
        description -> Text,
        position -> Int4,
    }
}

diesel::table! {
    catalog.characters (id) {
        id -> Uuid,
        owner_id -> Nullable<Uuid>,
        name -> Text,
        description -> Text,
        avatar_media_id -> Nullable<Uuid>,
        category -> Text,
        traits -> Array<Text>,
        greeting -> Text,
        tone -> Text,
        interests -> Array<Text>,
        visibility -> Text,
        nsfw -> Bool,
        tags -> Array<Text>,
        scenario -> Text,
        personality_summary -> Text,
        example_dialogue -> Text,
        alternate_greetings -> Array<Text>,
        system_prompt -> Text,
        post_history_instructions -> Text,
        creator_notes -> Text,
        creator -> Text,
        character_version -> Text,
        extensions -> Jsonb,
        lorebook -> Nullable<Jsonb>,
        card_extra -> Jsonb,
        hidden_at -> Nullable<Timestamptz>,
        rating_sum -> Int8,
        rating_count -> Int4,
        rating -> Float4,
        conversation_count -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    catalog.ratings (character_id, user_id) {
        character_id -> Uuid,
        user_id -> Uuid,
        stars -> Int2,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(categories, characters, ratings);
