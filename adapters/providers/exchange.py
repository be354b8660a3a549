"""One response's body being read, and where its connection goes after.

Owns: `Exchange`: the body decoded by `chunked.py` as each read's bytes arrive (the
bytes that came with the head first), a timeout or a cut as `ResponseTimedOut` /
`ResponseCut`, and the connection's end: back to its pool only after a complete
response to a complete request when neither side asked to close and nothing followed
the body (`ConnectionPool.check_in`), else closed; its pool slot released either way.
Leaving early (`close()`, which must follow) closes the connection: a half-read one is
never reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from adapters.providers import chunked
from adapters.providers.exchange_head import Head
from adapters.providers.http11_failures import NET_ERRORS, ResponseCut, ResponseTimedOut, describe
from adapters.providers.upstream_connection import Connection

if TYPE_CHECKING:
    from adapters.providers.http11 import ConnectionPool, OriginPool


class Exchange:
    """One response being read. `close()` must follow (idempotent; use `finally`)."""

    __slots__ = ("_body", "_conn", "_home", "_keep", "_pending", "_pool", "headers", "status")

    def __init__(
        self, pool: ConnectionPool, home: OriginPool, conn: Connection, head: Head
    ) -> None:
        self._pool = pool
        self._home: OriginPool | None = home
        self._conn: Connection | None = conn
        self._pending = head.rest  # body bytes that came with the head
        self._keep = head.keep
        self._body = chunked.reader_for(head.status, head.headers)
        self.status = head.status
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}

    async def receive(self, by: float, what: str) -> bytes:
        """The next piece of the body, b"" at its end; waits until `by` at most."""
        conn = self._conn
        body = self._body
        while conn is not None:
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = await conn.receive(by)
                except trio.TooSlowError:
                    self.close()
                    raise ResponseTimedOut(what, "timed out") from None
                except NET_ERRORS as exc:
                    self.close()
                    raise ResponseCut(what, describe(exc)) from None
                if not data:  # EOF: the end of a close-delimited body, else a cut
                    try:
                        body.end()
                    except chunked.BodyError as exc:
                        self.close()
                        raise ResponseCut(what, str(exc)) from None
                    self._finish(conn, reuse=False)
                    return b""
            try:
                piece = body.feed(data)
            except chunked.BodyError as exc:
                self.close()
                raise ResponseCut(what, f"the server broke HTTP/1.1 ({exc})") from None
            if body.done:  # back to the pool at once: the caller gets b"" next
                self._finish(conn, reuse=self._keep and not body.extra)
            if piece:
                return piece
            conn = self._conn
        return b""

    def _finish(self, conn: Connection, *, reuse: bool) -> None:
        self._conn = None
        home = self._home
        if reuse and home is not None:
            self._pool.check_in(home, conn)
        else:
            conn.close()
        self._release()

    def close(self) -> None:
        """Leave the exchange; an unfinished connection is closed, never pooled."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._release()

    def _release(self) -> None:
        if self._home is not None:
            self._home.slots.release()
            self._home = None
