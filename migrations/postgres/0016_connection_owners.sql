-- Which instance runs a connection's senders (PostgreSQL, several instances): a lease taken
-- only when free or expired (by the database's clock), renewed by the owner's heartbeat and
-- deleted when its senders end, so the connection's limits are enforced by one scheduler.
CREATE TABLE connection_owners (
    connection_id BIGINT PRIMARY KEY,
    instance TEXT NOT NULL,
    lease_id BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
