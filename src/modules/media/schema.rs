//! The media module's table (diesel).

diesel::table! {
    media.objects (id) {
        id -> Uuid,
        owner_id -> Uuid,
        kind -> Text,
        content_type -> Text,
        size -> Int8,
        sha256 -> Text,
        character_id -> Nullable<Uuid>,
        is_public -> Bool,
        created_at -> Timestamptz,
    }
}
