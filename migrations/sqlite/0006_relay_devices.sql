-- Relay users for devices and fixed-From software:
-- networks: CIDR blocks (space-separated) whose clients are this user without AUTH; a user
--   with networks has no usable password (its hash is of a password nobody was shown).
-- from_policy: what the relay does with a sender the user may not use: 'refuse' (550, as
--   before), 'rewrite' (the envelope sender and From: become the connection's mailbox), or
--   'allow-listed' (only the connection's mailbox and allow_from, as before).
-- display_name: the name put in a rewritten From: (else the original display name is kept).
ALTER TABLE relay_users ADD COLUMN networks TEXT NOT NULL DEFAULT '';
ALTER TABLE relay_users ADD COLUMN from_policy TEXT NOT NULL DEFAULT 'refuse'
    CHECK (from_policy IN ('refuse', 'rewrite', 'allow-listed'));
ALTER TABLE relay_users ADD COLUMN display_name TEXT;
