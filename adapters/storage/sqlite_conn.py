"""SQLite's one connection: the lock, the thread hop, transactions and WAL checkpoints.

Owns: running every SQLite statement on ONE connection, serialized by a `trio.Lock` and
executed in a worker thread (`trio.to_thread.run_sync`), so the Trio thread never waits
on disk or on another process; and the exception to that, a transaction committed on
the Trio thread when nothing would make it wait (`_tx_here`, `_tx_now`). The layers
above (`sqlite_writer.py`, `sqlite_state.py`, `sqlite.py`) run everything through it.

Rules:
- WAL journal, `synchronous=NORMAL` (a power cut may lose the last commits, never
  corrupts; a crash of the process loses nothing committed), `busy_timeout` 10 s for
  what runs in a worker thread, 0 (the connection's standing value) on the Trio thread.
  `:memory:` databases live as long as the Storage.
- Writes run in `BEGIN IMMEDIATE` transactions: the write lock is taken up front, so a
  read-modify-write (`update_job`, `claim_job`) is atomic against this process's other
  tasks and against other processes using the file (`umg keys ...`; they wait up to
  `busy_timeout`).
- A transaction commits on the Trio thread, without a thread hop, only when it can do
  so without waiting: the connection is open and free (or, for `_tx_here`, once
  another call of this process that holds it is done), it writes at most `HERE_ROWS`
  (128) ledger rows (at 64 concurrent requests batches hold 30-40; at most 32 sent most
  of them to a worker thread), and no other process holds the write lock (tried with no
  busy wait). In WAL mode with `synchronous=NORMAL` such a commit writes to the WAL and
  does not sync. Anything else commits in a worker thread. The ledger writer's batches
  are at most `HERE_ROWS` rows (sqlite_writer.py), so a backlog of rows is committed
  as several such transactions on the Trio thread, not one large one in a thread. A
  trip to a worker thread and back costs turns of Trio's run loop (the result comes
  back through the loop's wake-up, then the waiting task is resumed), and while 1,000
  streams relay at once one turn runs every runnable task, 0.2-0.3 s: a 139-row batch
  sent to a thread took 0.7 s, holding the connection, and every stream of it waited
  before its last byte (docs/performance.md, branch `burst`).
- A transaction may name what runs once it has committed (`committed`), under the lock:
  the writer keeps the rows it has committed for the rollups (`rollup_behind.py`) in
  exactly the order of their commits, with no other call in between.
- Checkpoints (where the syncs are) never run inside a commit (`wal_autocheckpoint` is
  off on this connection): every 100 write transactions a PASSIVE checkpoint runs in a
  worker thread.
- A thread call is not abandoned on cancellation: the statement finishes (they are
  short), the lock is released, and then `Cancelled` is raised.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import trio

from adapters.storage import rollup

T = TypeVar("T")
log = logging.getLogger("umg.storage")
Conn = sqlite3.Connection

_BUSY_WAIT = "PRAGMA busy_timeout = 10000"
_BUSY_NOW = "PRAGMA busy_timeout = 0"
HERE_ROWS = 128  # a larger batch commits in a worker thread (see SQLiteConnection._tx_here)
_CHECKPOINT_EVERY = 100  # write transactions between WAL checkpoints (about 1,000 pages)


class _NotNow:
    """What `SQLiteConnection._tx_now` answers when it cannot commit without waiting."""


NOT_NOW = _NotNow()


Committed = Callable[[], None] | None  # run once the transaction has committed, under the lock


def _write(conn: Conn, fn: Callable[[Conn], T], committed: Committed = None) -> T:
    """Run `fn` in a BEGIN IMMEDIATE transaction (runs in the worker thread)."""
    conn.execute("BEGIN IMMEDIATE")
    return _finish(conn, fn, committed)


def _waiting(fn: Callable[[Conn], T], conn: Conn) -> T:
    """`fn(conn)` with the busy wait (in a worker thread, which may wait up to
    `busy_timeout` for another process's write lock); the connection's standing timeout
    is 0, for the commits on the Trio thread."""
    conn.execute(_BUSY_WAIT)
    try:
        return fn(conn)
    finally:
        conn.execute(_BUSY_NOW)


def _finish(conn: Conn, fn: Callable[[Conn], T], committed: Committed = None) -> T:
    """Run `fn` in the transaction just begun on `conn`: commit it, or roll it back if `fn`
    raises. `committed` runs once it has committed, still under the connection's lock
    (on whichever thread ran the transaction), before any other call can use the
    connection: what the writer keeps in memory of a commit is kept in commit order."""
    try:
        result = fn(conn)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    if committed is not None:
        committed()
    return result


class SQLiteConnection:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: Conn | None = None
        self._lock = trio.Lock()
        self._closed = False
        self._closing = False  # close() has begun: state and new rows are refused
        self._writes = 0  # write transactions so far (for the checkpoints)
        self._checkpointing = False

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

    async def _tx(self, fn: Callable[[Conn], T], committed: Committed = None) -> T:
        try:
            return await self._run(lambda conn: _write(conn, fn, committed))
        finally:
            self._wrote()

    async def _tx_here(self, fn: Callable[[Conn], T], rows: int, committed: Committed = None) -> T:
        """`_tx` on the Trio thread, without a thread hop, when nothing would make it wait
        (see the module rules): the connection is open and free, the batch is small, and
        no other process holds the write lock (`BEGIN IMMEDIATE` with no busy wait). A
        connection held by another call of this process (a read or a checkpoint in a
        worker thread) is waited for, and then the transaction commits here. Otherwise
        `_tx`, in a worker thread, as any transaction."""
        done = self._tx_now(fn, rows, committed)
        if isinstance(done, _NotNow) and self._lock.locked() and rows <= HERE_ROWS:
            async with self._lock:
                done = self._tx_held(fn, committed)
        if isinstance(done, _NotNow):
            return await self._tx(fn, committed)  # waits for the other process in a worker thread
        return done

    def _tx_now(self, fn: Callable[[Conn], T], rows: int, committed: Committed = None) -> T | _NotNow:
        """`_tx_here`'s commit on the Trio thread, or `NOT_NOW` (nothing done) when it
        would have to wait."""
        if self._lock.locked() or rows > HERE_ROWS:
            return NOT_NOW
        self._lock.acquire_nowait()
        try:
            return self._tx_held(fn, committed)
        finally:
            self._lock.release()

    def _tx_held(self, fn: Callable[[Conn], T], committed: Committed = None) -> T | _NotNow:
        """The commit on the Trio thread with the connection's lock held by the caller, or
        `NOT_NOW` (nothing done): not connected yet, closed, or the file is busy."""
        conn = self._conn
        if conn is None or self._closed:
            return NOT_NOW
        try:  # with no busy wait (the connection's standing busy_timeout is 0)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # the file is busy (another process writes)
            return NOT_NOW
        result = _finish(conn, fn, committed)
        self._wrote()
        return result

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

    async def _disconnect(self) -> None:
        """Close the connection once the calls holding it are done (after `close()` has
        committed what was queued); every later call raises."""
        async with self._lock:
            self._closed = True
            if self._conn is not None:
                await trio.to_thread.run_sync(self._conn.close)
                self._conn = None
