-- Initial schema (SQLite). Money: TEXT with 10 decimal places. Datetimes: ISO-8601 UTC
-- text of fixed width. JSON: TEXT. Booleans: INTEGER 0/1.
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    name TEXT,
    rpm INTEGER,
    tpm INTEGER,
    budget_usd TEXT,
    budget_period TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX keys_tenant ON keys (tenant, created_at);

CREATE TABLE usage (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT,
    deployment TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost TEXT NOT NULL,
    price_version TEXT,
    status TEXT NOT NULL,
    error_code TEXT,
    latency_ms INTEGER,
    ttft_ms INTEGER,
    attempts INTEGER NOT NULL,
    stream INTEGER NOT NULL
);
CREATE INDEX usage_tenant_at ON usage (tenant, at);

CREATE TABLE state (
    scope TEXT PRIMARY KEY,
    data TEXT
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    key_id TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    run_after REAL NOT NULL,
    lease_owner TEXT,
    lease_expires REAL,
    deadline REAL,
    cancel_requested INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    cost TEXT,
    webhook_url TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT
);
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at, id);
CREATE INDEX jobs_queued ON jobs (created_at, id) WHERE status IN ('queued', 'running');

CREATE TABLE idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_expires ON idempotency (expires_at);
