"""What one request's run holds between its steps, and the one step of its attempt machine.

Owns: `RunState`, the mutable state of one run: its record (`Execution`), the attempt
machine's pending actions, the open grant, the meter of the attempt under way, the
observers, the cut reason, whether the row is written. `adapters/driver.py`'s `Run` is
this state with the API a surface calls (a subclass adding methods only, so a run is one
object and one `__init__`); the run's decisions are functions over it, one module each:
admission (adapters/run_admission.py), the attempt loop (adapters/run_attempts.py),
the relay of upstream reads (adapters/run_relay.py), the grants (adapters/run_grants.py)
and the end (adapters/run_end.py). Also owns `cancel` (the cut: its reason kept, the
run's scope cancelled) and `step`: the only place the run's `core.attempts` machine
advances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from adapters.execution import Execution
from adapters.ingress import Ingress
from adapters.limits import Grant
from adapters.observe import AttemptEnded, RunWatch
from adapters.stopwatch import Stopwatch
from core import attempts, metering
from core.errors import GatewayError

if TYPE_CHECKING:
    from adapters.driver import Driver


class RunState:
    """One run's state (see the module docstring)."""

    __slots__ = (
        "actions",
        "cut",
        "driver",
        "ending",
        "exe_or_none",
        "grant",
        "grant_attempt",
        "ingress",
        "meter",
        "recorded",
        "request_id",
        "scope",
        "stopwatch",
        "together",
        "told_ends",
        "told_ttft",
        "watch",
        "watched",
    )

    def __init__(self, driver: Driver, ingress: Ingress) -> None:
        self.driver = driver
        self.ingress = ingress
        self.request_id = ingress.request_id
        self.exe_or_none: Execution | None = None  # None until the body was parsed
        self.scope = trio.CancelScope()  # cancelled by `cancel(reason)`
        self.cut: GatewayError | None = None  # the reason of `cancel`
        self.ending = False  # its row is being written inside `scope`, shielded (driver.py)
        self.actions: tuple[attempts.Action, ...] = ()  # the machine's first actions
        self.grant: Grant | None = None  # the open grant of the attempt under way
        self.grant_attempt = 0
        self.meter = metering.Meter(0)
        self.recorded = False
        self.stopwatch = ingress.stopwatch or Stopwatch(driver.clock.now())
        self.watch: RunWatch | None = None  # this run's observers (adapters/observe.py)
        self.watched: attempts.CallProvider | None = None  # the attempt they were told of
        self.told_ends: tuple[AttemptEnded, ...] = ()  # each attempt_ended they were told
        self.told_ttft: float | None = None  # the first_chunk's ttft they were told
        self.together = False  # drive(together=True): a read's pieces as one Pieces

    @property
    def exe(self) -> Execution:
        assert self.exe_or_none is not None, "the run is not open"
        return self.exe_or_none

    def cancel(self, reason: GatewayError) -> None:
        """End the run with `reason` (the first reason given stays). A run whose row is
        being written is not cut: how it ended is decided, only the row is left to write."""
        if self.cut is None:
            self.cut = reason
        if not self.ending:
            self.scope.cancel()


def step(state: RunState, event: attempts.Event) -> tuple[attempts.Action, ...]:
    """Advance the run's attempt machine with `event`; the actions it asks for."""
    exe = state.exe
    assert exe.attempts is not None
    exe.attempts, actions = attempts.step(exe.attempts, event, state.driver.clock.now())
    return actions
