"""adapters/follow.py: the loop that follows stored events, with a scripted read and wait
on Trio's autojump clock (its users' tests: test_stream_log.py, test_e2e_job_stream.py)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from adapters.clock import Clock
from adapters.follow import Snapshot, follow_events
from adapters.storage.streams import StoredEvent, StreamHead
from core.errors import Gone


def head(last_seq: int, *, ended: bool = False) -> StreamHead:
    return StreamHead("s1", "t1", ended, last_seq, 0.0, math.inf)


def events(*seqs: int) -> list[StoredEvent]:
    return [StoredEvent(seq, "e", "{}") for seq in seqs]


class Script:
    """Stored events that appear at given times; reads and waits are recorded."""

    def __init__(self, clock: Clock, appear: dict[float, int], end_at: float) -> None:
        self.clock = clock
        self.start = clock.now()
        self.appear = appear  # seconds from the start -> the event's seq
        self.end_at = end_at
        self.reads: list[int] = []
        self.waits: list[tuple[float, float]] = []  # (when, until), from the start

    def _now(self) -> float:
        return self.clock.now() - self.start

    async def read(self, after: int) -> Snapshot:
        self.reads.append(after)
        there = sorted(seq for at, seq in self.appear.items() if at <= self._now())
        ended = self._now() >= self.end_at
        return head(there[-1] if there else -1, ended=ended), events(*(s for s in there if s > after))

    async def wait(self, after: int, until: float) -> None:
        self.waits.append((self._now(), until - self.start))
        await trio.sleep(min(0.5, max(0.0, until - self.clock.now())))  # a poll


async def follow(script: Script, first: Snapshot, after: int, keepalive: float) -> list[list[int]]:
    got: list[list[int]] = []
    batches = follow_events(
        first, after, read=script.read, wait=script.wait, clock=script.clock, keepalive=keepalive
    )
    async for batch in batches:
        got.append([e.seq for e in batch])
    return got


async def test_it_follows_to_the_end_in_order_reading_after_each_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = Script(Clock(), {0.0: 0, 0.7: 1, 0.8: 2, 2.2: 3}, end_at=2.2)
    first = await script.read(-1)
    got = await follow(script, first, -1, math.inf)
    assert got == [[0], [1, 2], [3]]  # each event once, in order, batched as read
    assert script.reads[0] == -1 and script.reads[-1] == 2  # the cursor is the last seq seen
    assert script.waits and all(until == math.inf for _, until in script.waits)  # no limit


async def test_quiet_time_gives_one_empty_batch_per_keepalive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = Script(Clock(), {0.0: 0, 3.0: 1}, end_at=3.0)
    first = await script.read(-1)
    got = await follow(script, first, -1, 1.0)
    assert got[0] == [0] and got[-1] == [1]
    assert got[1:-1] == [[], []]  # 3 s quiet: keep-alives at 1 s and 2 s, not more often
    assert all(0 < until - at <= 1.0 + 1e-9 for at, until in script.waits)  # never past one


async def test_an_ended_stream_read_whole_is_yielded_once_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = Script(Clock(), {0.0: 0, 0.1: 1}, end_at=0.0)
    first = (head(1, ended=True), events(0, 1))
    assert await follow(script, first, -1, 1.0) == [[0, 1]]
    assert script.waits == [] and script.reads == []
    nothing_after = (head(1, ended=True), [])
    assert await follow(script, nothing_after, 1, 1.0) == []  # resumed past the end


async def test_what_a_read_raises_ends_it(autojump_clock: trio.testing.MockClock) -> None:
    async def gone(after: int) -> Snapshot:
        raise Gone("expired", param="response_id")

    async def no_wait(after: int, until: float) -> None:
        await trio.lowlevel.checkpoint()

    batches = follow_events(
        (head(0), events(0)), -1, read=gone, wait=no_wait, clock=Clock(), keepalive=math.inf
    )
    got = []
    with pytest.raises(Gone):
        async for batch in batches:
            got.append(batch)
    assert [[e.seq for e in b] for b in got] == [[0]]
