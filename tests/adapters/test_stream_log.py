"""Stored response events (adapters/stream_log.py) on both backends.

Two `StreamLog`s on one database stand for two gateway processes: one records, the other
reads only what the database holds. The intervals are a few hundredths of a second (the
writer runs storage calls in threads, which Trio's autojump clock would jump across).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from adapters.clock import Clock
from adapters.storage.base import Storage
from adapters.stream_log import StreamLog, StreamLost, StreamSettings
from core.errors import Gone, NotFound

SETTINGS = StreamSettings(
    retention_seconds=0.4, flush_seconds=0.02, poll_seconds=0.02, heartbeat_seconds=0.05,
    lost_after_seconds=0.3, prune_seconds=30.0,
)  # fmt: skip


@pytest.fixture
async def pair(storage: Storage) -> AsyncIterator[tuple[StreamLog, StreamLog]]:
    """Two logs on one database (two processes); closed before the storage is."""
    clock = Clock()
    here, there = StreamLog(storage, clock, SETTINGS), StreamLog(storage, clock, SETTINGS)
    try:
        yield here, there
    finally:
        await here.close()
        await there.close()


async def test_events_are_written_in_batches_and_read_by_another_process(
    pair: tuple[StreamLog, StreamLog]
) -> None:
    here, there = pair
    recorder = here.open("resp_1", "t1")
    for seq in range(200):
        recorder.add(seq, "response.output_text.delta", f'{{"n":{seq}}}')
    recorder.end()
    head, events = await here.read("t1", "resp_1", 150)  # from memory, before any write
    assert head.ended and [e.seq for e in events] == list(range(151, 200))
    await here.flush()
    assert here.batches == 1  # 200 events and the end: one transaction
    head, events = await there.read("t1", "resp_1", -1)
    assert head.ended and head.last_seq == 199
    assert [(e.seq, e.event, e.data) for e in events] == [
        (s, "response.output_text.delta", f'{{"n":{s}}}') for s in range(200)
    ]
    with pytest.raises(NotFound):
        await there.read("t2", "resp_1", -1)  # another tenant: as if it did not exist
    with pytest.raises(NotFound):
        await there.read("t1", "resp_2", -1)


async def test_a_tail_elsewhere_follows_a_running_stream_to_its_end(
    pair: tuple[StreamLog, StreamLog]
) -> None:
    here, there = pair
    recorder = here.open("resp_live", "t1")
    recorder.add(0, "a", "{}")
    got: list[int] = []

    async def produce() -> None:
        for seq in range(1, 20):
            await trio.sleep(0.01)
            recorder.add(seq, "a", "{}")
        recorder.end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        await here.flush()
        first = await there.read("t1", "resp_live", -1)
        async for batch in there.tail("t1", "resp_live", first, -1, keepalive=100.0):
            got += [e.seq for e in batch]
    assert got == list(range(20))  # in order, none twice, none lost
    assert 1 < here.batches < 19  # batched: fewer writes than events at this pace


async def test_local_tail_wakes_per_event_and_keepalive_batches_are_empty(
    pair: tuple[StreamLog, StreamLog]
) -> None:
    here, _ = pair
    recorder = here.open("resp_quiet", "t1")
    batches: list[list[int]] = []

    async def produce() -> None:
        await trio.sleep(0.25)
        recorder.add(0, "a", "{}")
        recorder.end()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        first = await here.read("t1", "resp_quiet", -1)
        async for batch in here.tail("t1", "resp_quiet", first, -1, keepalive=0.1):
            batches.append([e.seq for e in batch])
    assert batches[-1] == [0] and len(batches) >= 3  # keep-alive ticks, then the event
    assert all(batch == [] for batch in batches[:-1])


async def test_retention_then_gone_then_pruned(
    pair: tuple[StreamLog, StreamLog]
) -> None:
    here, there = pair
    recorder = here.open("resp_old", "t1")
    recorder.add(0, "a", "{}")
    recorder.end()
    await here.flush()
    head, _ = await there.read("t1", "resp_old", -1)
    assert head.ended
    await trio.sleep(SETTINGS.retention_seconds + 0.05)
    with pytest.raises(Gone):
        await there.read("t1", "resp_old", -1)
    await there.storage.stream_prune(there.clock.epoch())
    with pytest.raises(NotFound):
        await there.read("t1", "resp_old", -1)


async def test_a_running_stream_whose_process_died_is_lost_elsewhere(
    pair: tuple[StreamLog, StreamLog]
) -> None:
    here, there = pair
    recorder = here.open("resp_dead", "t1")
    recorder.add(0, "a", "{}")
    await trio.sleep(SETTINGS.lost_after_seconds + 0.1)  # quiet but alive: heartbeats
    head, events = await there.read("t1", "resp_dead", -1)
    assert not head.ended and [e.seq for e in events] == [0]
    await here.close()  # the process stops writing (its answer never ends)
    await trio.sleep(SETTINGS.lost_after_seconds + 0.05)
    with pytest.raises(StreamLost):
        await there.read("t1", "resp_dead", 0)
