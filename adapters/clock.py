"""The only place that reads time.

Owns: "now" for the whole gateway. `now()` is Trio's clock (monotonic, and swappable in
tests for `MockClock` / `autojump_clock`); `wall()` is UTC wall time derived from it with
an offset fixed when the Clock is created, so wall time follows a mock clock too and
never jumps with NTP adjustments during the process's life.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import trio


class Clock:
    def __init__(self) -> None:
        self._offset = time.time() - trio.current_time()

    def now(self) -> float:
        return trio.current_time()

    def epoch(self) -> float:
        """Seconds since the Unix epoch, following the Trio clock."""
        return self._offset + trio.current_time()

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.epoch(), tz=UTC)
