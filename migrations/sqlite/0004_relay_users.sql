-- Relay users: legacy apps log in to the relay with these. Passwords are never stored:
-- generated ones as HMAC-SHA256 under a sealed server key ('hmac'), admin-chosen ones as
-- argon2id PHC strings ('argon2').
CREATE TABLE relay_users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    connection_id INTEGER NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    allow_from    TEXT NOT NULL DEFAULT '',
    hash_kind     TEXT NOT NULL CHECK (hash_kind IN ('hmac', 'argon2')),
    hash          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
