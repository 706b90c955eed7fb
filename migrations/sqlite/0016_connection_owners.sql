-- Which instance runs a connection's senders. Used on PostgreSQL only: on SQLite one process
-- serves the store and always owns every connection, so this table stays empty (it exists so
-- that both backends keep the same schema).
CREATE TABLE connection_owners (
    connection_id INTEGER PRIMARY KEY,
    instance TEXT NOT NULL,
    lease_id INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
