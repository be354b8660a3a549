-- Initial schema (Postgres). Money: NUMERIC(30,10). Datetimes: timestamptz. JSON: jsonb.
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    name TEXT,
    rpm INTEGER,
    tpm BIGINT,
    budget_usd NUMERIC(30, 10),
    budget_period TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX keys_tenant ON keys (tenant, created_at);

CREATE TABLE usage (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    at TIMESTAMPTZ NOT NULL,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT,
    deployment TEXT,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost NUMERIC(30, 10) NOT NULL,
    price_version TEXT,
    status TEXT NOT NULL,
    error_code TEXT,
    latency_ms BIGINT,
    ttft_ms BIGINT,
    attempts INTEGER NOT NULL,
    stream BOOLEAN NOT NULL
);
CREATE INDEX usage_tenant_at ON usage (tenant, at);

CREATE TABLE state (
    scope TEXT PRIMARY KEY,
    data JSONB,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    key_id TEXT NOT NULL,
    request JSONB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    run_after DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_expires DOUBLE PRECISION,
    deadline DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL,
    result JSONB,
    error JSONB,
    cost NUMERIC(30, 10),
    webhook_url TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ
);
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at, id);
CREATE INDEX jobs_queued ON jobs (created_at, id) WHERE status IN ('queued', 'running');

CREATE TABLE idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    value JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_expires ON idempotency (expires_at);
