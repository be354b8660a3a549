-- Retention (core/retention.py, adapters/storage/prune.py): the prune finds finished jobs
-- and finished webhook deliveries by when they finished, oldest first, in bounded
-- batches. The ledger (usage_at), the rollup (its keys begin with the hour), stream heads
-- (stream_heads_expires), idempotency keys (idempotency_keys_expires) and state (its
-- scope) have the indexes their prunes need already.
CREATE INDEX jobs_completed ON jobs (completed_at);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at);
