-- A connection's overrides of its provider's sending limits, as `name=N,…`
-- (messages-per-minute, messages-per-day, recipients-per-day, recipients-per-message).
-- Empty: the provider's presets.
ALTER TABLE connections ADD COLUMN limits TEXT NOT NULL DEFAULT '';

-- Mail sent by a connection in the last 24 hours, for its daily limits after a restart.
CREATE INDEX messages_connection_attempt ON messages (connection_id, last_attempt_at);
