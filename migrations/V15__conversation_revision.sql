-- A conversation's revision counts the changes to what its next prompt is built from: the
-- active branch moving (a new turn, a switch, a continued or deleted reply) or messages
-- expiring under it. An instance that keeps a conversation warm in memory (chat's warm
-- state) starts its next reply only if the revision is still the one it knows, so a change
-- made through another instance is never missed. Owned by src/modules/chat.
ALTER TABLE chat.conversations ADD COLUMN IF NOT EXISTS revision bigint NOT NULL DEFAULT 0;
