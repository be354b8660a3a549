-- Drops migration 004's `idempotency_keys_expires (expires_at)`: no query can use it.
-- Rows are read and written by their primary key (tenant, key); the only query on
-- `expires_at` is the prune's (adapters/storage/prune.py), whose condition is
-- `(state = 'done' AND expires_at <= ?) OR (state = 'running' AND locked_until <= ?)`,
-- and an OR is read through indexes only when every branch has one (`locked_until` has
-- none), so both backends scan the table with or without it. It only cost writes: an
-- entry added on a key's claim and moved when its answer is kept (tests in
-- tests/adapters/test_storage_prune.py check the prune's plan without it).
DROP INDEX idempotency_keys_expires;
