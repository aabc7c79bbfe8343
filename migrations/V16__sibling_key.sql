-- Siblings (swipes) of a message share its parent; the roots of a conversation are siblings
-- of each other. Keyed by coalesce(parent_id, conversation_id), a sibling count is one range
-- of this index, and no other index can serve it, so its plan does not depend on the
-- table's statistics. The key it replaces began with the conversation; on a table not yet
-- analyzed it tied with (conversation_id, id), and that plan read every message of the
-- conversation for each count. Owned by src/modules/chat.
CREATE INDEX IF NOT EXISTS messages_sibling_key_idx ON chat.messages
    ((coalesce(parent_id, conversation_id)), id);
DROP INDEX IF EXISTS chat.messages_siblings_idx;
