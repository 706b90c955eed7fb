-- How a connection's mail leaves: 'smtp' (AUTH XOAUTH2, as before) or 'graph' (Microsoft Graph
-- sendMail, for tenants where SMTP AUTH is off), and the Graph base URL set for it
-- (NULL: the provider cloud's Graph, https://graph.microsoft.com for the worldwide cloud).
ALTER TABLE connections ADD COLUMN transport TEXT NOT NULL DEFAULT 'smtp';
ALTER TABLE connections ADD COLUMN graph_url TEXT;
