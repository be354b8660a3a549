"""Background workers meeting an unreachable database: one line each way, and a backoff.

Owns: `Outage`, shared by one process's job workers and webhook delivery workers (and
their heartbeats), so a database that goes away is logged ONCE, as one clear line with
no traceback ("database unreachable ..."), and its return once ("database reachable
again after N s"), however many workers poll it meanwhile.

Rules:
- `failed(err)` is what a worker calls when a storage call raised one of the storage's
  own errors (`Storage.errors`: the driver's errors and `StorageUnavailable`); it
  answers how long to wait before trying again: `base` seconds after the first failure,
  doubling with each failure in a row (of any worker), at most `cap`.
- `ok(seen)` is called after a storage call that worked, with `seen` = `outages` read
  just before the call: it ends the outage (one line) and resets the backoff, unless
  the outage began while that call ran (`outages` moved on). A call that started before
  the database went away can still succeed after another worker's call failed; taken as
  the database's return, it would end the outage at once and the next failure would log
  it again (two lines each way, seen in tests/server/test_e2e_postgres_down.py). It costs
  an attribute test when there was no outage.
- Any other exception is a bug, not an outage: workers keep logging it with its
  traceback.
"""

from __future__ import annotations

import logging

from adapters.clock import Clock


class Outage:
    def __init__(
        self, clock: Clock, log: logging.Logger, *, base: float = 0.5, cap: float = 30.0
    ) -> None:
        self.clock = clock
        self.log = log
        self.base = base
        self.cap = cap
        self.failures = 0  # in a row, since the last call that worked
        self._since: float | None = None  # when the outage began (None: no outage)
        self.outages = 0  # how many have begun: what `ok` is given, read before its call

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, err: BaseException, what: str) -> float:
        """Note a storage error met while doing `what`; the seconds to wait."""
        self.failures += 1
        if self._since is None:
            self._since = self.clock.now()
            self.outages += 1
            self.log.error(
                "database unreachable (%s while %s: %s); background workers back off up to"
                " %g s until it is back", type(err).__name__, what, _first_line(err), self.cap,
            )
        return min(self.cap, self.base * 2.0 ** min(self.failures - 1, 30))

    def ok(self, seen: int) -> None:
        """A storage call worked; `seen` is `outages` as read before it was made."""
        if self._since is None or seen != self.outages:
            return
        lasted = self.clock.now() - self._since
        self._since, self.failures = None, 0
        self.log.warning("database reachable again after %.1f s; background workers resume", lasted)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


__all__ = ["Outage"]
