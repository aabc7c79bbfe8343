-- Images get their size in pixels and a thumbnail, kept beside the file at
-- `media/<owner>/<id>.thumb`.
ALTER TABLE media.objects
    ADD COLUMN width integer CHECK (width > 0),
    ADD COLUMN height integer CHECK (height > 0),
    -- `none` for audio and video; `pending` while a job makes it; `ready`; `failed` when the
    -- image could not be decoded after all.
    ADD COLUMN thumbnail text NOT NULL DEFAULT 'none'
        CHECK (thumbnail IN ('none', 'pending', 'ready', 'failed')),
    ADD COLUMN thumbnail_type text,
    ADD COLUMN thumbnail_size bigint CHECK (thumbnail_size >= 0);

-- A media's bytes never change (an edit is a new upload), so its id is its ETag; hashing
-- every upload cost a third of the upload's time and told nothing the id does not.
ALTER TABLE media.objects DROP COLUMN sha256;
