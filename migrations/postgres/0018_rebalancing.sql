-- Rebalancing connection ownership: an instance that finds a connection it has mail for held
-- by another instance says so here (until wanted_until, by the database's clock); an owner
-- holding more than its share of the owned connections gives the wanted ones up.
ALTER TABLE connection_owners ADD COLUMN wanted_by TEXT;
ALTER TABLE connection_owners ADD COLUMN wanted_until BIGINT;
