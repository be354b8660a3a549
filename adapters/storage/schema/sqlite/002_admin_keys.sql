-- Admin keys, each ledger row's attempts, and the indexes the console's reads use.
-- `admin`: 1 for a key that may manage every tenant (the admin API, the console's Keys
-- and Providers pages); 0 for a tenant key. `attempt_log`: JSON array, one object per
-- provider attempt ({"deployment", "provider", "attempt", "outcome"}).
ALTER TABLE keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN attempt_log TEXT NOT NULL DEFAULT '[]';
-- Every ledger read is a time range, newest first, paged on (at, id): across tenants,
-- within one tenant, or for one key. (tenant, at, id) replaces (tenant, at).
CREATE INDEX usage_at ON usage (at, id);
CREATE INDEX usage_tenant_at_id ON usage (tenant, at, id);
DROP INDEX usage_tenant_at;
CREATE INDEX usage_key_at ON usage (key_id, at, id);
