-- Media: files people upload (images, audio, video), kept in the object store under
-- `media/<owner>/<id>`; this table holds what is known about each and who may see it.
CREATE TABLE media.objects (
    id           uuid PRIMARY KEY,
    owner_id     uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('image', 'audio', 'video')),
    -- Decided from the file's first bytes, never from what the client claimed.
    content_type text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    -- SHA-256 of the stored bytes (base64url): the download's ETag.
    sha256       text NOT NULL,
    -- The catalog's character the upload was made for (no foreign key across modules).
    character_id uuid,
    -- Owner-only unless made public (a public character's avatar).
    is_public    boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A user's media, newest first (listing, export, erasure, quota).
CREATE INDEX objects_owner_idx ON media.objects (owner_id, created_at DESC);
