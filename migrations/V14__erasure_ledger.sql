-- The erasure ledger: the id of every erased account, and nothing else of the person. It
-- sits in a schema of its own that backups leave out and restores leave alone (and
-- `companion admin restore` runs this file again, so it must stay idempotent): after a
-- restore of an older backup, every restored account the ledger names is erased again.
-- Owned by src/modules/privacy.
CREATE SCHEMA IF NOT EXISTS privacy_ledger;
CREATE TABLE IF NOT EXISTS privacy_ledger.erased_accounts (
    user_id   uuid PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);
