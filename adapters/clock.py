"""The only place that reads time.

Owns: "now" for the whole gateway. `now()` is Trio's clock (monotonic, and swappable in
tests for `MockClock` / `autojump_clock`); `wall()` is UTC wall time derived from it with
an offset fixed when the Clock is created, so wall time follows a mock clock too and
never jumps with NTP adjustments during the process's life. `epoch_at(now)` is the wall
time of an earlier `now()` reading. `monotonic()` is for code that runs outside Trio (a
worker thread of a library, e.g. the span exporter's): the OS's monotonic clock;
`epoch_seconds()` the OS's wall clock, for a log line's time.

A Clock belongs to the Trio run it was made in (its wall-time offset is that run's
clock's): `now` is that run's clock's own `current_time`, bound once, so a reading is
one call, not `trio.current_time()`'s three frames (it is read about 20 times per
request, and several times per relayed chunk).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import trio


class Clock:
    def __init__(self) -> None:
        # the run's clock (trio.current_time() reads the same one, through three frames)
        self.now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        self._offset = time.time() - self.now()

    def epoch(self) -> float:
        """Seconds since the Unix epoch, following the Trio clock."""
        return self._offset + self.now()

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
