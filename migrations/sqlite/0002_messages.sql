-- The outbox and the sent-mail log are one table: a message is queued, then sending, then
-- sent / deferred / failed; `held` waits for an admin or for its connection to be fixed.
CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    connection_id    INTEGER NOT NULL,
    connection_name  TEXT NOT NULL,
    source           TEXT NOT NULL,          -- relay | api | cli
    submitter        TEXT,                   -- relay user or API key name
    mail_from        TEXT NOT NULL,
    subject          TEXT,
    message_id       TEXT,                   -- the Message-ID header
    size             INTEGER NOT NULL,
    body             BLOB,                   -- dropped once sent
    status           TEXT NOT NULL,
    held_by          TEXT,                   -- admin | connection, when status = held
    attempts         INTEGER NOT NULL DEFAULT 0,
    queued_at        INTEGER NOT NULL,       -- unix milliseconds
    last_attempt_at  INTEGER,
    next_attempt_at  INTEGER NOT NULL,
    done_at          INTEGER,
    lease_until      INTEGER,
    last_error       TEXT,
    idempotency_key  TEXT
);
CREATE INDEX messages_ready ON messages (connection_id, status, next_attempt_at);
CREATE INDEX messages_queued_at ON messages (queued_at);
CREATE UNIQUE INDEX messages_idempotency ON messages (submitter, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE recipients (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    address    TEXT NOT NULL,
    status     TEXT NOT NULL,                -- pending | sent | deferred | failed
    reply      TEXT,
    updated_at INTEGER,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX recipients_address ON recipients (address);

CREATE TABLE attempts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    outcome    TEXT NOT NULL,                -- sent | deferred | failed | held
    detail     TEXT
);
CREATE INDEX attempts_message ON attempts (message_id);
