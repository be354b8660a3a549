-- Idempotency keys (core/idempotency.py): one row per (tenant, key). `state` is
-- 'running' (a request holds the key until `locked_until`) or 'done' (`answer` is
-- replayed until `expires_at`). Times are epoch seconds. `answer`: JSON
-- {"status", "headers": [[name, value], ...], "chunks": [base64, ...]}.
-- The unused `idempotency` table of 001 is replaced by this one.
DROP TABLE idempotency;
CREATE TABLE idempotency_keys (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done')),
    owner TEXT NOT NULL,
    locked_until DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    answer JSONB,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
