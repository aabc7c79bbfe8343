-- Avatars are media their owner uploaded (no foreign key across modules: media announces a
-- deletion with the `media.removed` job, and the avatar falls back to none).
-- The URL is derived from the media id (for characters too, below).
ALTER TABLE identity.users DROP COLUMN avatar_url;
ALTER TABLE identity.users ADD COLUMN avatar_media_id uuid;
CREATE INDEX users_avatar_media_idx ON identity.users (avatar_media_id)
    WHERE avatar_media_id IS NOT NULL;

-- The URL is derived from the media id; an avatar hosted elsewhere is no longer possible
-- (our CSP shows only our own images, and a third-party URL would tell another site who
-- looks at the character).
ALTER TABLE catalog.characters DROP COLUMN avatar_url;
ALTER TABLE catalog.characters ADD COLUMN avatar_media_id uuid;
CREATE INDEX characters_avatar_media_idx ON catalog.characters (avatar_media_id)
    WHERE avatar_media_id IS NOT NULL;
