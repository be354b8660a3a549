"""A Postgres connection driven from the Trio thread (no worker thread).

Owns: one connection, and sending statements on it without leaving the Trio thread:
libpq in non-blocking mode, the socket waited on by Trio's own I/O wait. The ledger
writer (`pg_writer.py`) sends its one statement a batch with `rows`; the state
operations (`pg_state.py`, on `pg_lines.py`'s connections) send several statements in
ONE round trip with `pipeline` (libpq's pipeline mode: every statement, then one sync).
A statement so costs no thread hop (no pool checkout, no `to_thread` call and wake-up
back), which was about half of the gateway's CPU per ledger batch.

Rules:
- Opened lazily (the connect itself, the one blocking step, in a worker thread), again
  after the connection is lost; closed by `close` (`PostgresStorage.close`, after the
  writer has committed what was queued). One statement at a time: the writer task is
  the only user.
- A statement is its own transaction (autocommit): Postgres commits all of it or none.
  A pipeline's statements are one implicit transaction up to its sync, unless they
  open one with BEGIN (then it stays open until a later pipeline's COMMIT).
- A pipeline that fails on the server (its first error is raised; the statements after
  it were skipped) leaves no transaction open: it is rolled back first (one more round
  trip, on failure only), so the connection is clean for the next user. Its named
  statements are prepared on the connection on first use, in the same round trip.
- Each batch size's statement is prepared on the connection on its first use (at most
  `PREPARED` sizes; a larger batch is sent unnamed). Parameters go as text with no type:
  Postgres takes each parameter's type from the statement (the INSERT's columns, a
  `::jsonb` cast), so a prepared statement fits every later batch of its size, whatever
  values are NULL.
- Failures as the pool's (`pg_pool.py`): the server's error as psycopg's exception for
  its SQLSTATE (a refusal, a deadlock, ...); a connection that cannot be opened trips the
  same breaker (`PostgresConnection._unreachable`); a connection lost mid-statement is
  `StorageUnavailable` (the statement committed or not, as for the pool) and the next
  statement opens a new one.
- Cancelled mid-statement (the writer task is cancelled only when the run ends): the
  server is asked to cancel it (shielded, in a thread) and the connection is closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import abc, pq
from psycopg import errors as pg_errors
from psycopg.adapt import PyFormat, Transformer
from psycopg.conninfo import make_conninfo

T = TypeVar("T")
CONNECT_TIMEOUT_SECONDS = 3  # each attempt to open a connection (unless the URL sets one)
PREPARED = 64  # batch sizes prepared per connection (each is a plan of a 32 KB statement)

Params = Sequence[bytes | None]  # a pipeline's parameters: text, None for NULL


class Step:
    """One statement of a pipeline: prepared under `name` (None: sent unnamed) and run
    with `params`."""

    __slots__ = ("name", "params", "query")

    def __init__(self, name: bytes | None, query: bytes, params: Params = ()) -> None:
        self.name, self.query, self.params = name, query, params


class Lost(psycopg.OperationalError):
    """The connection broke while a statement was in flight."""


class Unreachable(psycopg.OperationalError):
    """No connection could be opened."""


def _send(send: Callable[[], None]) -> None:
    """`send()`; a connection that cannot send is `Lost`."""
    try:
        send()
    except psycopg.OperationalError as err:
        raise Lost(str(err)) from err


async def _statement_results(
    conn: psycopg.Connection[Any], fd: int
) -> tuple[pq.abc.PGresult | None, psycopg.Error | None]:
    """Read the results of the next statement sent on `conn` (waiting on its socket `fd`),
    up to the None that ends them or a pipeline's sync: its last result (None: there was
    none) and its first server error as psycopg's exception."""
    pg = conn.pgconn
    last: pq.abc.PGresult | None = None
    error: psycopg.Error | None = None
    while True:
        while pg.is_busy():
            await trio.lowlevel.wait_readable(fd)
            pg.consume_input()
        res = pg.get_result()
        if res is None:
            return last, error
        if res.status == pq.ExecStatus.FATAL_ERROR and error is None:
            error = pg_errors.error_from_result(res, encoding=conn.info.encoding)
        last = res
        if res.status == pq.ExecStatus.PIPELINE_SYNC:
            return last, error


class Line:
    def __init__(self, url: str, connect_timeout: int) -> None:
        # as the pool's: a connect timeout unless the URL sets its own
        self._url = url if "connect_timeout" in url else make_conninfo(url, connect_timeout=connect_timeout)
        self._conn: psycopg.Connection[Any] | None = None
        self._tx: abc.Transformer | None = None
        self._prepared: set[int] = set()
        self._named: set[bytes] = set()  # a pipeline's statements prepared on this connection
        self._closed = False
        self.statements = 0  # sent (for tests and benchmarks)

    async def _open(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise RuntimeError("storage is closed")
        if self._conn is not None and not self._conn.broken and not self._conn.closed:
            return self._conn
        self._drop()
        url = self._url
        # the one blocking step; a connect error (unreachable) is the caller's to map
        try:
            conn = await trio.to_thread.run_sync(lambda: psycopg.Connection.connect(url, autocommit=True))
        except psycopg.OperationalError as err:
            raise Unreachable(str(err)) from err
        conn.pgconn.nonblocking = 1
        self._conn, self._tx, self._prepared, self._named = conn, Transformer(conn), set(), set()
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._tx, self._prepared, self._named = None, None, set(), set()

    @property
    def idle(self) -> bool:
        """Open, or not yet opened, with no transaction left open on it."""
        conn = self._conn
        return conn is None or (not conn.broken and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE)

    async def _guarded(self, conn: psycopg.Connection[Any], work: Awaitable[T]) -> T:
        """`work` on `conn`; cancelled: the server asked to cancel (shielded, in a
        thread) and the connection closed (so is any transaction on it); lost: closed."""
        try:
            return await work
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.cancel_safe)
            self._drop()
            raise
        except Lost:
            self._drop()
            raise

    async def pipeline(self, steps: Sequence[Step]) -> list[pq.abc.PGresult]:
        """`steps` sent at once, then one sync: each step's result, in order. The
        first server error is raised, after rolling back a transaction it left open."""
        conn = await self._open()
        return await self._guarded(conn, self._pipeline(conn, steps))

    def loaded(self, res: pq.abc.PGresult) -> list[tuple[Any, ...]]:
        """`res`'s rows as a cursor's `fetchall` gives them: each column through psycopg's
        loader for its type (datetimes, NUMERIC as `Decimal`, booleans, JSON)."""
        assert self._tx is not None, "a result comes from an open connection"
        self._tx.set_pgresult(res)
        return self._tx.load_rows(0, res.ntuples, tuple)

    async def _pipeline(self, conn: psycopg.Connection[Any], steps: Sequence[Step]) -> list[pq.abc.PGresult]:
        pg = conn.pgconn
        if pg.pipeline_status == pq.PipelineStatus.OFF:
            pg.enter_pipeline_mode()  # and stays in it: this connection sends pipelines only
        sent: list[bytes | None] = []  # per message sent: the name it prepares, None for a step

        def send() -> None:
            preparing: set[bytes] = set()
            for step in steps:
                name = step.name
                if name is None:
                    pg.send_query_params(step.query, step.params)
                else:
                    if name not in self._named and name not in preparing:
                        pg.send_prepare(name, step.query)
                        preparing.add(name)
                        sent.append(name)
                    pg.send_query_prepared(name, step.params)
                sent.append(None)
            pg.pipeline_sync()

        _send(send)
        results, error = await self._synced(conn, len(sent))
        for name, res in zip(sent, results, strict=True):
            if name is not None and res.status == pq.ExecStatus.COMMAND_OK:
                self._named.add(name)  # prepared, whatever happened after it
        if error is not None:
            if pg.transaction_status != pq.TransactionStatus.IDLE:
                def rollback() -> None:
                    pg.send_query_params(b"ROLLBACK", None)
                    pg.pipeline_sync()

                _send(rollback)
                await self._synced(conn, 1)
            raise error
        return [res for name, res in zip(sent, results, strict=True) if name is None]

    async def _synced(
        self, conn: psycopg.Connection[Any], count: int
    ) -> tuple[list[pq.abc.PGresult], psycopg.Error | None]:
        """The results of the `count` statements sent, then their sync; the first
        server error among them (the others were skipped)."""
        pg = conn.pgconn
        fd = pg.socket
        results: list[pq.abc.PGresult] = []
        error: psycopg.Error | None = None
        try:
            while pg.flush():
                await trio.lowlevel.wait_writable(fd)
            for _ in range(count + 1):  # each statement's results end with None; the sync's does not
                last, failed = await _statement_results(conn, fd)
                error = error or failed
                if last is None:
                    raise Lost("no result from the database")
                results.append(last)
        except psycopg.OperationalError as err:  # the socket: read or write failed
            raise Lost(str(err)) from err
        if pg.status != pq.ConnStatus.OK or results[-1].status != pq.ExecStatus.PIPELINE_SYNC:
            raise Lost("the connection to the database was lost") from error
        return results[:-1], error

    async def rows(self, key: int, query: bytes, params: Sequence[Any]) -> list[tuple[bytes | None, ...]]:
        """`query` (Postgres's `$n` placeholders) with `params`, one transaction: the
        rows it answers, each column as text. `key` names the statement's text (the
        same key, the same text) for preparing it."""
        conn = await self._open()
        assert self._tx is not None
        values = self._tx.dump_sequence(params, [PyFormat.TEXT] * len(params))
        return await self._guarded(conn, self._rows(conn, key, query, values))

    async def _rows(
        self, conn: psycopg.Connection[Any], key: int, query: bytes, values: Sequence[abc.Buffer | None]
    ) -> list[tuple[bytes | None, ...]]:
        pg = conn.pgconn
        if key <= PREPARED:
            name = b"umg_ledger_%d" % key
            if key not in self._prepared:
                _send(lambda: pg.send_prepare(name, query))
                await self._result(conn)
                self._prepared.add(key)
            _send(lambda: pg.send_query_prepared(name, values))
        else:
            _send(lambda: pg.send_query_params(query, values))
        self.statements += 1
        res = await self._result(conn)
        return [tuple(res.get_value(i, j) for j in range(res.nfields)) for i in range(res.ntuples)]

    async def _result(self, conn: psycopg.Connection[Any]) -> pq.abc.PGresult:
        """The last result of what was sent; the server's error as psycopg's."""
        pg = conn.pgconn
        fd = pg.socket
        try:
            while pg.flush():
                await trio.lowlevel.wait_writable(fd)
            last, error = await _statement_results(conn, fd)
        except psycopg.OperationalError as err:  # the socket: read or write failed
            raise Lost(str(err)) from err
        if pg.status != pq.ConnStatus.OK:
            raise Lost("the connection to the database was lost") from error
        if error is not None:
            raise error
        if last is None:
            raise Lost("no result from the database")
        return last

    def reset(self) -> None:
        """Close the connection (a transaction left open on it is rolled back by the
        server); the next use opens a new one."""
        self._drop()

    def close(self) -> None:
        self._closed = True
        self._drop()

