"""adapters/outage.py: one line when the database goes, one when it is back, even when a
call that began before the outage succeeds after another worker's call failed."""

from __future__ import annotations

import logging

import pytest

from adapters.clock import Clock
from adapters.outage import Outage


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(" (")[0].split(" after")[0] for r in caplog.records]


async def test_a_call_that_began_before_the_outage_does_not_end_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outage = Outage(Clock(), logging.getLogger("test.outage"))
    before = outage.outages  # worker A starts its call while the database is there
    outage.failed(OSError("refused"), "claiming")  # worker B's call fails
    outage.ok(before)  # A's call, begun before the outage, comes back fine
    assert outage.down
    outage.failed(OSError("refused"), "claiming")  # still away: no second line
    assert outage.failures == 2
    assert lines(caplog) == ["database unreachable"]
    now = outage.outages  # a call made during the outage works: the database is back
    outage.ok(now)
    assert not outage.down and outage.failures == 0
    assert lines(caplog) == ["database unreachable", "database reachable again"]


async def test_the_next_outage_is_its_own() -> None:
    outage = Outage(Clock(), logging.getLogger("test.outage"))
    outage.failed(OSError("refused"), "claiming")
    outage.ok(outage.outages)
    stale = outage.outages
    outage.failed(OSError("refused"), "claiming")  # a second outage begins
    outage.ok(stale)  # a success from a call begun between the two does not end it
    assert outage.down and outage.outages == 2
