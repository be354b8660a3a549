"""Waking idle workers: in process (`Wakeup`), and across processes by Postgres
LISTEN/NOTIFY on Trio, without a thread (`listen`).

Owns: `Wakeup`, what idle workers wait on, and one dedicated connection per process that
LISTENs on `umg_work` and calls `wake()` for every notification. Storage sends `NOTIFY umg_work` in the transaction
that queues a job or enqueues a webhook message (`adapters/storage/outbox_sql.py`), so
the notification arrives when that work is committed and visible.

How (psycopg 3 has no Trio API): the connection is in autocommit mode; the task waits
with `trio.lowlevel.wait_readable(conn.fileno())`, then drains what arrived with
`conn.notifies(timeout=0)` (which never blocks). Pending notifications are drained once
right after LISTEN, before the first wait. The connection belongs to this one task.

Failure: if the connection breaks, the error is logged, and the listener reconnects
after `retry_seconds` (calling `wake()` once on reconnect, since notifications sent in
between are lost). While the database stays away it is logged once (not at every try),
the tries back off (doubling, at most `MAX_RETRY_SECONDS`), and its return is logged once. Workers keep their slow fallback scan meanwhile, so nothing is
stuck: at worst work waits for that scan. SQLite has no LISTEN and needs none: the one
process that owns the file queues its work itself and wakes its workers in process
(`set()` for new work, `at()` for a retry it scheduled), so their scan every
`[jobs] poll_seconds` (5 s) is only a fallback, for work that comes due otherwise (the
lease of a job whose worker died).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from adapters.clock import Clock
from adapters.storage.outbox_sql import CHANNEL

if TYPE_CHECKING:  # imported where it is used: a SQLite gateway never loads psycopg
    import psycopg

log = logging.getLogger("umg.jobs")
MAX_RETRY_SECONDS = 10.0


class Wakeup:
    """What idle workers of one kind wait on: `set()` (new work may be there) from
    anywhere in the process, or `at(epoch)` (work this process scheduled comes due then);
    `wait(seconds)` returns at the first of those or after `seconds`.

    A `set()` while nobody waits is kept: the next `wait()` returns at once (work queued
    while every worker was busy is not missed). An `at()` earlier than the due time known
    so far wakes the workers already waiting only to wait again, until that time."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._event = trio.Event()
        self._due: float | None = None
        self._sets = 0  # how many set() calls so far
        self._waiting = 0

    def set(self) -> None:
        self._sets += 1
        self._event.set()

    def at(self, when: float) -> None:
        if self._due is None or when < self._due:
            self._due = when
            if self._waiting:
                self._event.set()  # the waiting workers recompute how long they wait

    async def wait(self, seconds: float) -> None:
        if self._event.is_set():  # set while nobody waited
            self._event = trio.Event()
            return
        until = trio.current_time() + seconds
        sets = self._sets
        self._waiting += 1
        try:
            while True:
                limit = until
                if self._due is not None:
                    limit = min(limit, trio.current_time() + max(0.0, self._due - self._clock.epoch()))
                with trio.move_on_at(limit) as timer:
                    await self._event.wait()
                if self._event.is_set():
                    self._event = trio.Event()
                if self._due is not None and self._due <= self._clock.epoch():
                    self._due = None
                    return
                if timer.cancelled_caught or self._sets != sets:
                    return
        finally:
            self._waiting -= 1


def _connect(url: str) -> psycopg.Connection[Any]:
    import psycopg

    conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    conn.execute(f"LISTEN {CHANNEL}")
    return conn


async def _drain_and_wait(conn: psycopg.Connection[Any], wake: Callable[[], None]) -> None:
    while True:
        if any(True for _ in conn.notifies(timeout=0)):
            wake()
        await trio.lowlevel.wait_readable(conn.fileno())


async def listen(
    url: str,
    wake: Callable[[], None],
    *,
    retry_seconds: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """LISTEN until cancelled; `task_status.started()` once the first LISTEN is in place."""
    import psycopg

    started = False
    failures = 0  # connection attempts failed in a row
    while True:
        try:
            conn = await trio.to_thread.run_sync(_connect, url)
        except psycopg.Error as err:
            if not failures:
                log.warning("cannot LISTEN for new work (%s); retrying, backing off up to %g s",
                            type(err).__name__, MAX_RETRY_SECONDS)
            failures += 1
            await trio.sleep(min(MAX_RETRY_SECONDS, retry_seconds * 2 ** min(failures - 1, 10)))
            continue
        if failures:
            log.warning("LISTEN for new work in place again after %d failed tries", failures)
            failures = 0
        try:
            if not started:
                task_status.started()
                started = True
            wake()  # anything queued while no LISTEN was in place
            await _drain_and_wait(conn, wake)
        except psycopg.Error as err:
            log.warning("the LISTEN connection broke (%s); reconnecting", type(err).__name__)
            await trio.sleep(retry_seconds)
        finally:
            conn.close()
