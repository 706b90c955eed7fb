-- Fewer index entries per message. `messages_ready` (connection, status, next attempt) changed
-- with each status change: an entry written when a message was queued, moved when it was
-- claimed and again when it was sent, for the log's whole life. Every query it served has a
-- smaller index now: claims and due times `messages_due`, held mail
-- `messages_held_by_connection`, leases `messages_sending`, the log its id and
-- `messages_queued_at`.
DROP INDEX messages_ready;
-- The daily limits count what a connection sent in the last 24 hours: mail never attempted
-- has nothing to count, and no entry until its first attempt.
DROP INDEX messages_connection_attempt;
CREATE INDEX messages_connection_attempt ON messages (connection_id, last_attempt_at)
    WHERE last_attempt_at IS NOT NULL;
