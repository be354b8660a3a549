"""Postgres connections: the pool, the thread hop, cancellation, reruns and the breaker.

Owns: running every Postgres operation as one transaction on a pooled connection in a
worker thread (an operation of one statement, `_run(statement=True)`, as that
statement's own transaction, without BEGIN and COMMIT), and what happens when that
cannot be done. psycopg's async API is asyncio-only, so the sync driver runs through `trio.to_thread.run_sync` with a
`CapacityLimiter` the size of the pool (a thread never waits for a connection the pool
cannot give). The layers above (`pg_writer.py`, `postgres.py`) run everything through
`_run`, except the two hot paths, which run on Trio-driven connections (`pg_line.py`,
no worker thread) with the same reruns (`_reruns`), errors and breaker (`_on_line`):
the ledger writer's batches on the writer's own connection, and the state operations
(`update_state(s)`, `read_state(s)`) on `pg_lines.py`'s (`_lined`), as many as the
pool's size.

Rules:
- The pool opens lazily on first use; `_shut` closes it (`PostgresStorage.close`).
- Cancellation: a query running in a thread does not notice a Trio cancel by itself. So
  the thread is abandoned on cancel, and the cancelled task then (shielded) asks the
  server to cancel the running statement (`conn.cancel_safe()`) and waits until the
  thread has rolled back and returned its connection to the pool. The caller sees
  `Cancelled` promptly, the pool stays whole, and the transaction has not happened.

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

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio
from psycopg import errors as pg_errors

from adapters.clock import Clock
from adapters.storage.pg_line import CONNECT_TIMEOUT_SECONDS, Line, Lost, Unreachable
from adapters.storage.pg_lines import Lines
from core.errors import StorageContention, StorageUnavailable

T = TypeVar("T")
Conn = psycopg.Connection[Any]
log = logging.getLogger("umg.storage")

DOWN_SECONDS = 2.0  # how long a breaker trip lasts, and the Retry-After it gives
POOL_TIMEOUT_SECONDS = 5.0
# A deadlock or a serialization failure rolls the whole transaction back, so it is safe to
# run again (callers' functions are pure, see base.py): after each of these pauses once.
ROLLED_BACK = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
RERUN_PAUSES = (0.01, 0.05, 0.25)


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


def _autocommitted(conn: Conn, fn: Callable[[Conn], T]) -> T:
    """`fn`'s one statement as its own transaction (Postgres commits it, or nothing of
    it, by itself); the connection goes back to the pool as it came, out of autocommit
    (a broken one is the pool's to discard)."""
    conn.autocommit = True
    try:
        return fn(conn)
    finally:
        if not conn.broken:
            conn.autocommit = False


def connection_failed(err: Exception) -> StorageUnavailable:
    """A connection failed mid-operation: the error to raise."""
    log.warning("postgres connection failed: %s", err)
    return StorageUnavailable(
        "The gateway's database connection failed; try again shortly", retry_after=DOWN_SECONDS
    )


class PostgresConnection:
    def __init__(
        self, url: str, *, pool_size: int, pool_timeout: float, clock: Clock | None
    ) -> None:
        extra = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, name="umg-storage",
            timeout=pool_timeout, kwargs=extra,
        )
        self._clock = clock
        self._down_until: float | None = None  # the breaker is open until then (clock.now())
        self._limiter = trio.CapacityLimiter(pool_size)
        self._lines = Lines(url, CONNECT_TIMEOUT_SECONDS, pool_size)  # the state operations'
        self._opened = False
        self._closed = False
        self._open_lock = threading.Lock()
        self.errors: tuple[type[Exception], ...] = (psycopg.Error, StorageUnavailable)

    def _work(self, fn: Callable[[Conn], T], slot: _Slot, statement: bool) -> T:
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
                    if statement:
                        return _autocommitted(conn, fn)
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

    async def _run(self, fn: Callable[[Conn], T], *, statement: bool = False) -> T:
        """`fn` in one transaction; rerun (after a pause) when Postgres rolled it back
        for a deadlock or a serialization failure, at most `len(RERUN_PAUSES)` times.
        `statement`: `fn` sends ONE statement, its own transaction (autocommit: no
        BEGIN and COMMIT round trips)."""
        return await self._reruns(lambda: self._once(fn, statement))

    async def _reruns(self, once: Callable[[], Awaitable[T]]) -> T:
        """`once()`, one transaction, run again after each of `RERUN_PAUSES` while
        Postgres rolls it back (a deadlock, a serialization failure), then
        `StorageContention`."""
        for pause in RERUN_PAUSES:
            try:
                return await once()
            except ROLLED_BACK as err:
                log.info("postgres rolled a transaction back (%s); running it again in %g s",
                         err.sqlstate, pause)
            await trio.sleep(pause)
        try:
            return await once()
        except ROLLED_BACK as err:
            log.warning("postgres rolled a transaction back %d times in a row (%s); giving up",
                        len(RERUN_PAUSES) + 1, err.sqlstate)
            raise StorageContention(
                "The gateway's database aborted this operation under contention; try again shortly",
                retry_after=DOWN_SECONDS,
            ) from err

    async def _lined(self, op: Callable[[Line], Awaitable[T]]) -> T:
        """`op` on a line of `pg_lines.py` (one transaction, from the Trio thread), rerun
        as `_run`'s transactions are and failing as they do."""

        async def once() -> T:
            async with self._lines.lend() as line:
                return await self._on_line(lambda: op(line))

        return await self._reruns(once)

    async def _on_line(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, statements on a Trio-driven connection (`pg_line.py`), failing as
        `_once` does: the breaker open, unreachable (trips it), lost
        (`StorageUnavailable`); a rollback for contention is raised for `_reruns`."""
        self._gate()
        try:
            result = await call()
        except Unreachable as err:
            raise self._unreachable("cannot connect", err) from err
        except Lost as err:
            raise connection_failed(err) from err
        except ROLLED_BACK:
            raise  # the database is there: `_reruns` runs it again
        except psycopg.OperationalError as err:  # the server's, e.g. an admin shutdown
            raise connection_failed(err) from err
        self._down_until = None
        return result

    async def _once(self, fn: Callable[[Conn], T], statement: bool) -> T:
        self._gate()
        slot = _Slot()
        try:
            result = await trio.to_thread.run_sync(
                self._work, fn, slot, statement, limiter=self._limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(slot.cancel)
            raise
        except ROLLED_BACK:
            raise  # the database is there: the caller reruns the transaction
        except psycopg_pool.PoolTimeout as err:
            raise self._unreachable("no connection within the pool timeout", err) from err
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            raise connection_failed(err) from err
        self._down_until = None
        return result

    def _unreachable(self, why: str, err: Exception) -> StorageUnavailable:
        """No connection could be had: trip the breaker; the error to raise."""
        self._down_until = self._now() + DOWN_SECONDS
        log.warning("postgres unreachable (%s): %s", why, err)
        return StorageUnavailable(
            "The gateway's database is unreachable; try again shortly", retry_after=DOWN_SECONDS
        )

    async def _shut(self) -> None:
        """Close the pool (once the writer has committed what was queued)."""

        def shut() -> None:
            with self._open_lock:
                self._closed = True
                if self._opened:
                    self._pool.close()

        self._lines.close()
        await trio.to_thread.run_sync(shut)
