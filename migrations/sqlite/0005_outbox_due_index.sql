-- Workers claim the oldest due messages of a connection. This index holds only waiting mail in
-- claim order, so a claim reads its batch and stops, however long the queue (the older
-- messages_ready index needed a sort of every due message for each claim).
CREATE INDEX messages_due ON messages (connection_id, next_attempt_at, id)
    WHERE status IN ('queued', 'deferred');
