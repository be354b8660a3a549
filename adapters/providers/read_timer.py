"""The deadlines of one connection pool's waiting reads, kept by one task, not a cancel scope each.

Owns: `ReadTimer`: a heap of the deadlines of the reads that wait on plain TCP
connections, and its one task (per pool and Trio run, a system task started on first
use) that sleeps until the earliest and wakes a read still waiting then with
`trio.lowlevel.notify_closing`, marking its connection overdue (the read raises
`trio.TooSlowError`). A `trio.CancelScope` per read cost about a tenth of a relayed
chunk's CPU (adapters/providers/http11.py's rules).
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from adapters.providers.upstream_connection import Connection


class ReadTimer:
    """The deadlines of one pool's waiting reads, enforced by one task (module rules).

    `arm(conn, by)` before a wait, `disarm(conn)` after it (in a `finally`). Entries are
    not removed from the heap when disarmed: an entry counts only while its sequence
    number is the connection's `armed`; the heap is rebuilt from the live ones when the
    dead outnumber them, so it stays bounded by the reads waiting at once."""

    __slots__ = ("_heap", "_live", "_run", "_seq", "_target", "_wake")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Connection]] = []
        self._seq = 0
        self._live = 0  # connections armed now
        self._run: object | None = None  # the Trio run whose task serves this timer
        self._wake: trio.CancelScope | None = None  # the task's sleep, until `_target`
        self._target = math.inf

    def arm(self, conn: Connection, by: float) -> None:
        self._seq += 1
        seq = conn.armed = self._seq
        heapq.heappush(self._heap, (by, seq, conn))
        self._live += 1
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [entry for entry in self._heap if entry[2].armed == entry[1]]
            heapq.heapify(self._heap)
        if by < self._target:  # earlier than the task sleeps (or no task in this run yet)
            run = trio.lowlevel.current_root_task()
            if run is not self._run:
                self._run = run
                self._target = by
                trio.lowlevel.spawn_system_task(self._serve, name="umg-upstream-read-timer")
            elif self._wake is not None:
                self._target = by
                self._wake.deadline = by

    @property
    def entries(self) -> int:
        """Entries in the heap, live or not (bounded: see the class docstring)."""
        return len(self._heap)

    def disarm(self, conn: Connection) -> None:
        if conn.armed:
            conn.armed = 0
            self._live -= 1

    async def _serve(self) -> None:
        run = trio.lowlevel.current_root_task()
        heap = self._heap
        while self._run is run:
            heap = self._heap
            now = trio.current_time()
            while heap and (heap[0][2].armed != heap[0][1] or heap[0][0] <= now):
                _, seq, conn = heapq.heappop(heap)
                if conn.armed == seq:  # still waiting at its deadline: wake it
                    self.disarm(conn)
                    conn.overdue = True
                    fd = conn.sock.fileno()
                    if fd >= 0:
                        trio.lowlevel.notify_closing(fd)
            self._target = heap[0][0] if heap else math.inf
            with trio.CancelScope(deadline=self._target) as self._wake:
                await trio.sleep_forever()
            self._wake = None
