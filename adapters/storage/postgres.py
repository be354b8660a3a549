"""Postgres backend: shared by many gateway processes (psycopg 3, sync, in threads).

Owns: running every storage operation as one transaction on a pooled connection in a
worker thread. psycopg's async API is asyncio-only, so the sync driver runs through
`trio.to_thread.run_sync` with a `CapacityLimiter` the size of the pool (a thread never
waits for a connection the pool cannot give).

Cancellation: a query running in a thread does not notice a Trio cancel by itself. So
the thread is abandoned on cancel, and the cancelled task then (shielded) asks the
server to cancel the running statement (`conn.cancel_safe()`) and waits until the
thread has rolled back and returned its connection to the pool. The caller sees
`Cancelled` promptly, the pool stays whole, and the transaction has not happened.

Rules:
- Row locks, not process locks: `update_state` is INSERT ... ON CONFLICT DO NOTHING then
  SELECT ... FOR UPDATE; `claim_job` is FOR UPDATE SKIP LOCKED; `update_job` FOR UPDATE.
- Callers' functions run on the Trio thread (`trio.from_thread.run_sync`) while the
  transaction holds the lock; keep them quick.
- The pool opens lazily on first use; `close()` closes it.
- Key lookups by prefix are cached in process for `KEY_CACHE_SECONDS` (`keycache.py`):
  a revoke through this process applies here at once, through another within the TTL.
- Ledger rows go through one writer with group commit (`group_commit.py`), as on
  SQLite: `insert_usage` returns once the transaction holding its row has committed.
  A batch is ONE multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING id` (so each
  caller learns whether its own row went in; a later row of the batch with the id or
  `request_id` of an earlier one is not sent and answers False) plus the rollup upserts
  of the inserted rows (hourly, daily, all-tenant), in one transaction. The rollup rows
  are upserted table by table in one order, each table's rows (one per key, added up
  first) as ONE multi-row upsert in sorted key order, so the writers of several
  processes, which share those rows, always lock them in the same order and cannot
  deadlock. The wide tables' upserts name only the bin columns the batch adds to. The
  upserts go out together in one pipeline (one round trip for all of them, their errors
  raised as if each had been sent alone). A batch refused for what a row holds (a value
  out of range, a constraint: `psycopg.DataError`, `IntegrityError`; or a value the
  rollups cannot add, `_ROW_REFUSED`) is committed again one row at a time, so only that
  row's caller gets the error, always a psycopg error (`RowNotStorable` wraps any other),
  and the writer keeps running; any other failed commit fails every row of its batch
  (each caller gets the error).

Unreachable database: every operation fails closed with `core.errors.StorageUnavailable`
(a 503 with `retry_after` = `DOWN_SECONDS`), never a driver error, a 500 or a hang:
- a connection lost mid-transaction (server restarted, backend terminated) is that
  error at once; the transaction did not commit (or, lost at COMMIT, is unknown, which
  the callers' idempotent writes tolerate); the pool replaces the connection;
- no connection within `pool_timeout` seconds (the server is down, refuses or drops
  connections; each attempt has `connect_timeout`) trips a breaker: for the next
  `DOWN_SECONDS` of the clock every call fails at once, without waiting on the pool;
  then ONE call tries again (the others still fail at once) and its success closes
  the breaker.

Contention: a transaction Postgres rolls back for a deadlock (40P01) or a serialization
failure (40001) did nothing, so it is run again, after 0.01, 0.05 and 0.25 s
(`RERUN_PAUSES`); the functions run inside a transaction are pure (`base.py`), so a rerun
is the same operation. Rolled back a fourth time, the call fails with
`core.errors.StorageContention` (a 503 `storage_contention` with `retry_after`; a
`StorageUnavailable`, so every caller treats it as the database being away for now).
It does not trip the breaker: the database is reachable.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio
from psycopg import errors as pg_errors

from adapters.clock import Clock
from adapters.storage import codec, idem_rows, rollup, rollup_wide, sources
from adapters.storage import prune as prune_sql
from adapters.storage import streams as stream_sql
from adapters.storage.base import (
    JOB_COUNTS,
    DeliveryFn,
    JobFn,
    LedgerReads,
    State,
    StateFn,
    StatesFn,
    budget_list_sql,
    budget_upsert_sql,
    key_changes,
)
from adapters.storage.group_commit import GroupCommit, as_driver_error, row_by_row_on_refusal
from adapters.storage.idem_rows import StepFn
from adapters.storage.keycache import KeyCache
from adapters.storage.ledger import POSTGRES, Query
from adapters.storage.migrations import migrations
from adapters.storage.pg_jobs import JobQueries
from adapters.storage.records import (
    BudgetRecord,
    DeliveryRecord,
    JobRecord,
    KeyRecord,
    UsageRecord,
)
from adapters.storage.streams import StoredEvent, StreamHead, StreamWrite
from core import jobs as lifecycle
from core import outbox
from core.errors import Conflict, StorageContention, StorageUnavailable
from core.retention import STORES, Cutoffs

T = TypeVar("T")
Conn = psycopg.Connection[Any]
log = logging.getLogger("umg.storage")

_KEY_COLS = ", ".join(codec.columns(KeyRecord))
_USAGE_COLS = ", ".join(codec.columns(UsageRecord))
_MIGRATION_LOCK = 0x756D67  # pg_advisory_xact_lock id: "umg"
DOWN_SECONDS = 2.0  # how long a breaker trip lasts, and the Retry-After it gives
POOL_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 3
# A deadlock or a serialization failure rolls the whole transaction back, so it is safe to
# run again (callers' functions are pure, see base.py): after each of these pauses once.
_ROLLED_BACK = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
RERUN_PAUSES = (0.01, 0.05, 0.25)
# A ledger batch refused for the values of a row (not for the database being away or
# busy): what the database answers (DataError, IntegrityError), or what adding a row's
# values to the rollups raises before anything is sent (a TypeError, ValueError or
# ArithmeticError). The batch is then committed row by row (`_commit`); the writer keeps
# running.
_ROW_REFUSED = (psycopg.DataError, psycopg.IntegrityError, ArithmeticError, TypeError, ValueError)


class RowNotStorable(psycopg.DataError):
    """A ledger row refused with an error that is not psycopg's (its cause): raised as a
    psycopg error, so callers treat it as any refusal (`PostgresStorage.errors`)."""


def _refusal(err: Exception) -> Exception:
    """A refused row's error as its caller gets it: psycopg's own, or `RowNotStorable`."""
    return as_driver_error(err, psycopg.Error, RowNotStorable)


def marks(cols: tuple[str, ...]) -> str:
    return ", ".join("%s::jsonb" if c in codec.JSON_FIELDS else "%s" for c in cols)


_USAGE_MARKS = f"({marks(codec.columns(UsageRecord))})"


def _insert_usage(n: int) -> str:
    """`n` ledger rows in one statement; RETURNING the ids of those it inserted."""
    values = ", ".join([_USAGE_MARKS] * n)
    return f"INSERT INTO usage ({_USAGE_COLS}) VALUES {values} ON CONFLICT DO NOTHING RETURNING id"


@functools.lru_cache(maxsize=64)
def _upsert_hourly(n: int) -> str:
    return rollup.upsert_hourly("%s", text_money=False, rows=n)


@functools.lru_cache(maxsize=64)
def _upsert_bins(n: int) -> str:
    return rollup.upsert_bins("%s", rows=n)


@functools.lru_cache(maxsize=64)
def _upsert_wide(wide: rollup_wide.Wide, used: tuple[int, ...], n: int) -> str:
    """`n` rows of distinct keys in one upsert of `wide`, naming only the bin columns
    `used` (the others keep their DEFAULT 0, or their value): a ledger row adds to at
    most two of the 70, and the statement naming all of them is 7 KB of SQL that psycopg
    parses again on every call (too long for its cache), with 89 parameters a row."""
    measures = (*rollup.MEASURES, *(rollup_wide.BIN_COLUMNS[b] for b in used))
    return rollup.upsert_sql(wide.table, wide.keys, measures, "%s", rows=n)


def _flat(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]


def _firsts(records: Sequence[UsageRecord]) -> list[bool]:
    """Which records of a batch are the first with their id and request_id: a later one
    with either is not inserted (as its own INSERT after the first would not be)."""
    ids: set[str] = set()
    requests: set[str] = set()
    out = []
    for rec in records:
        out.append(rec.id not in ids and rec.request_id not in requests)
        ids.add(rec.id)
        requests.add(rec.request_id)
    return out


class _Abandoned(Exception):
    """The caller was cancelled before the work started; nothing was done."""


class _Slot:
    """One thread call's connection, so a cancelled caller can cancel its statement."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._started = False
        self._cancelled = False
        self._done = threading.Event()

    def start(self) -> None:
        with self._lock:
            if self._cancelled:
                raise _Abandoned
            self._started = True

    def attach(self, conn: Conn | None) -> None:
        with self._lock:
            if conn is not None and self._cancelled:
                raise _Abandoned
            self._conn = conn

    def finish(self) -> None:
        self._done.set()

    def cancel(self) -> None:
        """Blocking: cancel the statement in flight, then wait for the thread to end."""
        with self._lock:
            self._cancelled = True
            if not self._started:
                return
            if self._conn is not None:
                try:
                    self._conn.cancel_safe(timeout=5.0)
                except psycopg.Error as err:
                    log.warning("could not cancel a postgres statement: %s", err)
        self._done.wait()


class PostgresStorage(LedgerReads):
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
        extra = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, name="umg-storage",
            timeout=pool_timeout, kwargs=extra,
        )
        self._clock = clock
        self._down_until: float | None = None  # the breaker is open until then (clock.now())
        self._limiter = trio.CapacityLimiter(pool_size)
        self._opened = False
        self._closed = False
        self._open_lock = threading.Lock()
        self.jobs = JobQueries(self._run)
        self.errors: tuple[type[Exception], ...] = (psycopg.Error, StorageUnavailable)
        self.shared = True  # many processes: limits lease slices (adapters/leases.py)
        self.dialect = POSTGRES
        self.keys = keys or KeyCache()
        # a batch is one INSERT of 25 parameters a row: 512 rows stay far below the
        # protocol's 65,535 parameters a statement
        self.writer = GroupCommit(self._commit, self.errors, capacity=queue_rows, max_batch=512)

    # -- plumbing ----------------------------------------------------------------------

    def _work(self, fn: Callable[[Conn], T], slot: _Slot) -> T:
        try:
            slot.start()
            with self._open_lock:
                if self._closed:
                    raise RuntimeError("storage is closed")
                if not self._opened:
                    self._pool.open()
                    self._opened = True
            with self._pool.connection() as conn:
                slot.attach(conn)
                try:
                    with conn.transaction():
                        return fn(conn)
                finally:
                    slot.attach(None)
        finally:
            slot.finish()

    def _now(self) -> float:
        if self._clock is None:
            self._clock = Clock()
        return self._clock.now()

    def _gate(self) -> None:
        """Fail at once while the breaker is open; let one caller through when it ends."""
        if self._down_until is None:
            return
        now = self._now()
        if now < self._down_until:
            raise StorageUnavailable(
                "The gateway's database is unreachable; try again shortly", retry_after=DOWN_SECONDS
            )
        self._down_until = now + DOWN_SECONDS  # this caller probes; the others keep failing

    async def _run(self, fn: Callable[[Conn], T]) -> T:
        """`fn` in one transaction; rerun (after a pause) when Postgres rolled it back
        for a deadlock or a serialization failure, at most `len(RERUN_PAUSES)` times."""
        for pause in RERUN_PAUSES:
            try:
                return await self._once(fn)
            except _ROLLED_BACK as err:
                log.info("postgres rolled a transaction back (%s); running it again in %g s",
                         err.sqlstate, pause)
            await trio.sleep(pause)
        try:
            return await self._once(fn)
        except _ROLLED_BACK as err:
            log.warning("postgres rolled a transaction back %d times in a row (%s); giving up",
                        len(RERUN_PAUSES) + 1, err.sqlstate)
            raise StorageContention(
                "The gateway's database aborted this operation under contention; try again shortly",
                retry_after=DOWN_SECONDS,
            ) from err

    async def _once(self, fn: Callable[[Conn], T]) -> T:
        self._gate()
        slot = _Slot()
        try:
            result = await trio.to_thread.run_sync(
                self._work, fn, slot, limiter=self._limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(slot.cancel)
            raise
        except _ROLLED_BACK:
            raise  # the database is there: the caller reruns the transaction
        except psycopg_pool.PoolTimeout as err:
            self._down_until = self._now() + DOWN_SECONDS
            log.warning("postgres unreachable (no connection within the pool timeout): %s", err)
            raise StorageUnavailable(
                "The gateway's database is unreachable; try again shortly", retry_after=DOWN_SECONDS
            ) from err
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            log.warning("postgres connection failed: %s", err)
            raise StorageUnavailable(
                "The gateway's database connection failed; try again shortly",
                retry_after=DOWN_SECONDS,
            ) from err
        self._down_until = None
        return result

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

        def shut() -> None:
            with self._open_lock:
                self._closed = True
                if self._opened:
                    self._pool.close()

        await trio.to_thread.run_sync(shut)

    async def health(self) -> bool:
        if self._closed:
            return False
        try:
            return await self._run(lambda c: c.execute("SELECT 1").fetchone() == (1,))
        except (psycopg.Error, StorageUnavailable) as err:
            log.warning("postgres health check failed: %s", err)
            return False

    # -- keys ------------------------------------------------------------------------

    async def insert_key(self, rec: KeyRecord) -> None:
        row = codec.postgres_row(rec)
        cols = codec.columns(KeyRecord)
        sql = f"INSERT INTO keys ({_KEY_COLS}) VALUES ({marks(cols)})"
        try:
            await self._run(lambda c: c.execute(sql, row))
        except pg_errors.UniqueViolation as err:
            raise Conflict("A key with this id or prefix already exists") from err
        finally:
            self.keys.forget(rec.prefix)

    async def _keys(self, where: str, args: tuple[Any, ...]) -> list[KeyRecord]:
        sql = f"SELECT {_KEY_COLS} FROM keys {where} ORDER BY created_at, id"
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_postgres_row(KeyRecord, r) for r in rows]

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None:
        async def read() -> KeyRecord | None:
            found = await self._keys("WHERE prefix = %s", (prefix,))
            return found[0] if found else None

        return await self.keys.lookup(prefix, read)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        found = await self._keys("WHERE id = %s", (key_id,))
        return found[0] if found else None

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        if tenant is None:
            return await self._keys("", ())
        return await self._keys("WHERE tenant = %s", (tenant,))

    async def revoke_key(self, id_or_prefix: str, at: datetime) -> KeyRecord | None:
        def apply(c: Conn) -> Any:
            c.execute(
                "UPDATE keys SET revoked_at = %s"
                " WHERE (id = %s OR prefix = %s) AND revoked_at IS NULL",
                (codec.utc(at), id_or_prefix, id_or_prefix),
            )
            return c.execute(
                f"SELECT {_KEY_COLS} FROM keys WHERE id = %s OR prefix = %s ORDER BY id LIMIT 1",
                (id_or_prefix, id_or_prefix),
            ).fetchone()

        try:
            row = await self._run(apply)
        finally:
            self.keys.forget(id_or_prefix)
        if row is None:
            return None
        record = codec.from_postgres_row(KeyRecord, row)
        self.keys.forget(record.prefix)
        return record

    async def count_keys(self) -> int:
        return int(await self._run(lambda c: c.execute("SELECT count(*) FROM keys").fetchone()[0]))  # type: ignore[index]

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        pairs = key_changes(changes)

        def apply(c: Conn) -> Any:
            if pairs:
                sets = ", ".join(f"{col} = %s" for col, _ in pairs)
                values = [codec.to_postgres(col, v) for col, v in pairs]
                c.execute(f"UPDATE keys SET {sets} WHERE id = %s", (*values, key_id))
            return c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE id = %s", (key_id,)).fetchone()

        row = await self._run(apply)
        if row is None:
            return None
        record = codec.from_postgres_row(KeyRecord, row)
        self.keys.forget(record.prefix)  # a changed limit applies to the next request
        return record

    # -- usage ledger ----------------------------------------------------------------

    async def insert_usage(self, rec: UsageRecord, *, alone: bool = False) -> bool:
        """Queued for the writer (`group_commit.py`); returns once its batch committed.
        (`alone` changes nothing here: a commit always waits for the server.)"""
        return await self.writer.submit((codec.postgres_row(rec), rec))

    async def _commit(self, rows: Sequence[tuple[Any, ...]]) -> list[bool | BaseException]:
        """The writer's commit: the batch in one transaction (`_commit_batch`). When the
        database refuses the batch for what a row holds (`_ROW_REFUSED`: a value out of
        range, a constraint), each row is committed alone, the same way, so only the
        refused row's caller gets the error; the others are committed and answered.
        Any other failure (the database away, contention after the reruns) fails the
        whole batch: each caller gets it."""
        return await row_by_row_on_refusal(self._commit_batch, rows, _ROW_REFUSED, _refusal, "postgres")

    async def _commit_batch(self, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
        """The writer's batch: the rows in ONE multi-row INSERT, what the inserted ones add
        to the rollups (`rollup.py`, `rollup_wide.py`), one transaction. (No state rides along, so a
        batch without rows, the writer's retry after a failure, has nothing to do.)"""
        if not rows:
            return []
        firsts = _firsts([rec for _, rec in rows])
        fresh = [row for (row, _), first in zip(rows, firsts, strict=True) if first]

        def apply(c: Conn) -> list[bool]:
            inserted = {r[0] for r in c.execute(_insert_usage(len(fresh)), _flat(fresh)).fetchall()}
            added = [first and rec.id in inserted for (_, rec), first in zip(rows, firsts, strict=True)]
            new = [rec for (_, rec), is_new in zip(rows, added, strict=True) if is_new]
            hourly, bins = rollup.contributions(new)
            # Sorted, table after table in one order: every writer locks rollup rows in
            # the same order, so two processes' batches cannot deadlock. Each table's
            # rows (one per key) are ONE multi-row upsert, which Postgres applies in the
            # order given: one round trip per table, not one per row.
            wide_sums = rollup_wide.sums(new)
            with c.pipeline():  # the upserts sent together, their answers read once
                for sql, adds in ((_upsert_hourly(len(hourly)), sorted(hourly)),
                                  (_upsert_bins(len(bins)), sorted(bins))):
                    if adds:
                        c.execute(sql, _flat(adds))
                for wide in rollup_wide.TABLES:
                    used, adds = rollup_wide.union_rows(wide_sums[wide])  # in key order
                    if adds:
                        c.execute(_upsert_wide(wide, used, len(adds)), _flat(adds))
            return added

        return await self._run(apply)

    async def usage_rows(self, tenant: str, start: datetime, end: datetime) -> list[UsageRecord]:
        sql = (
            f"SELECT {_USAGE_COLS} FROM usage WHERE tenant = %s AND at >= %s AND at < %s"
            " ORDER BY at, id"
        )
        args = (tenant, codec.utc(start), codec.utc(end))
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_postgres_row(UsageRecord, r) for r in rows]

    async def usage_count(self) -> int:
        return int(await self._run(lambda c: c.execute("SELECT count(*) FROM usage").fetchone()[0]))  # type: ignore[index]

    async def job_counts(self) -> dict[str, int]:
        rows = await self._run(lambda c: c.execute(JOB_COUNTS).fetchall())
        return {str(status): int(n) for status, n in rows}

    async def _fetch(self, query: Query) -> list[tuple[Any, ...]]:
        sql, args = query
        return await self._run(lambda c: c.execute(sql, args).fetchall())

    def _usage_record(self, row: tuple[Any, ...]) -> UsageRecord:
        return codec.from_postgres_row(UsageRecord, row)

    # -- generic atomic state ----------------------------------------------------------

    async def update_state(self, scope: str, fn: StateFn[T]) -> T:
        def apply(c: Conn) -> T:
            c.execute(
                "INSERT INTO state (scope, data) VALUES (%s, NULL) ON CONFLICT (scope) DO NOTHING",
                (scope,),
            )
            row = c.execute("SELECT data FROM state WHERE scope = %s FOR UPDATE", (scope,)).fetchone()
            current = None if row is None else row[0]
            result, new = trio.from_thread.run_sync(fn, current)
            c.execute(
                "UPDATE state SET data = %s::jsonb, updated_at = now() WHERE scope = %s",
                (codec.dumps(new), scope),
            )
            return result

        return await self._run(apply)

    async def read_state(self, scope: str) -> State | None:
        row = await self._run(
            lambda c: c.execute("SELECT data FROM state WHERE scope = %s", (scope,)).fetchone()
        )
        return None if row is None or row[0] is None else dict(row[0])

    async def read_states(self, scopes: list[str]) -> dict[str, State | None]:
        sql = "SELECT scope, data FROM state WHERE scope = ANY(%s)"
        rows = await self._run(lambda c: c.execute(sql, (list(scopes),)).fetchall())
        found = {str(scope): data for scope, data in rows}
        return {s: None if found.get(s) is None else dict(found[s]) for s in scopes}

    async def update_states(self, scopes: tuple[str, ...], fn: StatesFn[T]) -> T:
        ordered = sorted(set(scopes))  # one lock order for every caller: no deadlock

        def apply(c: Conn) -> T:
            for scope in ordered:
                c.execute(
                    "INSERT INTO state (scope, data) VALUES (%s, NULL) ON CONFLICT (scope) DO NOTHING",
                    (scope,),
                )
            rows = c.execute(
                "SELECT scope, data FROM state WHERE scope = ANY(%s) ORDER BY scope FOR UPDATE",
                (ordered,),
            ).fetchall()
            current: dict[str, State | None] = {scope: data for scope, data in rows}
            result, new = trio.from_thread.run_sync(fn, current)
            for scope in ordered:
                c.execute(
                    "UPDATE state SET data = %s::jsonb, updated_at = now() WHERE scope = %s",
                    (codec.dumps(new[scope]), scope),
                )
            return result

        return await self._run(apply)

    # -- project and tenant budgets ----------------------------------------------------

    async def put_budget(self, rec: BudgetRecord) -> None:
        row = codec.postgres_row(rec)
        await self._run(lambda c: c.execute(budget_upsert_sql("%s"), row))

    async def delete_budget(self, tenant: str, project: str) -> bool:
        sql = "DELETE FROM budgets WHERE tenant = %s AND project = %s"
        return bool(await self._run(lambda c: c.execute(sql, (tenant, project)).rowcount))

    async def list_budgets(self, tenant: str | None = None) -> list[BudgetRecord]:
        sql, args = budget_list_sql("%s", tenant)
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_postgres_row(BudgetRecord, r) for r in rows]

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

    # -- idempotency keys (idem_rows.py) ------------------------------------------------

    async def idempotency_step(self, tenant: str, key: str, fn: StepFn[T]) -> T:
        return await self._run(lambda c: idem_rows.step_in(c, idem_rows.POSTGRES, tenant, key, fn))

    # -- stored response events (adapters/storage/streams.py) --------------------------

    async def stream_write(self, writes: Sequence[StreamWrite]) -> None:
        await self._run(lambda c: stream_sql.write(c, "%s", writes))

    async def stream_read(
        self, tenant: str, stream_id: str, after: int
    ) -> tuple[StreamHead | None, list[StoredEvent]]:
        return await self._run(lambda c: stream_sql.read(c, "%s", tenant, stream_id, after))

    async def stream_prune(self, now: float) -> int:
        return await self._run(lambda c: stream_sql.prune(c, "%s", now))

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


def _never(scope: str) -> bool:
    del scope
    return False
