-- Connections declared in postern.toml ([[connections]]): created and updated from the file at
-- start and on reload; the CLI, API and admin UI refuse to edit or remove them.
ALTER TABLE connections ADD COLUMN managed_by_file INTEGER NOT NULL DEFAULT 0;
