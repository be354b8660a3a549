"""SQLite backend: the embedded default (stdlib sqlite3, WAL mode, zero setup).

Owns: the SQLite `Storage` as a whole, built in layers, each its own module:
`sqlite_conn.py` (one connection, serialized by a `trio.Lock`, run in a worker thread;
transactions and WAL checkpoints), `sqlite_writer.py` (the ledger writer's group commit:
rows, rollups and dirty state in one transaction), `sqlite_state.py` (state scopes in
the owning process's memory). This module adds opening, migrating and closing the file,
and the table operations (keys through `key_rows.py`, budgets, jobs, the webhook outbox,
idempotency keys, stored stream events, retention), each one transaction.

The hot path stays off the connection: key lookups come from a short-lived cache
(`keycache.py`), rate-limit and budget state from memory (`memstate.py`), and ledger rows
go through one writer with group commit (`group_commit.py`).

Rules:
- `close()` commits every queued row and changed state, then closes the connection and
  lets go of the file's state (idempotent).
- Callers' functions (`update_state`, `update_job`) run on the Trio thread; `update_job`
  calls them through `trio.from_thread.run_sync` while the transaction waits.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import trio

from adapters.storage import codec, idem_rows, job_events_sql, outbox_sql, rollup_behind, sources
from adapters.storage import prune as prune_sql
from adapters.storage.base import (
    DeliveryFn,
    JobFn,
    LedgerReads,
    claim_record,
    claimable_where,
    heartbeat_fn,
    job_list_query,
)
from adapters.storage.key_rows import KeyDialect, KeyMethods, KeyQueries
from adapters.storage.keycache import KeyCache
from adapters.storage.ledger import SQLITE, Query
from adapters.storage.migrations import migrations
from adapters.storage.records import (
    DeliveryRecord,
    JobRecord,
    KeyRecord,
)
from adapters.storage.shared_tables import SharedTables
from adapters.storage.sqlite_conn import Conn
from adapters.storage.sqlite_state import SQLiteState
from core import jobs as lifecycle
from core import outbox
from core.errors import Conflict
from core.retention import STORES, Cutoffs

log = logging.getLogger("umg.storage")

_JOB_COLS = ", ".join(codec.columns(JobRecord))
_JOB_MUTABLE = [c for c in codec.columns(JobRecord) if c not in ("id", "tenant", "key_id")]
_NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')"  # same shape as codec.iso
KEYS = KeyDialect(codec.SQLITE, ", ".join("?" * len(codec.columns(KeyRecord))), (sqlite3.IntegrityError,))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _write_job(c: Conn, old: JobRecord, new: JobRecord) -> None:
    """Store `new` over `old` (the same job, read in this transaction)."""
    if (new.id, new.tenant, new.key_id) != (old.id, old.tenant, old.key_id):
        raise ValueError("update_job may not change a job's id, tenant or key_id")
    if new != old:
        sets = ", ".join(f"{col} = ?" for col in _JOB_MUTABLE)
        values = [codec.to_sqlite(col, getattr(new, col)) for col in _JOB_MUTABLE]
        c.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, old.id))
        outbox_sql.enqueue(c, outbox_sql.SQLITE, old, new)
        job_events_sql.record(c, "?", old, new)


class SQLiteStorage(SQLiteState, SharedTables, KeyMethods, LedgerReads):
    """`owner=True`: take the state at `migrate` (a serving process, so a second one on the
    same file fails at start, not at its first limited request). The ledger writer is
    `sqlite_writer.py`'s, keys are `key_rows.py`'s, usage reads, budgets, idempotency
    keys and stream events `shared_tables.py`'s."""

    _rows = codec.SQLITE
    _idem = idem_rows.SQLITE

    def __init__(
        self,
        path: str,
        *,
        owner: bool = False,
        keys: KeyCache | None = None,
        flush_seconds: float = 0.5,
        queue_rows: int = 4096,
        rollup_seconds: float = 1.0,
    ) -> None:
        super().__init__(path, owner=owner, flush_seconds=flush_seconds, queue_rows=queue_rows,
                         rollup_seconds=rollup_seconds)  # fmt: skip
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        self.shared = False  # one process owns the state (see sqlite_state.py)
        self.dialect = SQLITE
        self.keys = keys or KeyCache()
        self._key_rows = KeyQueries(KEYS, read=self._run, write=self._tx, cache=self.keys)

    async def migrate(self) -> None:
        if self._owner_at_migrate:
            self._own()

        def apply(conn: Conn) -> None:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
            for m in migrations("sqlite"):
                if m.version in done:
                    continue
                for statement in m.statements():
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO schema_version VALUES (?, ?, {_NOW_SQL})", (m.version, m.name)
                )
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            sources.missing(str(r[0]) for r in tables)

        await self._tx(apply)
        if self._owner_at_migrate:
            await self.take_ledger()  # before serving: the rows a crash left out of the rollups

    async def close(self) -> None:
        """Commit every queued row and changed state, write the rollups kept behind, then
        close (idempotent)."""
        if self._closing:
            return
        self._closing = True
        await self.writer.close()
        await self._rollups_close()
        await self._disconnect()
        self._disown()

    async def health(self) -> bool:
        if self._closed:
            return False
        try:
            return await self._run(lambda c: c.execute("SELECT 1").fetchone() == (1,))
        except sqlite3.Error as err:
            log.warning("sqlite health check failed: %s", err)
            return False

    async def _fetch(self, query: Query) -> list[tuple[Any, ...]]:
        """A read of the ledger or its rollups, after the rows kept behind are written
        (read-your-writes in the owning process; `rollup_behind.py`)."""
        if len(self._behind):
            await self.flush_rollups()
        return await super()._fetch(query)

    # -- jobs ------------------------------------------------------------------------

    async def insert_job(self, rec: JobRecord) -> None:
        row = codec.sqlite_row(rec)
        sql = f"INSERT INTO jobs ({_JOB_COLS}) VALUES ({_marks(len(row))})"
        def insert(c: Conn) -> None:
            c.execute(sql, row)
            job_events_sql.record(c, "?", None, rec)

        try:
            await self._tx(insert)
        except sqlite3.IntegrityError as err:
            raise Conflict(f"A job with id '{rec.id}' already exists") from err

    async def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        sql = f"SELECT {_JOB_COLS} FROM jobs WHERE tenant = ? AND id = ?"
        row = await self._run(lambda c: c.execute(sql, (tenant, job_id)).fetchone())
        return None if row is None else codec.from_sqlite_row(JobRecord, row)

    async def list_jobs(
        self, tenant: str, status: str | None, limit: int, after: str | None
    ) -> list[JobRecord]:
        sql, args = job_list_query(_JOB_COLS, "?", tenant, status, limit, after)
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_sqlite_row(JobRecord, r) for r in rows]

    async def claim_job(
        self, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        sql = (
            f"SELECT {_JOB_COLS} FROM jobs WHERE {claimable_where('?')}"
            " ORDER BY created_at, id LIMIT 1"
        )

        def apply(c: Conn) -> JobRecord | None:
            row = c.execute(sql, (now, now)).fetchone()
            if row is None:
                return None
            old = codec.from_sqlite_row(JobRecord, row)
            new = claim_record(old, worker, now, policy)  # pure: fine on this thread
            _write_job(c, old, new)
            return new

        return await self._tx(apply)

    async def update_job(self, job_id: str, fn: JobFn) -> JobRecord | None:
        def apply(c: Conn) -> JobRecord | None:
            row = c.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            old = codec.from_sqlite_row(JobRecord, row)
            new = trio.from_thread.run_sync(fn, old)
            _write_job(c, old, new)
            return new

        return await self._tx(apply)

    async def heartbeat(
        self, job_id: str, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        return await self.update_job(job_id, heartbeat_fn(worker, now, policy))

    # -- the webhook outbox ----------------------------------------------------------

    async def claim_delivery(
        self, worker: str, now: float, policy: outbox.DeliveryPolicy
    ) -> DeliveryRecord | None:
        return await self._tx(lambda c: outbox_sql.claim(c, outbox_sql.SQLITE, worker, now, policy))

    async def update_delivery(self, delivery_id: str, fn: DeliveryFn) -> DeliveryRecord | None:
        return await self._tx(lambda c: outbox_sql.update(c, outbox_sql.SQLITE, delivery_id, fn))

    async def webhook_secret(self, tenant: str, fresh: str) -> str:
        result: str = await self._tx(
            lambda c: outbox_sql.webhook_secret(c, outbox_sql.SQLITE, tenant, fresh)
        )
        return result

    async def deliveries_of_job(self, job_id: str) -> list[DeliveryRecord]:
        return await self._run(lambda c: outbox_sql.of_job(c, outbox_sql.SQLITE, job_id))

    # -- retention (adapters/storage/prune.py) -----------------------------------------

    async def prune(self, store: str, cut: Cutoffs, limit: int) -> int:
        if store not in STORES:
            raise ValueError(f"no store {store!r} to prune")
        f = prune_sql.SQLITE
        if store == "budget_periods":
            pending = self._states.dirty_scopes()  # changed in memory: kept this time
            gone = await self._tx(lambda c: prune_sql.budget_batch(c, f, cut, limit, pending.__contains__))
            still = self._states.dirty_scopes()
            for scope in gone:
                if scope not in still:
                    self._states.drop(scope)
            return len(gone)
        tables = prune_sql.targets(store)
        if store not in ("ledger", "rollup"):
            return await self._tx(lambda c: sum(prune_sql.delete_batch(c, f, t, cut, limit) for t in tables))

        def apply(c: Conn) -> int:
            # the rows kept behind first, in the same transaction: a rollup row they add
            # to is pruned with the rest, and the deletes leave the watermark exact
            rollup_behind.write(c, self._behind, self._wide_upserts)
            gone = sum(prune_sql.delete_batch(c, f, t, cut, limit) for t in tables)
            if store == "ledger":
                c.execute(rollup_behind.LOWER)
            return gone

        return await self._tx(apply, self._behind.written)

    async def prunable(self, store: str, cut: Cutoffs) -> int:
        if store not in STORES:
            raise ValueError(f"no store {store!r} to prune")
        f = prune_sql.SQLITE
        if store == "budget_periods":
            pending = self._states.dirty_scopes()
            found = await self._run(lambda c: prune_sql.prunable_scopes(c, f, cut, None, pending.__contains__))
            return len(found)
        tables = prune_sql.targets(store)
        if store in ("ledger", "rollup") and len(self._behind):
            await self.flush_rollups()  # counted as a prune now would find them
        return await self._run(lambda c: sum(prune_sql.count(c, f, t, cut) for t in tables))
