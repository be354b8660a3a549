"""server/hypercorn_tasks.py on a real server: one idle timer per connection, and a client
that goes away heard without a task waiting for `http.disconnect`.

- The keep-alive timer runs from a connection's last answer, not from its start: a
  connection asked again before the timeout is served, and closed once it has been idle
  for the timeout; a connection serving requests spawns no timer (and the hot routes no
  watcher) per request.
- A client that closes its connection while a whole (non-streamed) answer is being
  computed cancels the request: the ledger row says `client_closed`.
- A connection whose client closes it ends at once, whether its client left while the
  connection was idle or before its stream's end was handled: its task (and with it its
  protocol, h11 state and buffers) is gone long before the keep-alive timeout.
- A request's receive channel: a message put while there is room, or received while one
  is queued, costs no schedule point (neither task is rescheduled); a full queue makes
  the put wait for the app, as Hypercorn's channel does.
- `Departures`: a callback armed after the client left is called at once, a disarmed one
  never, and each at most once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config

from server.hypercorn_tasks import DEPARTURES, Departures, DeparturesTaskGroup
from tests.server import conftest as server_conftest
from tests.server.conftest import Running, start_gateway
from tests.server.test_e2e_bad_input import host_port, read_until_closed, request_head
from tests.server.test_e2e_slow_clients import read_response, response_of

TIMEOUT = 1.0
BODY = json.dumps({"model": "mock-fast", "input": "hi"}).encode()
STREAM_BODY = json.dumps({"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}],
                          "stream": True}).encode()
LONG_TIMEOUT = 60.0  # far longer than a connection whose client left may linger


async def _serving(nursery: trio.Nursery, tmp_path: Path, timeout: float) -> AsyncIterator[Running]:
    """A gateway whose header (and keep-alive) timeout is `timeout` seconds."""
    settings = server_conftest.test_settings(tmp_path, UMG_HEADER_TIMEOUT_SECONDS=str(timeout))
    running = await start_gateway(nursery, settings)
    yield running
    running.stop.set()


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in _serving(nursery, tmp_path, TIMEOUT):
        yield running


class Spawned(trio.abc.Instrument):
    """The names of the tasks spawned while it is attached."""

    def __init__(self) -> None:
        self.names: Counter[str] = Counter()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names[task.name.rsplit(".", 1)[-1]] += 1


@pytest.fixture
async def long_keepalive(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in _serving(nursery, tmp_path, LONG_TIMEOUT):
        yield running


class Connections(trio.abc.Instrument):
    """The server's connection tasks (`trio.serve_listeners`' handlers) alive, and the most
    at once, while it is attached."""

    def __init__(self) -> None:
        self.live = 0
        self.most = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("._run_handler"):
            self.live += 1
            self.most = max(self.most, self.live)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("._run_handler"):
            self.live -= 1


def ask(key: str, extra: str = "") -> bytes:
    return request_head("/v1/responses", key, f"content-length: {len(BODY)}\r\n{extra}") + BODY


async def test_the_timer_runs_from_the_last_answer_and_no_task_is_spawned_per_request(
    gateway: Running,
) -> None:
    host, port = host_port(gateway.url)
    stream = await trio.open_tcp_stream(host, port)
    spawned = Spawned()
    async with stream:
        for n in range(4):  # 4 answers 0.5 s apart: 1.5 s in all, more than the timeout
            if n == 1:
                trio.lowlevel.add_instrument(spawned)  # the connection and its timer exist
            await stream.send_all(ask(gateway.key))
            status, _, answer = response_of(await read_response(stream))
            assert (status, answer["object"]) == (200, "response")
            await trio.sleep(TIMEOUT / 2)
        trio.lowlevel.remove_instrument(spawned)
        started = trio.current_time()
        _, closed = await read_until_closed(stream, seconds=10)
        idle = trio.current_time() - started
    assert closed and idle < 8, idle  # closed for being idle (the last sleep counts too)
    # per request: Hypercorn's task that runs the app, nothing else of the connection's
    assert spawned.names["_handle"] == 3
    assert spawned.names["_idle_timeout"] == 0 and spawned.names["_watch"] == 0
    assert spawned.names["_receive"] == 0  # the hot routes' disconnect watcher


async def test_a_client_gone_during_a_whole_answer_cancels_it(gateway: Running) -> None:
    host, port = host_port(gateway.url)
    stream = await trio.open_tcp_stream(host, port)
    spawned = Spawned()
    trio.lowlevel.add_instrument(spawned)
    try:
        async with stream:
            await stream.send_all(ask(gateway.key, "x-umg-mock-scenario: latency_ms=30000\r\n"))
            await trio.sleep(0.3)  # the provider is waiting
        with trio.fail_after(10):
            while not (rows := await gateway.services.storage.usage_rows(
                "t1", datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=1)
            )):  # fmt: skip
                await trio.sleep(0.02)
    finally:
        trio.lowlevel.remove_instrument(spawned)
    [row] = rows
    assert (row.status, row.error_code) == ("client_closed", "client_closed_request")
    assert spawned.names["_receive"] == 0  # heard without a watcher task


async def test_a_connection_whose_client_closed_it_ends_at_once(long_keepalive: Running) -> None:
    host, port = host_port(long_keepalive.url)
    stream_ask = request_head("/v1/chat/completions", long_keepalive.key,
                              f"content-length: {len(STREAM_BODY)}\r\n") + STREAM_BODY
    connections = Connections()
    trio.lowlevel.add_instrument(connections)
    try:
        async def one(streamed: bool) -> None:
            async with await trio.open_tcp_stream(host, port) as stream:
                if streamed:  # read to the chunked body's end, close at once (as bench/streams.py)
                    await stream.send_all(stream_ask)
                    data = b""
                    with trio.fail_after(30):
                        while not data.endswith(b"\r\n0\r\n\r\n"):
                            chunk = await stream.receive_some(65536)
                            assert chunk, data
                            data += chunk
                    assert data.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in data, data[:300]
                else:  # a whole answer, then the connection is idle when the client leaves
                    await stream.send_all(ask(long_keepalive.key))
                    assert response_of(await read_response(stream))[0] == 200

        async with trio.open_nursery() as clients:
            for n in range(20):
                clients.start_soon(one, n % 2 == 0)
        left = trio.current_time()
        with trio.move_on_after(5):
            while connections.live:
                await trio.sleep(0.02)
        waited = trio.current_time() - left
    finally:
        trio.lowlevel.remove_instrument(connections)
    assert connections.most >= 10  # the instrument saw the connections
    # none waits for the keep-alive timeout (60 s), nor for ever (a stream's timer had no deadline)
    assert connections.live == 0 and waited < 5, (connections.live, waited)


def test_departures_tell_once_at_once_and_never_when_disarmed() -> None:
    told: list[str] = []
    before = Departures()
    before.arm(lambda: told.append("armed"))
    before.leave()
    before.leave()
    assert told == ["armed"]

    late = Departures()
    late.leave()  # gone before anyone armed it
    late.arm(lambda: told.append("late"))
    assert told == ["armed", "late"]

    disarmed = Departures()
    disarmed.arm(lambda: told.append("disarmed"))
    disarmed.disarm()
    disarmed.leave()
    assert told == ["armed", "late"] and disarmed.gone



class Steps(trio.abc.Instrument):
    """How many times each task was resumed while it is attached."""

    def __init__(self) -> None:
        self.of: Counter[trio.lowlevel.Task] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.of[task] += 1


class App:
    """An ASGI app that receives `wanted` messages (its task kept in `task`), once `gate`
    is set."""

    def __init__(self, wanted: int, *, gate: bool = True) -> None:
        self.wanted = wanted
        self.gate = trio.Event()
        if gate:
            self.gate.set()
        self.got: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {}
        self.task: trio.lowlevel.Task | None = None
        self.done = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any, *_: Any) -> None:
        self.scope, self.task = scope, trio.lowlevel.current_task()
        if not self.gate.is_set():  # (a set Event's wait is a schedule point of its own)
            await self.gate.wait()
        for _ in range(self.wanted):
            self.got.append(await receive())
        self.done.set()


async def _nothing(_: object) -> None:
    return None


BODY_PART = {"type": "http.request", "body": b"x", "more_body": True}
BODY_END = {"type": "http.request", "body": b"", "more_body": False}


async def test_a_queued_message_is_put_and_received_without_a_schedule_point() -> None:
    config = Config()
    app = App(wanted=3)
    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        async with DeparturesTaskGroup() as group:
            put = await group.spawn_app(app, config, {"type": "http"}, _nothing)  # type: ignore[arg-type]
            me = trio.lowlevel.current_task()
            before = steps.of[me]
            await put(BODY_PART)  # room in the queue: this task is not rescheduled
            await put(BODY_END)
            assert steps.of[me] == before
            await trio.testing.wait_all_tasks_blocked()
            # one step: the app started, took both queued messages, and now waits for a third
            assert app.task is not None and steps.of[app.task] == 1
            assert app.got == [BODY_PART, BODY_END]
            departures = app.scope[DEPARTURES]
            assert not departures.gone
            await put({"type": "http.disconnect"})
            assert departures.gone  # told before the message is queued, as before
            with trio.fail_after(5):
                await app.done.wait()
            assert app.got[-1] == {"type": "http.disconnect"} and steps.of[app.task] == 2
    finally:
        trio.lowlevel.remove_instrument(steps)


async def test_a_full_queue_makes_the_put_wait_for_the_app() -> None:
    config = Config()
    config.max_app_queue_size = 1
    app = App(wanted=3, gate=False)
    async with DeparturesTaskGroup() as group:
        put = await group.spawn_app(app, config, {"type": "http"}, _nothing)  # type: ignore[arg-type]
        await put(BODY_PART)  # fits
        with trio.move_on_after(0.2) as waited:  # the app takes nothing yet: no room
            await put(BODY_PART)
        assert waited.cancelled_caught and app.got == []
        app.gate.set()
        with trio.fail_after(5):
            await put(BODY_PART)  # room once the app took the first
            await put(BODY_END)
            await app.done.wait()
    assert app.got == [BODY_PART, BODY_PART, BODY_END]
