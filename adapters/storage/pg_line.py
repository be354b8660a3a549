"""The ledger writer's own Postgres connection, driven from the Trio thread (no worker thread).

Owns: one connection kept for the ledger writer (`pg_writer.py`) and sending its one
statement a batch on it without leaving the Trio thread: libpq in non-blocking mode,
the socket waited on by Trio's own I/O wait. A batch so costs no thread hop (no pool
checkout, no `to_thread` call and wake-up back), which was about half of the gateway's
CPU per batch.

Rules:
- Opened lazily (the connect itself, the one blocking step, in a worker thread), again
  after the connection is lost; closed by `close` (`PostgresStorage.close`, after the
  writer has committed what was queued). One statement at a time: the writer task is
  the only user.
- A statement is its own transaction (autocommit): Postgres commits all of it or none.
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

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import trio
from psycopg import abc, pq
from psycopg import errors as pg_errors
from psycopg.adapt import PyFormat, Transformer
from psycopg.conninfo import make_conninfo

PREPARED = 64  # batch sizes prepared per connection (each is a plan of a 32 KB statement)


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


class Line:
    def __init__(self, url: str, connect_timeout: int) -> None:
        # as the pool's: a connect timeout unless the URL sets its own
        self._url = url if "connect_timeout" in url else make_conninfo(url, connect_timeout=connect_timeout)
        self._conn: psycopg.Connection[Any] | None = None
        self._tx: abc.Transformer | None = None
        self._prepared: set[int] = set()
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
        self._conn, self._tx, self._prepared = conn, Transformer(conn), set()
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._tx, self._prepared = None, None, set()

    async def rows(self, key: int, query: bytes, params: Sequence[Any]) -> list[tuple[bytes | None, ...]]:
        """`query` (Postgres's `$n` placeholders) with `params`, one transaction: the
        rows it answers, each column as text. `key` names the statement's text (the
        same key, the same text) for preparing it."""
        conn = await self._open()
        assert self._tx is not None
        pg = conn.pgconn
        values = self._tx.dump_sequence(params, [PyFormat.TEXT] * len(params))
        try:
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
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.cancel_safe)
            self._drop()
            raise
        except Lost:
            self._drop()
            raise
        return [tuple(res.get_value(i, j) for j in range(res.nfields)) for i in range(res.ntuples)]

    async def _result(self, conn: psycopg.Connection[Any]) -> pq.abc.PGresult:
        """The last result of what was sent; the server's error as psycopg's."""
        pg = conn.pgconn
        fd = pg.socket
        try:
            while pg.flush():
                await trio.lowlevel.wait_writable(fd)
            last: pq.abc.PGresult | None = None
            error: psycopg.Error | None = None
            while True:
                while pg.is_busy():
                    await trio.lowlevel.wait_readable(fd)
                    pg.consume_input()
                res = pg.get_result()
                if res is None:
                    break
                if res.status == pq.ExecStatus.FATAL_ERROR and error is None:
                    error = pg_errors.error_from_result(res, encoding=conn.info.encoding)
                last = res
        except psycopg.OperationalError as err:  # the socket: read or write failed
            raise Lost(str(err)) from err
        if pg.status != pq.ConnStatus.OK:
            raise Lost("the connection to the database was lost") from error
        if error is not None:
            raise error
        if last is None:
            raise Lost("no result from the database")
        return last

    def close(self) -> None:
        self._closed = True
        self._drop()
