-- The durable webhook outbox (core.outbox). A row per message: its id is the message's
-- `webhook-id`, so a message is enqueued once; workers claim due rows with
-- FOR UPDATE SKIP LOCKED and a lease, so one attempt is made by exactly one process.
-- `jobs.webhook_events_filter`: the events a job's webhook wants (NULL: completed only).
ALTER TABLE jobs ADD COLUMN webhook_events_filter JSONB;
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_expires DOUBLE PRECISION,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at)
    WHERE status IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, created_at);
-- Each tenant's signing secret (`whsec_...`), moved out of the `state` table so that the
-- CLI and `umg worker` can read it beside a serving process. It must be kept readable
-- (it signs every delivery); it is never logged (see docs/operations.md).
CREATE TABLE webhook_secrets (
    tenant TEXT PRIMARY KEY,
    secret TEXT NOT NULL
);
INSERT INTO webhook_secrets (tenant, secret)
    SELECT substr(scope, 17), data->>'secret' FROM state
    WHERE scope LIKE 'webhooks:secret:%' AND data->>'secret' IS NOT NULL;
DELETE FROM state WHERE scope LIKE 'webhooks:secret:%';
