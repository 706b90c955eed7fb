-- What Microsoft Graph does with a message whose base64 is over its 4 MB request limit:
-- 'fail' (refused with the reason, as before) or 'draft' (a draft plus attachment upload sessions).
ALTER TABLE connections ADD COLUMN graph_large TEXT NOT NULL DEFAULT 'fail';
