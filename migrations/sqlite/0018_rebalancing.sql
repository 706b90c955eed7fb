-- Rebalancing connection ownership (PostgreSQL only, like connection_owners itself: the
-- columns exist here so that both backends keep the same schema). See the PostgreSQL migration.
ALTER TABLE connection_owners ADD COLUMN wanted_by TEXT;
ALTER TABLE connection_owners ADD COLUMN wanted_until INTEGER;
