"""The SSE keep-alive ticker (server/keepalive.py), on Trio's autojump clock.

- A stream's keep-alive task is started once it has been silent for its seconds, not
  before; each send moves that moment on; a stream that ends first never gets one.
- Streams with different intervals are each started on time, an earlier one watched
  while the ticker sleeps until a later one included.
- The heap stays bounded by the streams being watched, however many came before.
- Through `send_stream`: a silent stream gets keep-alive comments at its interval.
"""

from __future__ import annotations

from typing import Any

import trio

from server.keepalive import KeepAliveTicker
from server.streaming import send_stream


async def test_a_stream_gets_its_keepalive_task_only_after_its_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticker = KeepAliveTicker()
    started: list[tuple[str, float]] = []
    t0 = trio.current_time()
    busy = ticker.watch(10, lambda: started.append(("busy", trio.current_time() - t0)))
    ticker.watch(10, lambda: started.append(("quiet", trio.current_time() - t0)))
    for _ in range(3):  # busy sends every 6 s, until 18 s
        await trio.sleep(6)
        busy.last = trio.current_time()
    await trio.sleep(20)
    ticker.end(busy)
    assert started == [("quiet", 10), ("busy", 28)]


async def test_a_stream_that_ends_in_time_never_gets_one(autojump_clock: trio.testing.MockClock) -> None:
    ticker = KeepAliveTicker()
    started: list[float] = []
    watch = ticker.watch(10, lambda: started.append(trio.current_time()))
    await trio.sleep(9.9)
    ticker.end(watch)
    await trio.sleep(30)
    assert started == []


async def test_an_earlier_interval_watched_while_the_ticker_sleeps_fires_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticker = KeepAliveTicker()
    started: list[tuple[str, float]] = []
    t0 = trio.current_time()
    ticker.watch(60, lambda: started.append(("long", trio.current_time() - t0)))
    await trio.sleep(1)
    ticker.watch(2, lambda: started.append(("short", trio.current_time() - t0)))
    await trio.sleep(100)
    assert started == [("short", 3), ("long", 60)]


async def test_the_heap_stays_bounded_by_the_streams_being_watched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticker = KeepAliveTicker()
    held = [ticker.watch(15, lambda: None) for _ in range(10)]
    for _ in range(5000):
        ticker.end(ticker.watch(15, lambda: None))
    assert ticker.entries <= 2 * len(held) + 64 + 1
    for watch in held:
        ticker.end(watch)


async def test_a_silent_stream_gets_keepalive_comments_through_send_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[tuple[float, bytes]] = []
    t0 = trio.current_time()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append((trio.current_time() - t0, message["body"]))

    class Framer:
        keepalive = b": keep-alive\n\n"

        def fail(self, exe: object, error: object) -> None:
            raise AssertionError("not recorded")

    class SilentRun:
        exe = None

        async def drive(self, emit: Any, together: bool) -> None:
            await trio.sleep(35)  # the upstream is silent for 35 s, then the run ends

        async def close(self) -> None:
            pass

    class Answer:
        run, framer, headers, recorder = SilentRun(), Framer(), {}, None

    await send_stream(send, Answer(), keepalive=10, ticker=KeepAliveTicker())  # type: ignore[arg-type]
    assert sent[:-1] == [(10, Framer.keepalive), (20, Framer.keepalive), (30, Framer.keepalive)]
    assert sent[-1] == (35, b"")
