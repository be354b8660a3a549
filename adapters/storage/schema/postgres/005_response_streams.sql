-- Stored response events: the events of a stream as they were sent (adapters/stream_log.py),
-- so a client can resume it from any gateway process, and a replay can send them again.
-- `updated_at`: Unix seconds of the last write (a running stream's process writes its head
-- at least every few seconds, so a reader elsewhere can tell it is gone).
-- `expires_at`: Unix seconds after which the events are no longer served (while the
-- stream runs: a bound in case its process died; once it ended: the end + retention).
CREATE TABLE stream_heads (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    ended BOOLEAN NOT NULL,
    last_seq BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX stream_heads_expires ON stream_heads (expires_at);

CREATE TABLE stream_events (
    stream_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
