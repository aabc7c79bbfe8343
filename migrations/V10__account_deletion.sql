-- Identity: an account whose owner asked to delete it is disabled at once and keeps the
-- time its erasure is due. Login then says so (the client offers a restore), and a restore
-- clears both. Owned by src/modules/identity; privacy asks for it through `Accounts`.
ALTER TABLE identity.users ADD COLUMN deletion_scheduled_for timestamptz;
