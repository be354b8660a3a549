"""The state operations' Postgres connections: a few Trio-driven lines, lent one at a time.

Owns: how many connections the state operations (`pg_state.py`) may hold open and who
uses which. Each is a `pg_line.Line` (libpq non-blocking, driven from the Trio thread),
so a state change takes no worker thread and no psycopg pool checkout.

Rules:
- At most `size` lines; a caller waits (Trio's `CapacityLimiter`, first come first
  served) while all are lent. A line opens on its first use and is kept open; the most
  recently returned is lent first, so light load keeps one connection busy, not `size`.
- A line comes back clean or not at all: one returned with a transaction still open
  (its user was interrupted between two pipelines) is closed, and opens again when next
  lent, so nothing half done is ever seen by the next user.
- `close` closes every line (`PostgresStorage.close`); a line lent after that refuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from adapters.storage.pg_line import Line


class Lines:
    def __init__(self, url: str, connect_timeout: int, size: int) -> None:
        self._idle = [Line(url, connect_timeout) for _ in range(size)]
        self._all = tuple(self._idle)
        self._limiter = trio.CapacityLimiter(size)

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[Line]:
        async with self._limiter:
            line = self._idle.pop()  # the limiter leaves one free for each holder
            try:
                yield line
            finally:
                if not line.idle:
                    line.reset()
                self._idle.append(line)

    def close(self) -> None:
        for line in self._all:
            line.close()
