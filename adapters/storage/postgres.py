"""Postgres backend: shared by many gateway processes (psycopg 3: sync in threads, or libpq
driven from the Trio thread on the hot paths).

Owns: the Postgres `Storage` as a whole, built in layers, each its own module:
`pg_pool.py` (every operation one transaction on a pooled connection in a worker
thread, or on a Trio-driven one; cancellation, reruns after a deadlock, the breaker
when the database is away), `pg_writer.py` (the ledger writer's group commit, on its
own connection, `pg_line.py`), `pg_state.py` (state changes and reads, on
`pg_lines.py`'s Trio-driven connections). This module adds migrating and
closing, and the table operations, each one transaction: keys (`key_rows.py`), state
(`pg_state.py`), budgets, jobs and the webhook outbox (`pg_jobs.py`), idempotency keys,
stored stream events, retention.

Rules:
- Row locks, not process locks: `update_state` locks its row (`pg_state.py`);
  `claim_job` is FOR UPDATE SKIP LOCKED; `update_job` FOR UPDATE (`pg_jobs.py`).
- Callers' state functions run on the Trio thread, in the caller's task, while the
  transaction holds the lock; keep them quick. (Job functions, `pg_jobs.py`, run there
  too, through `trio.from_thread.run_sync` from the pool's worker thread.)
- Key lookups by prefix are cached in process for `KEY_CACHE_SECONDS` (`keycache.py`):
  a revoke through this process applies here at once, through another within the TTL.
  A miss (the request path's one key read) is one statement on a state connection
  (`pg_lines.py`: no worker thread); the other key operations use the pool.
- Migrations run under a transaction-scoped advisory lock, so processes starting
  together apply each one once.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors

from adapters.clock import Clock
from adapters.storage import codec, idem_rows, pg_state, sources
from adapters.storage import prune as prune_sql
from adapters.storage.base import (
    DeliveryFn,
    JobFn,
    LedgerReads,
    State,
    StateFn,
    StatesFn,
)
from adapters.storage.key_rows import KeyDialect, KeyMethods, KeyQueries
from adapters.storage.keycache import KeyCache
from adapters.storage.ledger import POSTGRES
from adapters.storage.migrations import migrations
from adapters.storage.pg_batch_sql import marks
from adapters.storage.pg_jobs import JobQueries
from adapters.storage.pg_line import Line, Step
from adapters.storage.pg_pool import POOL_TIMEOUT_SECONDS, Conn, PostgresConnection
from adapters.storage.pg_writer import PostgresWriter
from adapters.storage.records import (
    DeliveryRecord,
    JobRecord,
    KeyRecord,
)
from adapters.storage.shared_tables import SharedTables
from core import jobs as lifecycle
from core import outbox
from core.errors import StorageUnavailable
from core.retention import STORES, Cutoffs

T = TypeVar("T")
log = logging.getLogger("umg.storage")

_MIGRATION_LOCK = 0x756D67  # pg_advisory_xact_lock id: "umg"
KEYS = KeyDialect(codec.POSTGRES, marks(codec.columns(KeyRecord)), (pg_errors.UniqueViolation,))


class PostgresStorage(PostgresWriter, SharedTables, KeyMethods, LedgerReads):
    """The ledger writer is `pg_writer.py`'s, keys are `key_rows.py`'s, usage reads,
    budgets, idempotency keys and stream events `shared_tables.py`'s."""

    _rows = codec.POSTGRES
    _idem = idem_rows.POSTGRES
    _tx = PostgresConnection._run  # every Postgres call is one transaction

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        keys: KeyCache | None = None,
        pool_timeout: float = POOL_TIMEOUT_SECONDS,
        clock: Clock | None = None,
        queue_rows: int = 4096,
    ) -> None:
        super().__init__(url, pool_size=pool_size, pool_timeout=pool_timeout, clock=clock,
                         queue_rows=queue_rows)  # fmt: skip
        self.jobs = JobQueries(self._run)
        self.shared = True  # many processes: limits lease slices (adapters/leases.py)
        self.dialect = POSTGRES
        self.keys = keys or KeyCache()
        self._key_rows = KeyQueries(KEYS, read=self._run, write=self._run, cache=self.keys)

    async def migrate(self) -> None:
        def apply(conn: Conn) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
            for m in migrations("postgres"):
                if m.version in done:
                    continue
                for statement in m.statements():
                    conn.execute(statement.encode())
                conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                    (m.version, m.name),
                )
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            sources.missing(str(r[0]) for r in tables)

        await self._run(apply)

    async def close(self) -> None:
        """Commit every queued ledger row, then close the pool."""
        await self.writer.close()
        await self._shut()

    async def health(self) -> bool:
        if self._closed:
            return False
        try:
            return await self._run(lambda c: c.execute("SELECT 1").fetchone() == (1,))
        except (psycopg.Error, StorageUnavailable) as err:
            log.warning("postgres health check failed: %s", err)
            return False

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None:
        return await self.keys.lookup(prefix, lambda: self._lined(lambda line: _key_by_prefix(line, prefix)))

    # -- generic atomic state (pg_state.py) ---------------------------------------------

    # on Trio-driven connections: a change two round trips, a read one (pg_state.py)

    async def update_state(self, scope: str, fn: StateFn[T]) -> T:
        return await self._lined(lambda line: pg_state.update(line, scope, fn))

    async def read_state(self, scope: str) -> State | None:
        return await self._lined(lambda line: pg_state.read(line, scope))

    async def read_states(self, scopes: list[str]) -> dict[str, State | None]:
        return await self._lined(lambda line: pg_state.read_many(line, scopes))

    async def update_states(self, scopes: tuple[str, ...], fn: StatesFn[T]) -> T:
        return await self._lined(lambda line: pg_state.update_many(line, scopes, fn))

    # -- jobs (queries in pg_jobs.py) ----------------------------------------------------

    async def insert_job(self, rec: JobRecord) -> None:
        await self.jobs.insert(rec)

    async def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        return await self.jobs.get(tenant, job_id)

    async def list_jobs(
        self, tenant: str, status: str | None, limit: int, after: str | None
    ) -> list[JobRecord]:
        return await self.jobs.list(tenant, status, limit, after)

    async def claim_job(
        self, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        return await self.jobs.claim(worker, now, policy)

    async def update_job(self, job_id: str, fn: JobFn) -> JobRecord | None:
        return await self.jobs.update(job_id, fn)

    async def heartbeat(
        self, job_id: str, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        return await self.jobs.heartbeat(job_id, worker, now, policy)

    # -- the webhook outbox ----------------------------------------------------------

    async def claim_delivery(
        self, worker: str, now: float, policy: outbox.DeliveryPolicy
    ) -> DeliveryRecord | None:
        return await self.jobs.claim_delivery(worker, now, policy)

    async def update_delivery(self, delivery_id: str, fn: DeliveryFn) -> DeliveryRecord | None:
        return await self.jobs.update_delivery(delivery_id, fn)

    async def deliveries_of_job(self, job_id: str) -> list[DeliveryRecord]:
        return await self.jobs.deliveries_of_job(job_id)

    async def webhook_secret(self, tenant: str, fresh: str) -> str:
        return await self.jobs.webhook_secret(tenant, fresh)

    # -- retention (adapters/storage/prune.py) -----------------------------------------

    async def prune(self, store: str, cut: Cutoffs, limit: int) -> int:
        if store not in STORES:
            raise ValueError(f"no store {store!r} to prune")
        f = prune_sql.POSTGRES
        if store == "budget_periods":
            gone = await self._run(lambda c: prune_sql.budget_batch(c, f, cut, limit, _never))
            return len(gone)
        tables = prune_sql.targets(store)
        return await self._run(lambda c: sum(prune_sql.delete_batch(c, f, t, cut, limit) for t in tables))

    async def prunable(self, store: str, cut: Cutoffs) -> int:
        if store not in STORES:
            raise ValueError(f"no store {store!r} to prune")
        f = prune_sql.POSTGRES
        if store == "budget_periods":
            found = await self._run(lambda c: prune_sql.prunable_scopes(c, f, cut, None, _never))
            return len(found)
        tables = prune_sql.targets(store)
        return await self._run(lambda c: sum(prune_sql.count(c, f, t, cut) for t in tables))


_BY_PREFIX = Step(
    b"umg_key_by_prefix",
    f"SELECT {', '.join(codec.columns(KeyRecord))} FROM keys WHERE prefix = $1 ORDER BY created_at, id".encode(),
)


async def _key_by_prefix(line: Line, prefix: str) -> KeyRecord | None:
    """The key with `prefix`, read on a Trio-driven connection (as `KeyQueries.by_prefix`)."""
    (res,) = await line.pipeline([Step(_BY_PREFIX.name, _BY_PREFIX.query, (prefix.encode(),))])
    rows = line.loaded(res)
    return codec.from_postgres_row(KeyRecord, rows[0]) if rows else None


def _never(scope: str) -> bool:
    del scope
    return False
