"""Work of one request that need not delay its answer, done after the answer's last byte.

Owns: `Afterwards`, a request's list of such work. The surface that writes the answer
makes one, hands it to the driver (`Ingress.afterwards`), and runs it (`run`) once the
answer's last byte is written, or the answer ended any other way (an error, the client
gone). What the driver defers here is the part of a run's end that comes after its
ledger row: the observers told it finished (metrics, the request log line, the trace's
end) and the tokens-per-minute correction (adapters/run_end.py). The row itself, and
the idempotency layer's watch, still come before the answer's last byte.

At one request at a time that work was on the answer's critical path (about 2 % of a
lone request's time: docs/performance.md, issue 8, branch c1); done after the last
write, it runs while the client reads the answer. Work deferred once `run` has begun
(a detached stream's run ending after its client went away) is refused (`defer` says
False) and its caller does it at once, so nothing is left undone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Work = Callable[[], Awaitable[None]]


class Afterwards:
    __slots__ = ("_done", "_work")

    def __init__(self) -> None:
        self._work: list[Work] = []
        self._done = False

    def defer(self, work: Work) -> bool:
        """Keep `work` for `run`; False (not kept: do it now) once `run` has begun."""
        if self._done:
            return False
        self._work.append(work)
        return True

    async def run(self) -> None:
        """Do the deferred work, in the order it came (once; later work is refused)."""
        self._done = True
        while self._work:
            work = self._work.pop(0)
            try:
                await work()
            except BaseException:
                await self.run()  # the rest still done, then the error goes on
                raise
