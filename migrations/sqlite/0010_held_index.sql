-- The delivery scheduler looks, every few seconds, for connections whose held mail may be
-- released (their settings or tokens changed). This index holds only mail held for the
-- connection's sake, so that look costs nothing while no mail is held.
CREATE INDEX messages_held_by_connection ON messages (connection_id)
    WHERE status = 'held' AND held_by = 'connection';
