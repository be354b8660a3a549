-- The hourly rollup of the usage ledger without the key (adapters/storage/rollup.py):
-- replaces migration 003's `usage_hourly` and `usage_hourly_bins`, which had `key_id` in
-- their key. With it, a key sending about one request per model an hour gave the rollup
-- as many rows as the ledger; reads filtered or grouped by key now read the ledger
-- through `usage_key_at (key_id, at, id)` (migration 002) instead. Every other read of
-- the console's usage page and of /v1/usage takes the whole hours of its window from
-- here and only the partial hours at its edges from `usage`. The ledger writer adds each
-- row it inserts, in the same transaction. Keyed by the hour (YYYY-MM-DDTHH, UTC) and
-- every other column a ledger read filters or groups on; a NULL provider or deployment
-- is ''.
-- `cost` is exact NUMERIC, unbounded (an hour's sum may pass what one row may hold).
CREATE TABLE usage_hourly_nokey (
    hour TEXT NOT NULL,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    deployment TEXT NOT NULL,
    status TEXT NOT NULL,
    requests BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost NUMERIC NOT NULL,
    latency_ms_sum BIGINT NOT NULL,
    latency_count BIGINT NOT NULL,
    ttft_ms_sum BIGINT NOT NULL,
    ttft_count BIGINT NOT NULL,
    PRIMARY KEY (hour, tenant, project, model, provider, deployment, status)
);
CREATE INDEX usage_hourly_nokey_tenant ON usage_hourly_nokey (tenant, hour);
-- Rows per (metric, core.percentiles bin): the latency and TTFT histograms.
CREATE TABLE usage_hourly_nokey_bins (
    hour TEXT NOT NULL,
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    deployment TEXT NOT NULL,
    status TEXT NOT NULL,
    metric TEXT NOT NULL,
    bin INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (hour, tenant, project, model, provider, deployment, status, metric, bin)
);
CREATE INDEX usage_hourly_nokey_bins_tenant ON usage_hourly_nokey_bins (tenant, hour);
-- The rows already in the ledger (the same sums as the writer's, in SQL).
INSERT INTO usage_hourly_nokey
SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), tenant, project, model, coalesce(provider, ''),
       coalesce(deployment, ''), status, count(*), sum(input_tokens), sum(output_tokens),
       sum(cached_input_tokens), sum(cache_write_tokens), sum(reasoning_tokens),
       sum(cost),
       coalesce(sum(latency_ms), 0), count(latency_ms),
       coalesce(sum(ttft_ms), 0), count(ttft_ms)
FROM usage GROUP BY 1, 2, 3, 4, 5, 6, 7;
INSERT INTO usage_hourly_nokey_bins
SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), tenant, project, model, coalesce(provider, ''),
       coalesce(deployment, ''), status, 'latency_ms',
       CASE WHEN latency_ms < 1 THEN 0 WHEN latency_ms < 2 THEN 1 WHEN latency_ms < 3 THEN 2 WHEN latency_ms < 5 THEN 3 WHEN latency_ms < 7 THEN 4 WHEN latency_ms < 10 THEN 5 WHEN latency_ms < 15 THEN 6 WHEN latency_ms < 20 THEN 7 WHEN latency_ms < 30 THEN 8 WHEN latency_ms < 50 THEN 9 WHEN latency_ms < 70 THEN 10 WHEN latency_ms < 100 THEN 11 WHEN latency_ms < 150 THEN 12 WHEN latency_ms < 200 THEN 13 WHEN latency_ms < 300 THEN 14 WHEN latency_ms < 500 THEN 15 WHEN latency_ms < 700 THEN 16 WHEN latency_ms < 1000 THEN 17 WHEN latency_ms < 1500 THEN 18 WHEN latency_ms < 2000 THEN 19 WHEN latency_ms < 3000 THEN 20 WHEN latency_ms < 5000 THEN 21 WHEN latency_ms < 7000 THEN 22 WHEN latency_ms < 10000 THEN 23 WHEN latency_ms < 15000 THEN 24 WHEN latency_ms < 20000 THEN 25 WHEN latency_ms < 30000 THEN 26 WHEN latency_ms < 45000 THEN 27 WHEN latency_ms < 60000 THEN 28 WHEN latency_ms < 90000 THEN 29 WHEN latency_ms < 120000 THEN 30 WHEN latency_ms < 180000 THEN 31 WHEN latency_ms < 300000 THEN 32 WHEN latency_ms < 600000 THEN 33 ELSE 34 END,
       count(*)
FROM usage WHERE latency_ms IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;
INSERT INTO usage_hourly_nokey_bins
SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24'), tenant, project, model, coalesce(provider, ''),
       coalesce(deployment, ''), status, 'ttft_ms',
       CASE WHEN ttft_ms < 1 THEN 0 WHEN ttft_ms < 2 THEN 1 WHEN ttft_ms < 3 THEN 2 WHEN ttft_ms < 5 THEN 3 WHEN ttft_ms < 7 THEN 4 WHEN ttft_ms < 10 THEN 5 WHEN ttft_ms < 15 THEN 6 WHEN ttft_ms < 20 THEN 7 WHEN ttft_ms < 30 THEN 8 WHEN ttft_ms < 50 THEN 9 WHEN ttft_ms < 70 THEN 10 WHEN ttft_ms < 100 THEN 11 WHEN ttft_ms < 150 THEN 12 WHEN ttft_ms < 200 THEN 13 WHEN ttft_ms < 300 THEN 14 WHEN ttft_ms < 500 THEN 15 WHEN ttft_ms < 700 THEN 16 WHEN ttft_ms < 1000 THEN 17 WHEN ttft_ms < 1500 THEN 18 WHEN ttft_ms < 2000 THEN 19 WHEN ttft_ms < 3000 THEN 20 WHEN ttft_ms < 5000 THEN 21 WHEN ttft_ms < 7000 THEN 22 WHEN ttft_ms < 10000 THEN 23 WHEN ttft_ms < 15000 THEN 24 WHEN ttft_ms < 20000 THEN 25 WHEN ttft_ms < 30000 THEN 26 WHEN ttft_ms < 45000 THEN 27 WHEN ttft_ms < 60000 THEN 28 WHEN ttft_ms < 90000 THEN 29 WHEN ttft_ms < 120000 THEN 30 WHEN ttft_ms < 180000 THEN 31 WHEN ttft_ms < 300000 THEN 32 WHEN ttft_ms < 600000 THEN 33 ELSE 34 END,
       count(*)
FROM usage WHERE ttft_ms IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;
-- Nothing reads the keyed rollup any more, and the writer no longer adds to it.
DROP TABLE usage_hourly_bins;
DROP TABLE usage_hourly;
