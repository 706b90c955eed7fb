-- Expiry tracking: the client secret's expiry date as the admin read it in the Azure portal
-- (or as AADSTS7000222 revealed it), unix seconds at 00:00 UTC of that day.
ALTER TABLE connections ADD COLUMN secret_expires_at INTEGER;
-- The last time a token was obtained or mail was sent through the connection.
ALTER TABLE connections ADD COLUMN last_used_at INTEGER;

-- What the notifier last saw, per connection (or '' for the server) and topic, so that one state
-- change gives one notification, across restarts.
CREATE TABLE notification_state (
    subject    TEXT NOT NULL,
    topic      TEXT NOT NULL,
    state      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (subject, topic)
);

-- Events to tell the admin. `done_at` is set once every channel delivered or gave up: events
-- without it are sent again after a restart.
CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event      TEXT NOT NULL,
    connection TEXT,
    reason     TEXT NOT NULL,
    fix        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    done_at    INTEGER
);
CREATE INDEX notifications_pending ON notifications (done_at) WHERE done_at IS NULL;

-- Every delivery attempt of every notification, per channel.
CREATE TABLE notification_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id INTEGER NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,
    ok              INTEGER NOT NULL,
    detail          TEXT NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX notification_attempts_by_notification ON notification_attempts (notification_id);
