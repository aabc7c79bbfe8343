-- Chat: conversations and their messages, one row per message, forming a tree.
--
-- A regenerated reply is a sibling of the old one (a "swipe"), an edit starts a new branch
-- from the edited message's parent, and the conversation remembers its active leaf. The
-- active branch is the path from that leaf to a root; history pages walk it upwards by
-- primary key, so their cost follows the page size, not the conversation's length.

CREATE TABLE chat.conversations (
    id                   uuid PRIMARY KEY,
    user_id              uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    -- The catalog's character (no foreign key across modules). Its name and avatar are kept
    -- here for listings and refreshed whenever a reply is generated.
    character_id         uuid NOT NULL,
    character_name       text NOT NULL,
    character_avatar_url text,
    title                text NOT NULL,
    active_leaf_id       uuid,
    pinned               boolean NOT NULL DEFAULT false,
    archived             boolean NOT NULL DEFAULT false,
    -- The reply being generated, if any: at most one per conversation.
    generating_id        uuid,
    last_message_at      timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The conversation list: a user's conversations, pinned first, by last activity.
CREATE INDEX conversations_user_activity_idx
    ON chat.conversations (user_id, archived, pinned DESC, last_message_at DESC, id);

CREATE TABLE chat.messages (
    id                uuid PRIMARY KEY,
    conversation_id   uuid NOT NULL REFERENCES chat.conversations (id) ON DELETE CASCADE,
    parent_id         uuid REFERENCES chat.messages (id) ON DELETE CASCADE,
    -- Distance from the root: the active branch holds depth + 1 messages up to this one.
    depth             integer NOT NULL CHECK (depth >= 0),
    role              text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content           text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'complete'
                      CHECK (status IN ('complete', 'streaming', 'stopped', 'failed', 'interrupted')),
    -- Why a reply failed or was interrupted: a stable code and a sentence for people.
    failure_code      text,
    failure_message   text,
    -- A streaming reply: how many pieces are stored, when its generator last wrote, and
    -- whether someone asked it to stop (seen by the generator on whichever instance runs it).
    seq               integer NOT NULL DEFAULT 0,
    -- Where each stored piece ends in `content` (bytes): a reader resuming after piece N
    -- gets exactly the text after it.
    piece_ends        integer[] NOT NULL DEFAULT '{}',
    heartbeat_at      timestamptz,
    stop_requested    boolean NOT NULL DEFAULT false,
    -- A reply: the model and what it cost, and exactly what was sent to produce it.
    model             text,
    prompt_tokens     integer,
    completion_tokens integer,
    prompt            jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Siblings (swipes) of a message: same conversation and parent. Roots have no parent, so
-- the key maps NULL to the nil UUID to stay indexable.
CREATE INDEX messages_siblings_idx ON chat.messages
    (conversation_id, (coalesce(parent_id, '00000000-0000-0000-0000-000000000000'::uuid)), id);

-- Deleting a message deletes its subtree through the foreign key, which looks children up
-- by parent.
CREATE INDEX messages_parent_idx ON chat.messages (parent_id);

-- Replies whose generator may have died (start-up and periodic repair).
CREATE INDEX messages_streaming_idx ON chat.messages (heartbeat_at) WHERE status = 'streaming';
