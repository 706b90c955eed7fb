-- API keys scoped to connections: a scoped key may only send through, and read the messages and
-- status of, the connections listed here.
--
-- `scoped` is kept on the key itself, not inferred from the rows below: when every connection of
-- a scoped key is removed (the rows cascade away), the key must be left with no connection at
-- all, never silently widened to "every connection".
ALTER TABLE api_keys ADD COLUMN scoped INTEGER NOT NULL DEFAULT 0;

CREATE TABLE api_key_connections (
    key_id        INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    connection_id INTEGER NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, connection_id)
);
-- Removing a connection looks its scope rows up by connection.
CREATE INDEX api_key_connections_connection ON api_key_connections (connection_id);
