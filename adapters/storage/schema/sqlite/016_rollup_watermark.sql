-- The rollups are written behind the ledger on SQLite (adapters/storage/rollup_behind.py):
-- `done` is the usage rowid up to which they hold every row. Every row already in the
-- ledger is in the rollups (the writer added them in their own transactions until now),
-- so it starts at the highest rowid. Postgres writes its rollups with the rows and has
-- no such table.
CREATE TABLE rollup_watermark (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    done INTEGER NOT NULL
);
INSERT INTO rollup_watermark (one, done) VALUES (1, (SELECT coalesce(max(rowid), 0) FROM usage));
