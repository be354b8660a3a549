-- Admin keys, each ledger row's attempts, and the indexes the console's reads use.
-- `admin`: true for a key that may manage every tenant (the admin API, the console's
-- Keys and Providers pages); false for a tenant key. `attempt_log`: one object per
-- provider attempt ({"deployment", "provider", "attempt", "outcome"}).
ALTER TABLE keys ADD COLUMN admin BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE usage ADD COLUMN attempt_log JSONB NOT NULL DEFAULT '[]'::jsonb;
-- Every ledger read is a time range, newest first, paged on (at, id): across tenants,
-- within one tenant, or for one key. (tenant, at, id) replaces (tenant, at).
CREATE INDEX usage_at ON usage (at, id);
CREATE INDEX usage_tenant_at_id ON usage (tenant, at, id);
DROP INDEX usage_tenant_at;
CREATE INDEX usage_key_at ON usage (key_id, at, id);
