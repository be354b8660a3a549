"""Storage: one interface (`base.Storage`), SQLite (embedded default) and Postgres backends.

Owns: choosing the backend from a database URL.

- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`
- `postgresql://user@host:port/db?...` (or `postgres://...`), passed to psycopg as is.

Opening is cheap and does no I/O; call `await storage.migrate()` before use and
`await storage.close()` at the end (it commits what is still queued).

`owner=True` is for a process that serves requests (`umg serve`): a SQLite backend then
takes ownership of the file's in-memory state at `migrate` and fails there with
`StorageBusy` if another process has it (see `sqlite.py`). Postgres ignores it.
"""

from __future__ import annotations

from adapters.storage.base import Storage

SQLITE_PREFIX = "sqlite:///"


def open_storage(
    url: str, *, owner: bool = False, pool_timeout: float | None = None, rollup_seconds: float = 1.0
) -> Storage:
    """`pool_timeout` (Postgres): seconds to wait for a connection before the database
    counts as unreachable (default `pg_pool.POOL_TIMEOUT_SECONDS`). `rollup_seconds`
    (SQLite): how long the rollups may be written behind the ledger (`rollup_behind.py`)."""
    if url.startswith(SQLITE_PREFIX):
        from adapters.storage.sqlite import SQLiteStorage

        path = url[len(SQLITE_PREFIX) :]
        if not path:
            raise ValueError("sqlite URL needs a path: sqlite:///gateway.db or sqlite:///:memory:")
        return SQLiteStorage(path, owner=owner, rollup_seconds=rollup_seconds)
    if url.startswith(("postgresql://", "postgres://")):
        from adapters.storage.pg_pool import POOL_TIMEOUT_SECONDS
        from adapters.storage.postgres import PostgresStorage

        return PostgresStorage(url, pool_timeout=pool_timeout or POOL_TIMEOUT_SECONDS)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://")
