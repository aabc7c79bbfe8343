-- Durable job queue (platform::jobs). Workers claim due jobs with FOR UPDATE SKIP LOCKED and
-- hold a lease (locked_until) that they renew; a job whose lease expired is claimed again.
CREATE TABLE platform.jobs (
    id            uuid        PRIMARY KEY,
    kind          text        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state         text        NOT NULL DEFAULT 'queued'
                              CHECK (state IN ('queued', 'running', 'dead')),
    attempts      integer     NOT NULL DEFAULT 0,
    max_attempts  integer     NOT NULL CHECK (max_attempts > 0),
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_by     uuid,
    locked_until  timestamptz,
    last_error    text,
    dedup_key     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- At most one live (queued or running) job per dedup key.
CREATE UNIQUE INDEX jobs_live_dedup_key ON platform.jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state <> 'dead';
CREATE INDEX jobs_due ON platform.jobs (run_at) WHERE state = 'queued';
CREATE INDEX jobs_leased ON platform.jobs (locked_until) WHERE state = 'running';

-- Recurring jobs: one row per schedule; the instance that advances next_run_at enqueues the
-- period's job, so a period runs once across all instances.
CREATE TABLE platform.job_schedules (
    name         text        PRIMARY KEY,
    kind         text        NOT NULL,
    every_ms     bigint      NOT NULL CHECK (every_ms > 0),
    next_run_at  timestamptz NOT NULL,
    last_slot    bigint
);
