-- Privacy: consents with their history, data exports and erasures. Owned by
-- src/modules/privacy; no other module queries these tables.

-- The current answer per purpose; every change is also a row of consent_events.
CREATE TABLE privacy.consents (
    user_id    uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('marketing', 'analytics', 'tracking')),
    granted    boolean NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, purpose)
);

CREATE TABLE privacy.consent_events (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('marketing', 'analytics', 'tracking')),
    granted     boolean NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    ip          text,
    user_agent  text
);
CREATE INDEX consent_events_user_idx ON privacy.consent_events (user_id, id);

-- An archive of a user's data: asked for, written by a job, downloadable until expires_at.
CREATE TABLE privacy.exports (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'ready', 'failed', 'expired')),
    object_key   text NOT NULL,
    size_bytes   bigint,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    completed_at timestamptz,
    expires_at   timestamptz
);
CREATE INDEX exports_user_idx ON privacy.exports (user_id, created_at DESC);
CREATE INDEX exports_expiry_idx ON privacy.exports (expires_at) WHERE state = 'ready';

-- An erasure, written before it starts and kept after it ends as the record that it
-- happened. `user_id` is the marker: it names the account while the erasure is scheduled
-- or running, and is cleared last (no foreign key: the account row goes before it).
CREATE TABLE privacy.erasures (
    id            uuid PRIMARY KEY,
    user_id       uuid UNIQUE,
    pseudonym     uuid NOT NULL,
    state         text NOT NULL CHECK (state IN ('scheduled', 'running', 'done')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz,
    completed_at  timestamptz,
    -- The modules whose part is erased, in order (progress, for operators).
    steps         text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX erasures_due_idx ON privacy.erasures (scheduled_for) WHERE state <> 'done';
