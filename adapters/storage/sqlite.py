"""SQLite backend: the embedded default (stdlib sqlite3, WAL mode, zero setup).

Owns: running every storage operation on ONE connection, serialized by a `trio.Lock`
and executed in a worker thread (`trio.to_thread.run_sync`), so the Trio thread never
waits on disk or on another process; and keeping the hot path off that connection: key
lookups come from a short-lived cache (`keycache.py`), rate-limit and budget state from
memory (`memstate.py`), and ledger rows go through one writer with group commit
(`group_commit.py`).

Rules:
- WAL journal, `synchronous=NORMAL` (a power cut may lose the last commits, never
  corrupts; a crash of the process loses nothing committed), `busy_timeout` 10 s for
  what runs in a worker thread, 0 (the connection's standing value) on the Trio thread.
  `:memory:` databases live as long as the Storage.
- The writer's batch (ledger rows and dirty state) commits on the Trio thread, without
  a thread hop, when it can do so without waiting: the connection is free, the batch
  has at most 128 rows (at 64 concurrent requests batches hold 30-40; at most 32 sent
  most of them to a worker thread), and no other process holds the write lock (tried
  with no busy wait). In WAL mode with `synchronous=NORMAL` such a commit writes to the WAL and
  does not sync. Anything else (a busy file, a busy connection, a large batch) commits
  in a worker thread as before. A row that comes alone (`insert_usage(alone=True)`: the
  driver's only open run) is that same transaction in its caller's task, when it can be
  made without waiting (`_commit_now`), without the trip to the writer task and back.
  Checkpoints (where the syncs are) never run inside a
  commit (`wal_autocheckpoint` is off on this connection): every 100 write
  transactions a PASSIVE checkpoint runs in a worker thread.
- Writes run in `BEGIN IMMEDIATE` transactions: the write lock is taken up front, so a
  read-modify-write (`update_job`, `claim_job`) is atomic against this process's other
  tasks and against other processes using the file (`umg keys ...`; they wait up to
  `busy_timeout`).
- State is owned by one process: the first `update_state` / `read_state` (or `migrate`
  when opened with `owner=True`, as `umg serve` does) takes `<database>.lock`
  (`owner.py`); a second process gets `StorageBusy`. The owner applies `update_state`
  to its in-memory copy on the Trio thread, without a thread hop; `rl:*` and `key:*`
  scopes are committed behind (see `memstate.py`), every other scope before
  `update_state` returns.
- `insert_usage` returns once its row is committed, in a batch with the other rows
  queued meanwhile and with all state changed before it. A batch refused for what a
  row holds (a constraint or trigger, a value that cannot be bound or added up:
  `_ROW_REFUSED`, which includes the OverflowError of an int beyond 64 bits) is
  committed again one row at a time, as on Postgres, so only that row's caller gets
  the error, always an sqlite3 error (`RowNotStorable` wraps any other); the writer
  keeps running. So once a request's row is
  committed, so is the budget it settled before recording; after a crash what can be
  lost is the last `flush_seconds` (0.5 s) of rate-bucket changes and the reservations
  of requests that were still running.
- A thread call is not abandoned on cancellation: the statement finishes (they are
  short), the lock is released, and then `Cancelled` is raised.
- Callers' functions (`update_state`, `update_job`) run on the Trio thread; `update_job`
  calls them through `trio.from_thread.run_sync` while the transaction waits.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import trio

from adapters.storage import (
    codec,
    idem_rows,
    job_events_sql,
    outbox_sql,
    rollup,
    rollup_wide,
    sources,
)
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
    claim_record,
    claimable_where,
    heartbeat_fn,
    job_list_query,
    key_changes,
)
from adapters.storage.group_commit import GroupCommit, as_driver_error, row_by_row_on_refusal
from adapters.storage.idem_rows import StepFn
from adapters.storage.keycache import KeyCache
from adapters.storage.ledger import SQLITE, Query
from adapters.storage.memstate import StateTable, write_behind
from adapters.storage.migrations import migrations
from adapters.storage.owner import FileOwner
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
from core.errors import Conflict
from core.retention import STORES, Cutoffs

T = TypeVar("T")
log = logging.getLogger("umg.storage")
Conn = sqlite3.Connection

_KEY_COLS = ", ".join(codec.columns(KeyRecord))
_USAGE_COLS = ", ".join(codec.columns(UsageRecord))
_JOB_COLS = ", ".join(codec.columns(JobRecord))
_JOB_MUTABLE = [c for c in codec.columns(JobRecord) if c not in ("id", "tenant", "key_id")]
_NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')"  # same shape as codec.iso
_INSERT_USAGE = (
    f"INSERT INTO usage ({_USAGE_COLS}) VALUES ({', '.join('?' * len(codec.columns(UsageRecord)))})"
    " ON CONFLICT DO NOTHING"
)
_UPSERT_HOURLY = rollup.upsert_hourly("?", text_money=True)
_UPSERT_BINS = rollup.upsert_bins("?")

_BUSY_WAIT = "PRAGMA busy_timeout = 10000"
_BUSY_NOW = "PRAGMA busy_timeout = 0"
_READ_STATE = "SELECT data FROM state WHERE scope = ?"


class _NotNow:
    """What `SQLiteStorage._tx_now` answers when it cannot commit without waiting."""


NOT_NOW = _NotNow()
_HERE_ROWS = 128  # a larger batch commits in a worker thread (see SQLiteStorage._tx_here)
_CHECKPOINT_EVERY = 100  # write transactions between WAL checkpoints (about 1,000 pages)
_UPSERT_STATE = (
    "INSERT INTO state (scope, data) VALUES (?, ?)"
    " ON CONFLICT (scope) DO UPDATE SET data = excluded.data"
)


# What a ledger batch is refused for by one row's values, not by the database being
# unusable: a constraint or a trigger (IntegrityError), a value SQLite cannot bind or
# hold (DataError, InterfaceError, ProgrammingError; an int beyond 64 bits fails to bind
# with an OverflowError, not an sqlite3 error), a value the rollups cannot add (a
# TypeError, ValueError or ArithmeticError raised on that row's values). The batch is
# then committed row by row (`SQLiteStorage._commit`).
_ROW_REFUSED = (
    sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
    ArithmeticError, TypeError, ValueError,
)


class RowNotStorable(sqlite3.DataError):
    """A ledger row refused with an error that is not sqlite3's (its cause): raised as
    an sqlite3 error, so callers treat it as any refusal (`SQLiteStorage.errors`)."""


def _refusal(err: Exception) -> Exception:
    """`err` as the refused row's caller gets it: always an sqlite3 error."""
    return as_driver_error(err, sqlite3.Error, RowNotStorable)


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


def _write(conn: Conn, fn: Callable[[Conn], T]) -> T:
    """Run `fn` in a BEGIN IMMEDIATE transaction (runs in the worker thread)."""
    conn.execute("BEGIN IMMEDIATE")
    return _finish(conn, fn)


def _waiting(fn: Callable[[Conn], T], conn: Conn) -> T:
    """`fn(conn)` with the busy wait (in a worker thread, which may wait up to
    `busy_timeout` for another process's write lock); the connection's standing timeout
    is 0, for the commits on the Trio thread."""
    conn.execute(_BUSY_WAIT)
    try:
        return fn(conn)
    finally:
        conn.execute(_BUSY_NOW)


def _finish(conn: Conn, fn: Callable[[Conn], T]) -> T:
    """Run `fn` in the transaction just begun on `conn`: commit it, or roll it back if `fn` raises."""
    try:
        result = fn(conn)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result


def _state_value(row: tuple[Any, ...] | None) -> State | None:
    return None if row is None or row[0] is None else dict(json.loads(row[0]))


class SQLiteStorage(LedgerReads):
    """`owner=True`: take the state at `migrate` (a serving process, so a second one on the
    same file fails at start, not at its first limited request)."""

    def __init__(
        self,
        path: str,
        *,
        owner: bool = False,
        keys: KeyCache | None = None,
        flush_seconds: float = 0.5,
        queue_rows: int = 4096,
    ) -> None:
        self.path = path
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        self.shared = False  # one process owns the state (see the module rules)
        self.dialect = SQLITE
        self._conn: Conn | None = None
        self._lock = trio.Lock()
        self._closed = False
        self._closing = False  # close() has begun: state and new rows are refused
        self._owner_at_migrate = owner
        self._owner = None if path == ":memory:" else FileOwner(path)
        self.keys = keys or KeyCache()
        self._states = StateTable()
        self._reading: dict[str, trio.Event] = {}  # scopes being read into memory now
        self._through = trio.Lock()  # write-through scopes, one at a time
        self._writes = 0  # write transactions so far (for the checkpoints)
        self._checkpointing = False
        # the daily and all-tenant rollups' upserts (their SQL kept per set of bin columns);
        # `()` writes the 009 rollup alone (bench/ledger_writer.py)
        self._wide_upserts: tuple[rollup_wide.SparseUpserts, ...] = tuple(
            rollup_wide.SparseUpserts(wide, "?", text_money=True) for wide in rollup_wide.TABLES
        )
        self.writer = GroupCommit(
            self._commit, (sqlite3.Error,), capacity=queue_rows, flush_seconds=flush_seconds,
            commit_now=self._commit_now,
        )

    # -- plumbing ----------------------------------------------------------------------

    def _connect(self) -> Conn:
        # the rollups' upserts differ by the bin columns they name (rollup_wide.py, at
        # most SPARSE_SETS + 1 per table): room for them all in the connection's cache of
        # prepared statements, and no more (each wide one holds tens of KB)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               cached_statements=256)  # fmt: skip
        # the rollups' exact addition of costs kept as text (rollup.py's rules)
        conn.create_function(rollup.MONEY_ADD, 2, rollup.money_add, deterministic=True)
        conn.execute(_BUSY_WAIT)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        # checkpoints (the fsyncs) never run inside a commit: `_wrote` asks for them
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(_BUSY_NOW)  # the Trio thread's commits never wait; `_waiting` does
        return conn

    async def _run(self, fn: Callable[[Conn], T]) -> T:
        async with self._lock:
            if self._closed:
                raise RuntimeError("storage is closed")
            if self._conn is None:
                self._conn = await trio.to_thread.run_sync(self._connect)
            return await trio.to_thread.run_sync(_waiting, fn, self._conn)

    async def _tx(self, fn: Callable[[Conn], T]) -> T:
        try:
            return await self._run(lambda conn: _write(conn, fn))
        finally:
            self._wrote()

    async def _tx_here(self, fn: Callable[[Conn], T], rows: int) -> T:
        """`_tx` on the Trio thread, without a thread hop, when nothing would make it wait
        (the writer's batch; see the module rules): the connection is open and free, the
        batch is small, and no other process holds the write lock (`BEGIN IMMEDIATE`
        with no busy wait). Otherwise `_tx`, in a worker thread, as any transaction."""
        done = self._tx_now(fn, rows)
        if isinstance(done, _NotNow):
            return await self._tx(fn)  # waits for the other process in a worker thread
        return done

    def _tx_now(self, fn: Callable[[Conn], T], rows: int) -> T | _NotNow:
        """`_tx_here`'s commit on the Trio thread, or `NOT_NOW` (nothing done) when it
        would have to wait."""
        conn = self._conn
        if conn is None or self._closed or self._lock.locked() or rows > _HERE_ROWS:
            return NOT_NOW
        self._lock.acquire_nowait()
        try:
            try:  # with no busy wait (the connection's standing busy_timeout is 0)
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # the file is busy (another process writes)
                return NOT_NOW
            result = _finish(conn, fn)
            self._wrote()
            return result
        finally:
            self._lock.release()

    def _wrote(self) -> None:
        """Count a write transaction; every `_CHECKPOINT_EVERY`, a PASSIVE checkpoint of
        the WAL in a worker thread (behind the connection's lock, like any call)."""
        self._writes += 1
        if self._writes % _CHECKPOINT_EVERY == 0 and not self._checkpointing and not self._closing:
            self._checkpointing = True
            trio.lowlevel.spawn_system_task(self._checkpoint, name="umg-sqlite-checkpoint")

    async def _checkpoint(self) -> None:
        try:
            await self._run(lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        except (sqlite3.Error, RuntimeError) as err:  # closed meanwhile, or the disk failed
            log.warning("WAL checkpoint not made: %s", err)
        finally:
            self._checkpointing = False

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

    async def close(self) -> None:
        """Commit every queued row and changed state, then close (idempotent)."""
        if self._closing:
            return
        self._closing = True
        await self.writer.close()
        async with self._lock:
            self._closed = True
            if self._conn is not None:
                await trio.to_thread.run_sync(self._conn.close)
                self._conn = None
        if self._owner is not None:
            self._owner.release()

    async def health(self) -> bool:
        if self._closed:
            return False
        try:
            return await self._run(lambda c: c.execute("SELECT 1").fetchone() == (1,))
        except sqlite3.Error as err:
            log.warning("sqlite health check failed: %s", err)
            return False

    # -- keys ------------------------------------------------------------------------

    async def insert_key(self, rec: KeyRecord) -> None:
        row = codec.sqlite_row(rec)
        sql = f"INSERT INTO keys ({_KEY_COLS}) VALUES ({_marks(len(row))})"
        try:
            await self._tx(lambda c: c.execute(sql, row))
        except sqlite3.IntegrityError as err:
            raise Conflict("A key with this id or prefix already exists") from err
        finally:
            self.keys.forget(rec.prefix)

    async def _key_where(self, where: str, args: tuple[Any, ...]) -> list[KeyRecord]:
        sql = f"SELECT {_KEY_COLS} FROM keys {where} ORDER BY created_at, id"
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_sqlite_row(KeyRecord, r) for r in rows]

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None:
        async def read() -> KeyRecord | None:
            found = await self._key_where("WHERE prefix = ?", (prefix,))
            return found[0] if found else None

        return await self.keys.lookup(prefix, read)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        found = await self._key_where("WHERE id = ?", (key_id,))
        return found[0] if found else None

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        if tenant is None:
            return await self._key_where("", ())
        return await self._key_where("WHERE tenant = ?", (tenant,))

    async def revoke_key(self, id_or_prefix: str, at: datetime) -> KeyRecord | None:
        def apply(c: Conn) -> Any:
            c.execute(
                "UPDATE keys SET revoked_at = ? WHERE (id = ? OR prefix = ?) AND revoked_at IS NULL",
                (codec.iso(at), id_or_prefix, id_or_prefix),
            )
            return c.execute(
                f"SELECT {_KEY_COLS} FROM keys WHERE id = ? OR prefix = ? ORDER BY id LIMIT 1",
                (id_or_prefix, id_or_prefix),
            ).fetchone()

        try:
            row = await self._tx(apply)
        finally:
            self.keys.forget(id_or_prefix)
        if row is None:
            return None
        record = codec.from_sqlite_row(KeyRecord, row)
        self.keys.forget(record.prefix)
        return record

    async def count_keys(self) -> int:
        return int(await self._run(lambda c: c.execute("SELECT count(*) FROM keys").fetchone()[0]))

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        pairs = key_changes(changes)

        def apply(c: Conn) -> Any:
            if pairs:
                sets = ", ".join(f"{col} = ?" for col, _ in pairs)
                values = [codec.to_sqlite(col, v) for col, v in pairs]
                c.execute(f"UPDATE keys SET {sets} WHERE id = ?", (*values, key_id))
            return c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE id = ?", (key_id,)).fetchone()

        row = await self._tx(apply)
        if row is None:
            return None
        record = codec.from_sqlite_row(KeyRecord, row)
        self.keys.forget(record.prefix)  # a changed limit applies to the next request
        return record

    # -- usage ledger ----------------------------------------------------------------

    async def insert_usage(self, rec: UsageRecord, *, alone: bool = False) -> bool:
        return await self.writer.submit((codec.sqlite_row(rec), rec), alone=alone)

    async def _commit(self, rows: Sequence[tuple[Any, ...]]) -> list[bool | BaseException]:
        """The writer's commit: the batch in one transaction (`_commit_batch`). When it is
        refused for what a row holds (`_ROW_REFUSED`), each row is committed alone, so only
        the refused row's caller gets the error (an sqlite3 error: `_refusal`); the others
        are committed and answered. Any other failure fails the whole batch."""
        return await row_by_row_on_refusal(self._commit_batch, rows, _ROW_REFUSED, self._refused_row, "sqlite")

    def _refused_row(self, err: Exception) -> Exception:
        """A row refused alone, as its caller gets it (`_refusal`); the state its rolled-back
        transaction took back is committed soon (`poke`)."""
        self.writer.poke()
        return _refusal(err)

    async def _commit_batch(self, rows: Sequence[tuple[Any, ...]]) -> list[bool]:
        """The writer's batch: `rows` (each a (row, record) pair), what the inserted ones
        add to the hourly, daily and all-tenant rollups, and every changed state scope,
        one transaction."""
        apply, states, unstorable = self._batch(rows)
        try:
            results = await self._tx_here(apply, len(rows))
        except BaseException:
            self._states.mark_dirty([scope for scope, _ in states])
            raise
        self._batch_ended(unstorable)
        return results

    def _commit_now(self, row: tuple[Any, ...]) -> bool | BaseException | None:
        """A lone row's batch committed in the caller's task (`GroupCommit`'s
        `commit_now`): its answer, or None when it would have to wait (nothing done).
        A row refused for what it holds raises its caller's error, as `_commit` does."""
        apply, states, unstorable = self._batch([row])
        try:
            done = self._tx_now(apply, 1)
        except BaseException as err:
            self._states.mark_dirty([scope for scope, _ in states])
            if isinstance(err, _ROW_REFUSED):
                raise self._refused_row(err)  # noqa: B904  (the same error, or one whose cause is set)
            raise
        if isinstance(done, _NotNow):
            self._states.mark_dirty([scope for scope, _ in states])
            return None
        self._batch_ended(unstorable)
        return done[0]

    def _batch(self, rows: Sequence[tuple[Any, ...]]) -> tuple[
        Callable[[Conn], list[bool]], list[tuple[str, State | None]], list[tuple[str, Exception]]
    ]:
        """A batch's transaction (`apply`), the dirty state it takes, and where it lists
        the scopes it could not store."""
        states = self._states.take_dirty()
        unstorable: list[tuple[str, Exception]] = []

        def apply(c: Conn) -> list[bool]:
            inserted = [c.execute(_INSERT_USAGE, row).rowcount == 1 for row, _ in rows]
            new = [rec for (_, rec), added in zip(rows, inserted, strict=True) if added]
            hourly, bins = rollup.contributions(new)
            # one statement per rollup table: a row's cost is added in the upsert (MONEY_ADD)
            c.executemany(_UPSERT_HOURLY, rollup.money_texts(hourly))
            c.executemany(_UPSERT_BINS, bins)
            wide_sums = rollup_wide.sums(new) if new else {}
            for upserts in self._wide_upserts if new else ():
                wide = upserts.wide
                for sql, adds in upserts.of(wide_sums[wide]):
                    c.executemany(sql, rollup.money_texts(adds, len(wide.keys)))
            for scope, value in states:
                try:
                    text = codec.dumps(value)
                except (TypeError, ValueError) as err:  # a caller's bug: reported below
                    unstorable.append((scope, err))
                    continue
                c.execute(_UPSERT_STATE, (scope, text))
            return inserted

        return apply, states, unstorable

    def _batch_ended(self, unstorable: list[tuple[str, Exception]]) -> None:
        for scope, err in unstorable:
            log.error("state %r cannot be stored as JSON (%s): its change is discarded", scope, err)
            self._states.drop(scope)
        self._states.evict()

    async def usage_rows(self, tenant: str, start: datetime, end: datetime) -> list[UsageRecord]:
        sql = (
            f"SELECT {_USAGE_COLS} FROM usage WHERE tenant = ? AND at >= ? AND at < ?"
            " ORDER BY at, id"
        )
        args = (tenant, codec.iso(start), codec.iso(end))
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_sqlite_row(UsageRecord, r) for r in rows]

    async def usage_count(self) -> int:
        return int(await self._run(lambda c: c.execute("SELECT count(*) FROM usage").fetchone()[0]))

    async def job_counts(self) -> dict[str, int]:
        rows = await self._run(lambda c: c.execute(JOB_COUNTS).fetchall())
        return {str(status): int(n) for status, n in rows}

    async def _fetch(self, query: Query) -> list[tuple[Any, ...]]:
        sql, args = query
        return await self._run(lambda c: c.execute(sql, args).fetchall())

    def _usage_record(self, row: tuple[Any, ...]) -> UsageRecord:
        return codec.from_sqlite_row(UsageRecord, row)

    # -- generic atomic state ----------------------------------------------------------

    def _own(self) -> None:
        if self._closing:
            raise RuntimeError("storage is closed")
        if self._owner is not None:
            self._owner.acquire()

    async def _loaded(self, scope: str) -> None:
        """Bring `scope` into memory (one read the first time it is used). Requests that
        need it while it is being read wait for that read instead of queueing their own
        (1,000 streams opened at once on a fresh process made 1,000 reads, one after
        another, each a thread hop)."""
        self._own()
        while not self._states.loaded(scope):
            reading = self._reading.get(scope)
            if reading is not None:
                await reading.wait()  # then loaded, unless that read failed or was cancelled
                continue
            self._reading[scope] = done = trio.Event()
            try:
                row = await self._run(lambda c: c.execute(_READ_STATE, (scope,)).fetchone())
                self._states.load(scope, _state_value(row))
            finally:
                del self._reading[scope]
                done.set()

    async def update_state(self, scope: str, fn: StateFn[T]) -> T:
        await self._loaded(scope)
        if write_behind(scope):  # no await from here on: atomic on the Trio thread
            result, new = fn(self._states.value(scope))
            self._states.set(scope, new, dirty=True)
            self.writer.poke()
            return result
        async with self._through:
            await self._loaded(scope)  # it may have been dropped while we waited
            result, new = fn(self._states.value(scope))
            text = codec.dumps(new)
            with trio.CancelScope(shield=True):  # memory and file must not disagree
                await self._tx(lambda c: c.execute(_UPSERT_STATE, (scope, text)))
                self._states.set(scope, new, dirty=False)
            return result

    async def read_state(self, scope: str) -> State | None:
        """A shallow copy of the state in memory (treat nested values as read-only)."""
        await self._loaded(scope)
        value = self._states.value(scope)
        return None if value is None else dict(value)

    async def read_states(self, scopes: list[str]) -> dict[str, State | None]:
        """Those not in memory are read in one query (then kept, as `read_state` does)."""
        self._own()
        missing = sorted({s for s in scopes if not self._states.loaded(s)})
        if missing:
            sql = f"SELECT scope, data FROM state WHERE scope IN ({_marks(len(missing))})"
            found = dict(await self._run(lambda c: c.execute(sql, missing).fetchall()))
            for scope in missing:  # one that got into memory meanwhile keeps its value
                self._states.load(scope, _state_value((found[scope],)) if scope in found else None)
        out: dict[str, State | None] = {}
        for scope in scopes:
            value = self._states.value(scope)
            out[scope] = None if value is None else dict(value)
        return out

    async def update_states(self, scopes: tuple[str, ...], fn: StatesFn[T]) -> T:
        """Write-behind scopes only (budgets): applied in memory with no await between
        reading and writing them, so atomic on the Trio thread."""
        wanted = tuple(dict.fromkeys(scopes))
        if not all(write_behind(s) for s in wanted):
            raise ValueError(f"update_states takes write-behind scopes only, not {wanted}")
        self._own()
        while not all(self._states.loaded(s) for s in wanted):  # a load may evict another
            for scope in wanted:
                await self._loaded(scope)
        result, new = fn({s: self._states.value(s) for s in wanted})
        for scope in wanted:
            self._states.set(scope, new[scope], dirty=True)
        self.writer.poke()
        return result

    # -- project and tenant budgets ----------------------------------------------------

    async def put_budget(self, rec: BudgetRecord) -> None:
        row = codec.sqlite_row(rec)
        await self._tx(lambda c: c.execute(budget_upsert_sql("?"), row))

    async def delete_budget(self, tenant: str, project: str) -> bool:
        sql = "DELETE FROM budgets WHERE tenant = ? AND project = ?"
        return bool(await self._tx(lambda c: c.execute(sql, (tenant, project)).rowcount))

    async def list_budgets(self, tenant: str | None = None) -> list[BudgetRecord]:
        sql, args = budget_list_sql("?", tenant)
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_sqlite_row(BudgetRecord, r) for r in rows]

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

    # -- idempotency keys (idem_rows.py) ------------------------------------------------

    async def idempotency_step(self, tenant: str, key: str, fn: StepFn[T]) -> T:
        return await self._tx(lambda c: idem_rows.step_in(c, idem_rows.SQLITE, tenant, key, fn))

    # -- stored response events (adapters/storage/streams.py) --------------------------

    async def stream_write(self, writes: Sequence[StreamWrite]) -> None:
        await self._tx(lambda c: stream_sql.write(c, "?", writes))

    async def stream_read(
        self, tenant: str, stream_id: str, after: int
    ) -> tuple[StreamHead | None, list[StoredEvent]]:
        return await self._run(lambda c: stream_sql.read(c, "?", tenant, stream_id, after))

    async def stream_prune(self, now: float) -> int:
        return await self._tx(lambda c: stream_sql.prune(c, "?", now))

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
        return await self._tx(lambda c: sum(prune_sql.delete_batch(c, f, t, cut, limit) for t in tables))

    async def prunable(self, store: str, cut: Cutoffs) -> int:
        if store not in STORES:
            raise ValueError(f"no store {store!r} to prune")
        f = prune_sql.SQLITE
        if store == "budget_periods":
            pending = self._states.dirty_scopes()
            found = await self._run(lambda c: prune_sql.prunable_scopes(c, f, cut, None, pending.__contains__))
            return len(found)
        tables = prune_sql.targets(store)
        return await self._run(lambda c: sum(prune_sql.count(c, f, t, cut) for t in tables))
