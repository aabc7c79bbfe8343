-- Chat: a conversation's messages in creation order (UUID v7), so an export reads them in
-- batches and an erasure deletes them newest first without sorting the whole conversation.
CREATE INDEX messages_conversation_idx ON chat.messages (conversation_id, id);

-- Retention finds old messages by age.
CREATE INDEX messages_created_idx ON chat.messages (created_at);
