-- Billing: subscriptions (the one source of a user's tier), token usage per month, and the
-- payment provider's webhook events. Owned by src/modules/billing; identity asks billing for
-- the tier through `Subscriptions`.

-- One row per user who ever had a paid plan; no row means free. A row whose valid_until has
-- passed counts as free the moment it passes (the recurring job then writes it down).
CREATE TABLE billing.subscriptions (
    user_id                  uuid PRIMARY KEY REFERENCES identity.users (id) ON DELETE CASCADE,
    tier                     text NOT NULL CHECK (tier IN ('free', 'premium', 'enterprise')),
    status                   text NOT NULL
                             CHECK (status IN ('active', 'trialing', 'past_due', 'canceled', 'expired')),
    valid_until              timestamptz,
    -- Who set it last: an operator ('admin') or the payment provider ('provider').
    source                   text NOT NULL CHECK (source IN ('admin', 'provider')),
    provider_customer_id     text,
    provider_subscription_id text,
    -- The provider's time of the last event applied: an older event changes nothing.
    event_at                 timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX subscriptions_provider_key ON billing.subscriptions (provider_subscription_id);
CREATE INDEX subscriptions_customer_idx ON billing.subscriptions (provider_customer_id);
CREATE INDEX subscriptions_lapsing_idx ON billing.subscriptions (valid_until) WHERE tier <> 'free';

-- The tier moves here from identity: paid accounts keep what they had.
INSERT INTO billing.subscriptions (user_id, tier, status, valid_until, source)
SELECT id, tier, 'active', tier_valid_until, 'admin' FROM identity.users WHERE tier <> 'free';
ALTER TABLE identity.users DROP COLUMN tier, DROP COLUMN tier_valid_until;

-- What a user consumed in one calendar month (UTC), counted by atomic increments.
CREATE TABLE billing.usage (
    user_id  uuid NOT NULL REFERENCES identity.users (id) ON DELETE CASCADE,
    -- The first day of the month.
    period   date NOT NULL,
    -- Replies asked of the language model, and their prompt + completion tokens.
    requests bigint NOT NULL DEFAULT 0,
    tokens   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, period)
);

-- Every signed event the provider sent, once (its id is the idempotency key).
CREATE TABLE billing.webhook_events (
    id           text PRIMARY KEY,
    kind         text NOT NULL,
    -- The provider's creation time: it orders events that arrive out of order.
    created_at   timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    payload      jsonb NOT NULL,
    -- The account it concerned, once processed (NULL when it matched none).
    user_id      uuid REFERENCES identity.users (id) ON DELETE SET NULL,
    processed_at timestamptz,
    outcome      text
);
CREATE INDEX webhook_events_user_idx ON billing.webhook_events (user_id);

-- Identity: when an account last logged in (the admin list shows it), and sessions by last
-- use (active users).
ALTER TABLE identity.users ADD COLUMN last_login_at timestamptz;
CREATE INDEX sessions_last_used_idx ON identity.sessions (last_used_at);

-- Catalog: why moderators hid a character (the admin list shows it), and the hidden ones
-- newest first.
ALTER TABLE catalog.characters ADD COLUMN hidden_reason text;
CREATE INDEX characters_hidden_idx ON catalog.characters (hidden_at DESC)
    WHERE hidden_at IS NOT NULL;
