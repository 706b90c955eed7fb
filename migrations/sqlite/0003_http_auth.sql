-- HTTP API keys, admin accounts, admin sessions and pending web authorizations.

-- API keys: only a keyed hash (HMAC-SHA256) of the key is stored; `prefix` helps admins tell keys apart.
-- Revoked keys stay for the record (messages name their submitter); a name is unique among live keys.
CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('send', 'admin')),
    hash         BLOB NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- Admin accounts for the web UI; `password_hash` is an argon2id PHC string.
CREATE TABLE admin_users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

-- Server-side sessions: the cookie holds a random token, the table only its SHA-256.
CREATE TABLE admin_sessions (
    token_hash   BLOB PRIMARY KEY,
    admin_id     INTEGER NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

-- A web consent in progress: `state` (hashed) -> connection, PKCE verifier (sealed), and what it is
-- bound to (the browser that started it, through a hashed binding cookie). Single use, short-lived.
CREATE TABLE oauth_pending (
    state_hash    BLOB PRIMARY KEY,
    connection_id INTEGER NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    verifier      BLOB NOT NULL,
    redirect_uri  TEXT NOT NULL,
    binding_hash  BLOB,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
