//! The media module's table (diesel).

diesel::table! {
    media.objects (id) {
        id -> Uuid,
        owner_id -> Uuid,
        kind -> Text,
        content_type -> Text,
        size -> Int8,
        character_id -> Nullable<Uuid>,
        is_public -> Bool,
        created_at -> Timestamptz,
        width -> Nullable<Int4>,
        height -> Nullable<Int4>,
        thumbnail -> Text,
        thumbnail_type -> Nullable<Text>,
        thumbnail_size -> Nullable<Int8>,
    }
}
