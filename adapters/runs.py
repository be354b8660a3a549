"""The requests in flight in this process, so a shutdown can end each one explicitly.

Owns: the drain state of the process and the set of open request runs. `begin_draining()`
(the first step of a shutdown) sets `draining` (so `/readyz` answers 503) and the
`drain_started` event (WebSocket connections wait on it to stop taking requests);
`idle` is set whenever no run is open; `end_all(reason)` cuts every open run with
`reason` (by default `ServiceUnavailable`: shutting down), which each run turns into an explicit error for its
client and a terminal ledger row. Runs add and discard themselves (adapters/driver.py).

Also owns the bound on detached runs (`Detached`): a recorded stream whose client went
away goes on to its end (so its answer is whole, stored for a resume, and billed once)
only while fewer than `limit` such runs are going on; past that it is cut as before.
A detached run is still in the registry, so a shutdown ends it like any other.
"""

from __future__ import annotations

from typing import Protocol

import trio

from core.errors import GatewayError, ServiceUnavailable

SHUTTING_DOWN = "The gateway is shutting down; the answer was cut short"


class Cuttable(Protocol):
    def cancel(self, reason: GatewayError) -> None: ...


class RunRegistry:
    def __init__(self) -> None:
        self._runs: set[Cuttable] = set()
        self.draining = False
        self.drain_started = trio.Event()
        self.idle = trio.Event()
        self.idle.set()

    def begin_draining(self) -> None:
        """Shutdown's first step: not ready any more, no new WebSocket work."""
        self.draining = True
        self.drain_started.set()

    def add(self, run: Cuttable) -> None:
        self._runs.add(run)
        self.idle = trio.Event() if self.idle.is_set() else self.idle

    def discard(self, run: Cuttable) -> None:
        self._runs.discard(run)
        if not self._runs:
            self.idle.set()

    def __len__(self) -> int:
        return len(self._runs)

    def end_all(self, reason: GatewayError | None = None) -> None:
        """Cut every open run with `reason` (default: the gateway is shutting down)."""
        reason = reason or ServiceUnavailable(SHUTTING_DOWN)
        for run in list(self._runs):
            run.cancel(reason)


class Detached:
    """How many runs go on without their client, at most `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def adopt(self) -> bool:
        """Take a place for one more detached run; False when all are taken."""
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1
