-- Connections: every field of the SMTP OAuth connection form. Secrets live sealed in `secrets`.
CREATE TABLE connections (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    display_name   TEXT,
    provider       TEXT NOT NULL,
    flow           TEXT NOT NULL,
    host           TEXT NOT NULL,
    port           INTEGER NOT NULL,
    tls            TEXT NOT NULL,
    domain         TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    tenant         TEXT,
    client_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    redirect_uri   TEXT,
    authorize_url  TEXT,
    token_url      TEXT,
    device_url     TEXT,
    ca_file        TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    max_concurrent INTEGER NOT NULL DEFAULT 3,
    status         TEXT NOT NULL DEFAULT 'new',
    status_reason  TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

-- Sealed secrets: kind is client_secret | refresh_token | access_token.
CREATE TABLE secrets (
    connection_id INTEGER NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    sealed        BLOB NOT NULL,
    expires_at    INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (connection_id, kind)
);

-- Server-wide sealed values (e.g. the pepper for relay password hashes).
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    sealed     BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
