"""When a stream has been silent long enough to need SSE keep-alive comments.

Owns: one ticker per process (per Trio run: a system task, started on first use) that
watches the streams being written (`server/streaming.py`) and starts a stream's own
keep-alive task only once the stream has sent nothing for its `seconds`. Most streams
end long before (a task and its cancellation per stream cost about 40 us, a tenth of a
millisecond of CPU per hundred relayed chunks), so most never have one.

Rules:
- `watch(seconds, start)` when the stream's first frame is about to go; the stream sets
  `Watch.last` (`trio.current_time()`) on every send and calls `end(watch)` when it
  ends. `start` is called at most once, from the ticker's task, no earlier than `seconds`
  after the last send, and never after `end`; it must not block (it spawns the task
  into the stream's own nursery, so what that task raises is the stream's).
- The ticker never sends: a slow client cannot hold up another stream's keep-alives.
- Entries of ended streams hold no reference to the stream (`end` drops `start`); the
  heap is rebuilt from the live ones when the dead outnumber them, so it stays bounded by
  the streams being watched.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import trio


class Watch:
    __slots__ = ("last", "seconds", "start")

    def __init__(self, seconds: float, start: Callable[[], None], now: float) -> None:
        self.seconds = seconds
        self.start: Callable[[], None] | None = start  # None: ended, or the task runs
        self.last = now  # the stream's last send


class KeepAliveTicker:
    __slots__ = ("_heap", "_live", "_run", "_seq", "_target", "_wake")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = 0
        self._live = 0  # watches in the heap whose `start` may still be called
        self._run: object | None = None  # the Trio run whose task serves this ticker
        self._wake: trio.CancelScope | None = None  # the task's sleep, until `_target`
        self._target = math.inf

    @property
    def entries(self) -> int:
        """Entries in the heap, live or not (bounded: see the module rules)."""
        return len(self._heap)

    def watch(self, seconds: float, start: Callable[[], None]) -> Watch:
        watch = Watch(seconds, start, trio.current_time())
        self._push(watch.last + seconds, watch)
        heap = self._heap
        if len(heap) > 2 * self._live + 64:
            self._heap = [entry for entry in heap if entry[2].start is not None]
            self._live = len(self._heap)
            heapq.heapify(self._heap)
        return watch

    def end(self, watch: Watch) -> None:
        """The stream ended: `start` is not called from now on."""
        if watch.start is not None:
            watch.start = None
            self._live -= 1

    def _push(self, due: float, watch: Watch) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, watch))
        self._live += 1
        if due < self._target:  # earlier than the task sleeps (or no task in this run yet)
            run = trio.lowlevel.current_root_task()
            if run is not self._run:
                self._run = run
                self._target = due
                trio.lowlevel.spawn_system_task(self._serve, name="umg-sse-keepalive-ticker")
            elif self._wake is not None:
                self._target = due
                self._wake.deadline = due

    async def _serve(self) -> None:
        run = trio.lowlevel.current_root_task()
        while self._run is run:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                _, _, watch = heapq.heappop(self._heap)
                if watch.start is None:
                    continue  # ended
                self._live -= 1
                due = watch.last + watch.seconds
                if due <= now:
                    start, watch.start = watch.start, None
                    start()
                else:  # it sent since: look again when it may be silent long enough
                    self._push(due, watch)
            self._target = self._heap[0][0] if self._heap else math.inf
            with trio.CancelScope(deadline=self._target) as self._wake:
                await trio.sleep_forever()
            self._wake = None
