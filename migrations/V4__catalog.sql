-- Catalog: characters, categories and ratings. Owned by src/modules/catalog; no other module
-- queries these tables (chat maintains conversation counts through catalog's trait).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE catalog.categories (
    slug        text PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL,
    position    integer NOT NULL
);

INSERT INTO catalog.categories (slug, name, description, position) VALUES
    ('companion', 'Companions', 'Friends to talk with about anything', 1),
    ('assistant', 'Assistants', 'Helpers for work, study and everyday tasks', 2),
    ('fantasy', 'Fantasy', 'Mages, elves, dragons and other worlds', 3),
    ('sci-fi', 'Science fiction', 'Starships, androids and futures', 4),
    ('adventure', 'Adventure', 'Quests, mysteries and journeys', 5),
    ('romance', 'Romance', 'Stories of the heart', 6),
    ('mentor', 'Mentors', 'Teachers, coaches and guides', 7),
    ('wellness', 'Wellness', 'Calm, encouragement and reflection', 8),
    ('humor', 'Humor', 'Jokers, wits and absurdity', 9),
    ('history', 'History', 'People and places from the past', 10),
    ('horror', 'Horror', 'Dread, ghosts and the uncanny', 11),
    ('other', 'Other', 'Everything else', 12);

-- Tags as one string for the search vector. array_to_string is only STABLE, which a
-- generated column refuses; joining text is in fact immutable.
CREATE FUNCTION catalog.tags_text(tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN array_to_string(tags, ' ');

CREATE TABLE catalog.characters (
    id                        uuid PRIMARY KEY,
    -- NULL for the starter characters the installation ships with.
    owner_id                  uuid REFERENCES identity.users (id) ON DELETE CASCADE,
    name                      text NOT NULL,
    description               text NOT NULL DEFAULT '',
    avatar_url                text,
    category                  text NOT NULL REFERENCES catalog.categories (slug),
    traits                    text[] NOT NULL DEFAULT '{}',
    greeting                  text NOT NULL DEFAULT '',
    tone                      text NOT NULL DEFAULT '',
    interests                 text[] NOT NULL DEFAULT '{}',
    visibility                text NOT NULL DEFAULT 'private'
                              CHECK (visibility IN ('public', 'unlisted', 'private')),
    nsfw                      boolean NOT NULL DEFAULT false,
    tags                      text[] NOT NULL DEFAULT '{}',
    scenario                  text NOT NULL DEFAULT '',
    personality_summary       text NOT NULL DEFAULT '',
    example_dialogue          text NOT NULL DEFAULT '',
    alternate_greetings       text[] NOT NULL DEFAULT '{}',
    system_prompt             text NOT NULL DEFAULT '',
    post_history_instructions text NOT NULL DEFAULT '',
    creator_notes             text NOT NULL DEFAULT '',
    creator                   text NOT NULL DEFAULT '',
    character_version         text NOT NULL DEFAULT '',
    -- Card `extensions`, kept verbatim (our own fields travel under "companion/…" keys only
    -- in exported cards, never here).
    extensions                jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The card's `character_book` in the card's own (snake_case) shape, unknown keys kept.
    lorebook                  jsonb,
    -- Everything else an imported card carried that has no column: `data` keys we do not
    -- model and top-level keys beside `data`, so an export gives them back untouched.
    card_extra                jsonb NOT NULL DEFAULT '{}'::jsonb,
    hidden_at                 timestamptz,
    rating_sum                bigint NOT NULL DEFAULT 0,
    rating_count              integer NOT NULL DEFAULT 0,
    rating                    real GENERATED ALWAYS AS (
                                  CASE WHEN rating_count > 0
                                       THEN rating_sum::real / rating_count ELSE 0 END
                              ) STORED,
    conversation_count        bigint NOT NULL DEFAULT 0,
    -- Full-text search over name (weight A), tags (B) and description (C), with the
    -- language-neutral 'simple' configuration: characters are written in every language.
    search                    tsvector GENERATED ALWAYS AS (
                                  setweight(to_tsvector('simple', name), 'A')
                                  || setweight(to_tsvector('simple', catalog.tags_text(tags)), 'B')
                                  || setweight(to_tsvector('simple', description), 'C')
                              ) STORED,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX characters_search_idx ON catalog.characters USING gin (search);
-- Trigram index for typos and partial names (`%`, `<%`, ILIKE).
CREATE INDEX characters_name_trgm_idx ON catalog.characters USING gin (name gin_trgm_ops);
CREATE INDEX characters_tags_idx ON catalog.characters USING gin (tags);
CREATE INDEX characters_owner_idx ON catalog.characters (owner_id, created_at DESC);
-- The listing orders, over what anyone may list (public and not hidden).
CREATE INDEX characters_popular_idx ON catalog.characters (conversation_count DESC, id)
    WHERE visibility = 'public' AND hidden_at IS NULL;
CREATE INDEX characters_rating_idx ON catalog.characters (rating DESC, rating_count DESC, id)
    WHERE visibility = 'public' AND hidden_at IS NULL;
CREATE INDEX characters_new_idx ON catalog.characters (created_at DESC, id)
    WHERE visibility = 'public' AND hidden_at IS NULL;
CREATE INDEX characters_category_popular_idx
    ON catalog.characters (category, conversation_count DESC, id)
    WHERE visibility = 'public' AND hidden_at IS NULL;

CREATE TABLE catalog.ratings (
    character_id uuid NOT NULL REFERENCES catalog.characters (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    stars        smallint NOT NULL CHECK (stars BETWEEN 1 AND 5),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (character_id, user_id)
);
CREATE INDEX ratings_user_idx ON catalog.ratings (user_id);
