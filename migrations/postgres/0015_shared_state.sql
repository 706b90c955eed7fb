-- State every instance behind one store must share (several `serve` on one PostgreSQL).

-- Web consents in progress, until now kept in each process's memory (the table 0003 created for
-- them was never used): a callback may reach another instance than the one that started the
-- consent. `state_hash` is SHA-256 of `state` (a bearer secret), the PKCE verifier is sealed, and a
-- row is redeemed once (DELETE … RETURNING).
ALTER TABLE oauth_pending RENAME TO pending_consents;
CREATE INDEX pending_consents_created ON pending_consents (created_at);

-- Failed logins (relay SMTP AUTH by client address, admin web login by client address and by user
-- name) counted across the cluster, so a guesser cannot spread its tries over the instances.
-- `failures` counts those since the window opened; a failure after the window (`last_at` older
-- than it) starts a new count. Times are unix milliseconds, from the database on PostgreSQL.
CREATE TABLE auth_failures (
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    failures BIGINT NOT NULL,
    last_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX auth_failures_last ON auth_failures (last_at);
