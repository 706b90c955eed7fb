-- An SMTP connection may fall back to Microsoft Graph when SMTP AUTH answers 535 5.7.139
-- (SMTP AUTH disabled for the mailbox or tenant): NULL = no fallback, 'graph'.
ALTER TABLE connections ADD COLUMN fallback TEXT;
-- Which transport carried (or tried) each attempt: 'smtp' or 'graph' (NULL for attempts recorded
-- before this column, all SMTP or a Graph connection's, and for attempts no transport made:
-- mail waiting for a sending limit).
ALTER TABLE attempts ADD COLUMN transport TEXT;
-- Attempts recorded before: by their connection's transport (all of them until now).
UPDATE attempts SET transport = (
    SELECT c.transport FROM messages m JOIN connections c ON c.id = m.connection_id
    WHERE m.id = attempts.message_id
);
