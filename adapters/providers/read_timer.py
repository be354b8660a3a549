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

    `arm(conn, by)` before a wait; after it (in a `finally`) the connection sets its own
    `armed` back to 0 (no call); `forget(conn)` when the connection closes. A connection
    has at most one live entry in the heap (`conn.entry` is its sequence number,
    `conn.entry_at` its time); a wait whose deadline
    is at or after that entry's (a stream's next read: its idle deadline moved on) only
    sets `conn.armed`, and the task, when the entry comes due, wakes the read if its own
    deadline has passed, or pushes the entry again at that deadline (the deadline moved
    lazily: no heap push per read). An entry due while its connection waits for nothing
    is dropped. Entries left behind by an earlier deadline or a closed connection are
    dead; the heap is rebuilt from the live ones when the dead outnumber them, so it
    stays bounded by the connections that waited within a read deadline."""

    __slots__ = ("_heap", "_live", "_run", "_seq", "_target", "_wake")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Connection]] = []
        self._seq = 0
        self._live = 0  # connections with a live entry
        self._run: object | None = None  # the Trio run whose task serves this timer
        self._wake: trio.CancelScope | None = None  # the task's sleep, until `_target`
        self._target = math.inf

    def arm(self, conn: Connection, by: float) -> None:
        conn.armed = by
        if conn.entry and conn.entry_at <= by:
            return  # its entry comes due first: the task looks at `armed` then
        self._push(conn, by)
        if by < self._target:  # earlier than the task sleeps (or no task in this run yet)
            run = trio.lowlevel.current_root_task()
            if run is not self._run:
                self._run = run
                self._target = by
                trio.lowlevel.spawn_system_task(self._serve, name="umg-upstream-read-timer")
            elif self._wake is not None:
                self._target = by
                self._wake.deadline = by

    def _push(self, conn: Connection, by: float) -> None:
        if not conn.entry:
            self._live += 1
        self._seq += 1
        seq = conn.entry = self._seq
        conn.entry_at = by
        heapq.heappush(self._heap, (by, seq, conn))
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [entry for entry in self._heap if entry[2].entry == entry[1]]
            heapq.heapify(self._heap)

    @property
    def entries(self) -> int:
        """Entries in the heap, live or not (bounded: see the class docstring)."""
        return len(self._heap)

    def forget(self, conn: Connection) -> None:
        """The connection is closed: its entry is dead."""
        conn.armed = 0.0
        if conn.entry:
            conn.entry = 0
            self._live -= 1

    async def _serve(self) -> None:
        run = trio.lowlevel.current_root_task()
        try:
            while self._run is run:
                now = trio.current_time()
                heap = self._heap
                while heap and (heap[0][2].entry != heap[0][1] or heap[0][0] <= now):
                    _, seq, conn = heapq.heappop(heap)
                    if conn.entry != seq:
                        continue  # dead
                    conn.entry = 0
                    self._live -= 1
                    if not conn.armed:
                        continue  # waiting for nothing now
                    if conn.armed > now:  # its deadline moved on: due again then
                        self._push(conn, conn.armed)
                        heap = self._heap
                        continue
                    conn.armed = 0.0  # still waiting at its deadline: wake it
                    conn.overdue = True
                    fd = conn.sock.fileno()
                    if fd >= 0:
                        trio.lowlevel.notify_closing(fd)
                self._target = heap[0][0] if heap else math.inf
                with trio.CancelScope(deadline=self._target) as self._wake:
                    await trio.sleep_forever()
                self._wake = None
        finally:
            if self._run is run:  # the run is ending: nothing of it stays armed
                for _, _, conn in self._heap:
                    conn.entry = 0
                self._heap = []
                self._live = 0
                self._run = None
                self._wake = None
                self._target = math.inf
