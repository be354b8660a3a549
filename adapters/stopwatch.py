"""The gateway's own time on one request: its overhead, excluding the providers.

Owns: the overhead figure (`x-gateway-overhead-ms`, the `gateway` block's `overhead_ms`,
the request log, the overhead histogram). It runs from when the request reached the
gateway (`arrived`: the ASGI layer's first look at it, or the driver's `open`) to when
the request's ledger row is written (`ended`), minus `waited`: every wait on a provider
(the time the driver spent awaiting a provider's next event, in every attempt, and the
back-off sleeps between attempts). Before the end it reads up to `now` (a stream's response head carries
the admission's overhead; its last event, the whole figure). Writing to the client is
gateway time.
"""

from __future__ import annotations

from attrs import define

OVERHEAD_HEADER = "x-gateway-overhead-ms"


@define
class Stopwatch:
    arrived: float  # clock.now()
    waited: float = 0.0  # seconds awaiting providers
    ended: float | None = None

    def overhead_ms(self, now: float) -> float:
        end = self.ended if self.ended is not None else now
        return max(0.0, (end - self.arrived - self.waited) * 1000)


def header_value(ms: float) -> str:
    """The `x-gateway-overhead-ms` value: milliseconds with two decimals."""
    return f"{ms:.2f}"
