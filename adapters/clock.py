"""The only place that reads time.

Owns: "now" for the whole gateway. `now()` is Trio's clock (monotonic, and swappable in
tests for `MockClock` / `autojump_clock`); `wall()` is UTC wall time derived from it with
an offset fixed when the Clock is created, so wall time follows a mock clock too and
never jumps with NTP adjustments during the process's life. `epoch_at(now)` is the wall
time of an earlier `now()` reading. `monotonic()` is for code that runs outside Trio (a
worker thread of a library, e.g. the span exporter's): the OS's monotonic clock;
`epoch_seconds()` the OS's wall clock, for a log line's time. `reader()` is `now()` for a
loop within one Trio run, cheaper per read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import trio


class Clock:
    def __init__(self) -> None:
        self._offset = time.time() - trio.current_time()
        # `now()` is Trio's clock itself, no frame of ours around it: a relayed chunk reads
        # it several times
        self.now: Callable[[], float] = trio.current_time

    def reader(self) -> Callable[[], float]:
        """The running Trio run's own clock, read without `trio.current_time`'s two frames
        around it (about 2.3 k instructions a read, 0.8 k this way): for a loop that reads
        the time every turn within this one run (a stream's reads), never to keep."""
        return trio.lowlevel.current_clock().current_time

    def epoch(self) -> float:
        """Seconds since the Unix epoch, following the Trio clock."""
        return self._offset + trio.current_time()

    def epoch_at(self, now: float) -> float:
        """Seconds since the Unix epoch of the `now()` reading `now`."""
        return self._offset + now

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.epoch(), tz=UTC)


def epoch_seconds() -> float:
    """Seconds since the Unix epoch from the OS, for code with no `Clock` at hand: a log
    line's time (adapters/telemetry.py), as `logging` stamps its own records."""
    return time.time()


def monotonic() -> float:
    """Seconds of the OS's monotonic clock, for code outside Trio (a library's thread)."""
    return time.monotonic()
