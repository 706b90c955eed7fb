-- Bodies in a table of their own. A `messages` row is written three times (queued, claimed,
-- recorded); with a 2 KB body in it, about one row fits a page, so each of those writes put a
-- whole page into the write-ahead log and again into the database at the checkpoint. Without
-- the body a page holds a dozen rows, and a claim or a record of 32 messages writes a few pages.
-- A body is written once, read at each claim, and deleted once its message is sent.
CREATE TABLE message_bodies (
    id   TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    body BLOB NOT NULL
);
INSERT INTO message_bodies (id, body) SELECT id, body FROM messages WHERE body IS NOT NULL;
ALTER TABLE messages DROP COLUMN body;
