"""The pool's read timer (adapters/providers/read_timer.py): a waiting read on plain
TCP is bounded by its deadline without a cancel scope of its own.

- A read still waiting at its deadline raises `trio.TooSlowError`; another read waiting
  on the same timer with a later deadline is not disturbed and gets its bytes.
- A read whose deadline has passed before it waits raises at once; so does any read on a
  connection that timed out once (it is spent).
- An earlier deadline armed while the timer sleeps until a later one still fires on time.
- The heap stays bounded by the reads waiting at once, however many reads came before.
- A wait cancelled from outside leaves nothing armed.
"""

from __future__ import annotations

import pytest
import trio

from adapters.providers.read_timer import ReadTimer
from adapters.providers.upstream_connection import Connection


def pair(timer: ReadTimer) -> tuple[Connection, trio.SocketStream]:
    ours, theirs = trio.socket.socketpair()
    tcp = trio.SocketStream(ours)
    return Connection(tcp, tcp, timer), trio.SocketStream(theirs)


async def test_a_read_waiting_at_its_deadline_times_out_and_the_others_wait_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = ReadTimer()
    soon, _peer1 = pair(timer)
    later, peer2 = pair(timer)
    got: list[bytes] = []
    timed_out: list[float] = []

    async def patient() -> None:
        got.append(await later.receive(trio.current_time() + 100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(patient)
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await soon.receive(start + 5)
        timed_out.append(trio.current_time() - start)
        assert not got
        await peer2.send_all(b"hello")
    assert got == [b"hello"]
    assert timed_out[0] == pytest.approx(5, abs=0.01)
    with pytest.raises(trio.TooSlowError):  # spent: it timed out once
        await soon.receive(trio.current_time() + 100)
    assert later.armed == 0 and soon.armed == 0


async def test_a_deadline_already_past_raises_at_once() -> None:
    conn, peer = pair(ReadTimer())
    await peer.send_all(b"x")
    with pytest.raises(trio.TooSlowError):
        await conn.receive(trio.current_time() - 1)


async def test_an_earlier_deadline_armed_while_the_timer_sleeps_fires_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = ReadTimer()
    first, _peer1 = pair(timer)
    second, _peer2 = pair(timer)
    ended: dict[str, float] = {}
    start = trio.current_time()

    async def wait(name: str, conn: Connection, after: float) -> None:
        with pytest.raises(trio.TooSlowError):
            await conn.receive(start + after)
        ended[name] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "late", first, 50.0)
        await trio.sleep(1)  # the timer now sleeps until 50
        nursery.start_soon(wait, "early", second, 3.0)
    assert ended["early"] == pytest.approx(3, abs=0.01)
    assert ended["late"] == pytest.approx(50, abs=0.01)


async def test_the_heap_stays_bounded_by_the_reads_waiting_at_once() -> None:
    timer = ReadTimer()
    conn, peer = pair(timer)

    async def feed() -> None:
        for _ in range(2000):
            await peer.send_all(b"x")
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        got = 0
        while got < 2000:
            got += len(await conn.receive(trio.current_time() + 60))
    assert timer.entries <= 2 * 1 + 64 + 1


async def test_a_cancelled_wait_leaves_nothing_armed() -> None:
    timer = ReadTimer()
    conn, _peer = pair(timer)
    with trio.move_on_after(0.05):
        await conn.receive(trio.current_time() + 60)
    assert conn.armed == 0 and not conn.overdue


async def test_a_deadline_moved_on_by_the_next_read_fires_at_the_later_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = ReadTimer()
    conn, peer = pair(timer)
    start = trio.current_time()

    async def answer_at_5() -> None:
        await trio.sleep(5)
        await peer.send_all(b"x")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_at_5)
        assert await conn.receive(start + 10) == b"x"  # its entry is due at 10
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)
    with pytest.raises(trio.TooSlowError):
        await conn.receive(trio.current_time() + 10)  # a deadline at 15, past the entry's 10
    assert trio.current_time() - start == pytest.approx(15, abs=0.01)
    assert timer.entries <= 1


async def test_an_entry_due_while_nothing_waits_is_dropped_and_the_next_read_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = ReadTimer()
    conn, peer = pair(timer)
    await peer.send_all(b"x")
    assert await conn.receive(trio.current_time() + 3) == b"x"
    await trio.sleep(10)  # the entry (due at 3) came due with no read waiting
    assert timer.entries == 0 and conn.entry == 0
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await conn.receive(start + 2)
    assert trio.current_time() - start == pytest.approx(2, abs=0.01)


async def test_a_closed_connection_leaves_no_live_entry() -> None:
    timer = ReadTimer()
    conns = [pair(timer) for _ in range(100)]
    for conn, peer in conns:
        await peer.send_all(b"x")
        assert await conn.receive(trio.current_time() + 600) == b"x"
        conn.close()
    assert all(conn.entry == 0 for conn, _ in conns)
    assert timer.entries <= 2 + 64  # the dead ones are dropped as they outnumber the live
