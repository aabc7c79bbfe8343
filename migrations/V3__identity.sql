-- Identity: accounts, sessions (one per login), refresh tokens, one-time email tokens and
-- the audit log. Owned by src/modules/identity; no other module queries these tables.

CREATE TABLE identity.users (
    id                uuid PRIMARY KEY,
    -- Stored normalized (trimmed, lower-case); the unique index makes it case-insensitive.
    email             text NOT NULL,
    password_hash     text NOT NULL,
    display_name      text NOT NULL,
    avatar_url        text,
    bio               text,
    preferences       jsonb NOT NULL DEFAULT '{}'::jsonb,
    role              text NOT NULL DEFAULT 'user'
                      CHECK (role IN ('user', 'moderator', 'admin')),
    tier              text NOT NULL DEFAULT 'free'
                      CHECK (tier IN ('free', 'premium', 'enterprise')),
    tier_valid_until  timestamptz,
    experience        bigint NOT NULL DEFAULT 0 CHECK (experience >= 0),
    email_verified_at timestamptz,
    disabled_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON identity.users (email);

-- A session is one login and everything refreshed from it (the refresh-token "family").
-- Its id is the `sid` claim of every access token it issues.
CREATE TABLE identity.sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text,
    ip             text,
    user_agent     text
);
CREATE INDEX sessions_user_idx ON identity.sessions (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens are random 256-bit values; only their SHA-256 is stored. A token is used
-- once: rotation marks it used and issues its successor in the same session.
CREATE TABLE identity.refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES identity.sessions (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON identity.refresh_tokens (session_id);

-- Single-use tokens sent by email (verify the address, reset the password), hashed.
CREATE TABLE identity.email_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX email_tokens_user_idx ON identity.email_tokens (user_id, purpose);

-- Security-relevant actions. `subject_id` is the account the event is about (kept for the
-- user's own export), `actor_id` who did it (the user, an admin, or NULL for the system/CLI).
CREATE TABLE identity.audit_log (
    id            uuid PRIMARY KEY,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    actor_id      uuid,
    subject_id    uuid,
    action        text NOT NULL,
    resource_type text,
    resource_id   text,
    old_value     jsonb,
    new_value     jsonb,
    ip            text,
    user_agent    text,
    outcome       text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied'))
);
CREATE INDEX audit_log_subject_idx ON identity.audit_log (subject_id, occurred_at DESC);
CREATE INDEX audit_log_action_idx ON identity.audit_log (action, occurred_at DESC);
CREATE INDEX audit_log_time_idx ON identity.audit_log (occurred_at DESC);
