"""WebSocket `GET /v1/responses/ws` on the real gateway (mock mode), with trio_websocket.

Protocol (server/routes/ws.py): auth at the handshake (Bearer / x-api-key header, the
`umg-key.<key>` subprotocol, or `?api_key=`); a bad key is closed with 4401. Then JSON
text frames: `response.create` / `response.cancel` with a client `id`; the server answers
each request with the Responses stream events, each tagged with that `id`, ending with
`response.completed` / `.incomplete` / `.failed` / `.cancelled`. Bad messages get an
`error` frame and the connection stays open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from adapters.storage.records import UsageRecord
from tests.server.conftest import Running

Frame = dict[str, Any]
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "response.cancelled"}
CLOSE_UNAUTHORIZED = 4401


def ws_url(gateway: Running, query: str = "") -> str:
    return gateway.url.replace("http://", "ws://", 1) + "/v1/responses/ws" + query


@asynccontextmanager
async def connect(
    gateway: Running,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
    query: str = "",
) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(
        ws_url(gateway, query), extra_headers=headers, subprotocols=subprotocols
    ) as ws:
        yield ws


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


def mock_answer(user_text: str, upstream: str = "gpt-4.1") -> str:
    return " ".join(["Mock", "answer", "from", f"{upstream}:", *user_text.split()])


async def send(ws: WebSocketConnection, message: Frame | str) -> None:
    await ws.send_message(message if isinstance(message, str) else json.dumps(message))


async def create(
    ws: WebSocketConnection, client_id: str, prompt: str, scenario: str | None = None
) -> None:
    request: Frame = {"model": "gpt-4.1", "input": prompt}
    if scenario is not None:
        request["metadata"] = {"mock_scenario": scenario}
    await send(ws, {"type": "response.create", "id": client_id, "request": request})


async def receive(ws: WebSocketConnection) -> Frame:
    frame = json.loads(await ws.get_message())
    assert isinstance(frame, dict)
    return frame


async def until_done(ws: WebSocketConnection, *ids: str) -> dict[str, list[Frame]]:
    """Every frame, grouped by id, until each id got a terminal frame."""
    frames: dict[str, list[Frame]] = {i: [] for i in ids}
    open_ids = set(ids)
    with trio.fail_after(10):
        while open_ids:
            frame = await receive(ws)
            assert frame.get("id") in frames, frame
            frames[frame["id"]].append(frame)
            if frame["type"] in TERMINAL:
                open_ids.discard(frame["id"])
    return frames


async def wait_for_type(ws: WebSocketConnection, client_id: str, kind: str) -> list[Frame]:
    seen: list[Frame] = []
    with trio.fail_after(10):
        while not seen or seen[-1]["type"] != kind:
            frame = await receive(ws)
            assert frame.get("id") == client_id, frame
            assert frame["type"] not in TERMINAL, frame
            seen.append(frame)
    return seen


def text_of(frames: list[Frame]) -> str:
    return "".join(str(f["delta"]) for f in frames if f["type"] == "response.output_text.delta")


def request_id(frames: list[Frame]) -> str:
    return "req_" + str(frames[0]["response"]["id"]).removeprefix("resp_")


async def ledger(gateway: Running) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return await gateway.services.storage.usage_rows(
        "t1", now - timedelta(days=1), now + timedelta(days=1)
    )


async def row_for(gateway: Running, rid: str) -> UsageRecord:
    [row] = [r for r in await ledger(gateway) if r.request_id == rid]
    return row


def assert_completed_stream(frames: list[Frame], prompt: str) -> None:
    types = [f["type"] for f in frames]
    answer = mock_answer(prompt)
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == len(answer.split())
    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
    assert text_of(frames) == answer
    final = frames[-1]["response"]
    assert final["id"].startswith("resp_")
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == answer
    assert final["usage"]["input_tokens"] == len(prompt.split()) + 4
    assert final["usage"]["output_tokens"] == len(answer.split())


# -- auth ------------------------------------------------------------------------------------


async def test_header_auth_streams_one_request_to_completed(gateway: Running) -> None:
    prompt = "hello over the socket"
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        assert ws.subprotocol is None
        await create(ws, "r1", prompt)
        frames = (await until_done(ws, "r1"))["r1"]
    assert_completed_stream(frames, prompt)
    assert frames[-1]["response"]["gateway"]["provider"] == "openai"
    row = await row_for(gateway, request_id(frames))
    assert row.endpoint == "responses.ws"
    assert row.status == "ok"
    assert row.stream is True
    assert row.output_tokens == frames[-1]["response"]["usage"]["output_tokens"]
    assert row.cost > 0


async def test_x_api_key_header_auth(gateway: Running) -> None:
    async with connect(gateway, headers=[(b"x-api-key", gateway.key.encode())]) as ws:
        await create(ws, "k", "via x-api-key")
        frames = (await until_done(ws, "k"))["k"]
    assert_completed_stream(frames, "via x-api-key")


async def test_subprotocol_auth_answers_umg_when_offered(gateway: Running) -> None:
    async with connect(gateway, subprotocols=["umg", f"umg-key.{gateway.key}"]) as ws:
        assert ws.subprotocol == "umg"
        await create(ws, "s", "browser style")
        frames = (await until_done(ws, "s"))["s"]
    assert_completed_stream(frames, "browser style")


async def test_subprotocol_auth_with_only_the_key_protocol(gateway: Running) -> None:
    # Regression: the server used to answer `umg` though the client had not offered it,
    # which hypercorn refuses mid-handshake (and which took the whole server down).
    offered = f"umg-key.{gateway.key}"
    async with connect(gateway, subprotocols=[offered]) as ws:
        assert ws.subprotocol == offered
        await create(ws, "s", "key protocol only")
        frames = (await until_done(ws, "s"))["s"]
    assert_completed_stream(frames, "key protocol only")
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        await create(ws, "after", "still serving")
        assert_completed_stream((await until_done(ws, "after"))["after"], "still serving")


async def test_query_parameter_auth(gateway: Running) -> None:
    async with connect(gateway, query=f"?api_key={gateway.key}") as ws:
        await create(ws, "q", "query key")
        frames = (await until_done(ws, "q"))["q"]
    assert_completed_stream(frames, "query key")


@pytest.mark.parametrize("how", ["none", "header", "x-api-key", "subprotocol", "query"])
async def test_bad_auth_is_closed_with_4401(gateway: Running, how: str) -> None:
    real = await gateway.new_key()
    wrong = real[:-4] + ("aaaa" if not real.endswith("aaaa") else "bbbb")
    ways: dict[str, dict[str, Any]] = {
        "none": {},
        "header": {"headers": bearer(wrong)},
        "x-api-key": {"headers": [(b"x-api-key", wrong.encode())]},
        "subprotocol": {"subprotocols": ["umg", f"umg-key.{wrong}"]},
        "query": {"query": f"?api_key={wrong}"},
    }
    kwargs = ways[how]
    with trio.fail_after(10):
        async with connect(gateway, **kwargs) as ws:
            with pytest.raises(ConnectionClosed) as caught:
                await ws.get_message()
    assert caught.value.reason is not None
    assert caught.value.reason.code == CLOSE_UNAUTHORIZED
    assert await gateway.services.storage.usage_count() == 0


# -- many requests -----------------------------------------------------------------------------


async def test_several_requests_one_after_another_on_one_connection(gateway: Running) -> None:
    prompts = ["first question", "second one here", "and a third"]
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        results = []
        for i, prompt in enumerate(prompts):
            await create(ws, f"seq{i}", prompt)
            results.append((await until_done(ws, f"seq{i}"))[f"seq{i}"])
        # An id can be reused once its request is done.
        await create(ws, "seq0", "reused id")
        again = (await until_done(ws, "seq0"))["seq0"]
    for frames, prompt in zip(results, prompts, strict=True):
        assert_completed_stream(frames, prompt)
    assert_completed_stream(again, "reused id")
    ids = {frames[-1]["response"]["id"] for frames in [*results, again]}
    assert len(ids) == 4
    rows = [r for r in await ledger(gateway) if r.endpoint == "responses.ws"]
    assert len(rows) == 4
    assert {r.status for r in rows} == {"ok"}


async def test_concurrent_requests_interleave_and_all_complete(gateway: Running) -> None:
    prompts = {"a": "alpha words go here", "b": "beta", "c": "gamma delta epsilon"}
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        order: list[tuple[str, str]] = []
        for cid, prompt in prompts.items():
            await create(ws, cid, prompt, scenario="chunk_delay_ms=20")
        frames: dict[str, list[Frame]] = {cid: [] for cid in prompts}
        open_ids = set(prompts)
        with trio.fail_after(10):
            while open_ids:
                frame = await receive(ws)
                order.append((frame["id"], frame["type"]))
                frames[frame["id"]].append(frame)
                if frame["type"] in TERMINAL:
                    open_ids.discard(frame["id"])
    for cid, prompt in prompts.items():
        assert_completed_stream(frames[cid], prompt)
    # They ran at the same time: the frames of different requests are interleaved.
    first_done = next(i for i, (_, kind) in enumerate(order) if kind in TERMINAL)
    assert len({cid for cid, _ in order[:first_done]}) == len(prompts)


async def test_failed_request_ends_with_response_failed_and_connection_stays(
    gateway: Running,
) -> None:
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        await create(ws, "bad", "will fail", scenario="fail=400")
        failed = (await until_done(ws, "bad"))["bad"]
        await create(ws, "good", "works after")
        good = (await until_done(ws, "good"))["good"]
    assert [f["type"] for f in failed][-2:] == ["error", "response.failed"]
    assert failed[-1]["response"]["status"] == "failed"
    assert_completed_stream(good, "works after")
    row = await row_for(gateway, request_id(failed))
    assert row.status == "error"
    assert row.error_code is not None


# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_stops_a_request_still_waiting_for_the_provider(gateway: Running) -> None:
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        # The Mock waits 30 s before answering: only a cancel ends this within the limit.
        await create(ws, "slow", "slow answer", scenario="latency_ms=30000")
        started = await wait_for_type(ws, "slow", "response.in_progress")
        with trio.fail_after(60):  # a hang guard: the Mock alone answers at 30 s
            await send(ws, {"type": "response.cancel", "id": "slow"})
            cancelled = await receive(ws)
        assert cancelled == {
            "type": "response.cancelled",
            "response_id": started[0]["response"]["id"],
            "id": "slow",
        }
        # The connection is still usable, and nothing more arrives for the cancelled id.
        await create(ws, "next", "after the cancel")
        after = await until_done(ws, "next")
        await send(ws, {"type": "response.cancel", "id": "slow"})
        gone = await receive(ws)
    assert_completed_stream(after["next"], "after the cancel")
    assert gone["type"] == "error" and gone["id"] == "slow" and gone["param"] == "id"
    row = await row_for(gateway, request_id(started))
    assert row.endpoint == "responses.ws"
    assert row.status == "client_closed"
    assert row.output_tokens == 0
    assert row.cost == 0


async def test_cancel_mid_stream_stops_the_deltas(gateway: Running) -> None:
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        # 200 words, 50 ms apart: ten seconds if it were not cancelled.
        await create(ws, "long", "go", scenario="output_tokens=200;chunk_delay_ms=50")
        seen = await wait_for_type(ws, "long", "response.output_text.delta")
        await send(ws, {"type": "response.cancel", "id": "long"})
        with trio.fail_after(60):  # a hang guard: uncancelled, the stream ends at 10 s
            while True:
                frame = await receive(ws)
                seen.append(frame)
                if frame["type"] in TERMINAL:
                    break
    assert seen[-1]["type"] == "response.cancelled"
    deltas = [f for f in seen if f["type"] == "response.output_text.delta"]
    assert 1 <= len(deltas) < 200
    row = await row_for(gateway, request_id(seen))
    assert row.status == "client_closed"


async def test_closing_the_socket_mid_request_still_leaves_a_ledger_row(
    gateway: Running,
) -> None:
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        await create(ws, "dropped", "never finished", scenario="latency_ms=30000")
        started = await wait_for_type(ws, "dropped", "response.in_progress")
    rid = request_id(started)
    # The server notices the close asynchronously: poll the ledger, bounded.
    with trio.fail_after(20):  # before the Mock would answer (30 s): the close ended it
        while not [r for r in await ledger(gateway) if r.request_id == rid]:
            await trio.sleep(0.01)
    row = await row_for(gateway, rid)
    assert row.status == "client_closed"
    # And the server still serves new connections.
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        await create(ws, "x", "still alive")
        assert_completed_stream((await until_done(ws, "x"))["x"], "still alive")


# -- bad messages --------------------------------------------------------------------------------


async def test_bad_messages_get_error_frames_and_the_connection_stays_usable(
    gateway: Running,
) -> None:
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        with trio.fail_after(10):
            await send(ws, "this is not json")
            not_json = await receive(ws)
            await send(ws, {"type": "response.create", "request": {"model": "gpt-4.1"}})
            no_id = await receive(ws)
            await send(ws, {"type": "response.explode", "id": "t"})
            bad_type = await receive(ws)
            await send(ws, {"type": "response.create", "id": "n", "request": "hi"})
            not_object = await receive(ws)
            await send(ws, {"type": "response.create", "id": "m", "request": {"input": "hi"}})
            no_model = await receive(ws)
            await send(ws, {"type": "response.cancel", "id": "nobody"})
            unknown_cancel = await receive(ws)
            await create(ws, "ok", "still fine after all that")
            good = (await until_done(ws, "ok"))["ok"]
    assert not_json["type"] == "error"
    assert not_json["code"] == "invalid_json"
    assert "id" not in not_json
    assert no_id["type"] == "error" and no_id["param"] == "id" and "id" not in no_id
    assert bad_type["type"] == "error" and bad_type["param"] == "type" and bad_type["id"] == "t"
    assert not_object["type"] == "error" and not_object["param"] == "request"
    assert not_object["id"] == "n"
    assert no_model["type"] == "error" and no_model["param"] == "model" and no_model["id"] == "m"
    assert unknown_cancel["type"] == "error" and unknown_cancel["id"] == "nobody"
    for frame in (not_json, no_id, bad_type, not_object, no_model, unknown_cancel):
        assert isinstance(frame["message"], str) and frame["message"]
    assert_completed_stream(good, "still fine after all that")
    # The two rejected requests of an authenticated caller are recorded; nothing else is.
    rows = [r for r in await ledger(gateway) if r.endpoint == "responses.ws"]
    assert sorted(r.status for r in rows) == ["error", "error", "ok"]


async def test_duplicate_running_id_is_an_error_and_the_first_request_keeps_running(
    gateway: Running,
) -> None:
    async with connect(gateway, headers=bearer(gateway.key)) as ws:
        await create(ws, "dup", "first one", scenario="latency_ms=30000")
        started = await wait_for_type(ws, "dup", "response.in_progress")
        with trio.fail_after(60):  # a hang guard: the Mock alone answers at 30 s
            await create(ws, "dup", "second one")
            duplicate = await receive(ws)
            # The first request is still running: the cancel finds it.
            await send(ws, {"type": "response.cancel", "id": "dup"})
            cancelled = await receive(ws)
    assert duplicate["type"] == "error" and duplicate["param"] == "id" and duplicate["id"] == "dup"
    assert cancelled["type"] == "response.cancelled"
    assert cancelled["response_id"] == started[0]["response"]["id"]
    # Only the first request reached the ledger.
    rows = [r for r in await ledger(gateway) if r.endpoint == "responses.ws"]
    assert [r.request_id for r in rows] == [request_id(started)]


# -- shutdown ------------------------------------------------------------------------------------

DRAIN = 1.0  # tests/server/conftest.py's start_gateway drains for 1 s
GRACEFUL = DRAIN + 10.0  # Hypercorn's graceful timeout (server/serve.py)
CLOSE_GOING_AWAY = 1001
# 100 words 200 ms apart: 20 s on its own, so only the shutdown can end it in time.
ENDLESS = "chunk_delay_ms=200;output_tokens=100"


async def test_shutdown_ends_in_flight_requests_explicitly_then_closes_with_1001(
    tmp_path: Any,
) -> None:
    from trio_websocket import HandshakeError

    from adapters.storage import open_storage
    from tests.server.conftest import start_gateway
    from tests.server.conftest import test_settings as settings_for

    frames: dict[str, list[tuple[float, Frame]]] = {"long1": [], "long2": [], "short": []}
    busy_close: list[tuple[float, int | None]] = []
    idle_close: list[tuple[float, int | None]] = []

    async def read_all(ws: WebSocketConnection) -> None:
        try:
            while True:
                frame = await receive(ws)
                frames[frame["id"]].append((trio.current_time(), frame))
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason else None
            busy_close.append((trio.current_time(), code))

    def deltas(cid: str) -> int:
        return sum(1 for _, f in frames[cid] if f["type"] == "response.output_text.delta")

    async with trio.open_nursery() as server_nursery:
        gateway = await start_gateway(server_nursery, settings_for(tmp_path))
        async with (
            connect(gateway, headers=bearer(gateway.key)) as busy,
            connect(gateway, headers=bearer(gateway.key)) as idle,
            trio.open_nursery() as readers,
        ):
            readers.start_soon(read_all, busy)
            await create(busy, "long1", "drain me", scenario=ENDLESS)
            await create(busy, "long2", "drain me too", scenario=ENDLESS)
            with trio.fail_after(10):
                while deltas("long1") < 2 or deltas("long2") < 2:
                    await trio.sleep(0.01)
            # ~0.3 s: finishes inside the drain window, on its own.
            await create(busy, "short", "quick one", scenario="chunk_delay_ms=50;output_tokens=6")
            with trio.fail_after(10):
                while not frames["short"]:
                    await trio.sleep(0.01)
            gateway.stop.set()
            signalled = trio.current_time()

            # A connection with nothing in flight is closed at once, with 1001 (checked
            # below: before the drain window ended the busy one's requests).
            with trio.fail_after(60), pytest.raises(ConnectionClosed) as caught:  # hang guard
                await idle.get_message()
            assert caught.value.reason is not None
            idle_close.append((trio.current_time(), caught.value.reason.code))
            # New connections are refused while draining (the listener is closed).
            with pytest.raises((OSError, HandshakeError)):
                async with connect(gateway, headers=bearer(gateway.key)):
                    pass
            with trio.fail_after(60):  # a hang guard: ENDLESS alone takes 20 s
                while not busy_close:
                    await trio.sleep(0.01)
    exited = trio.current_time()  # serve() has returned

    # Bounds are orderings between events, or "before what would happen without the
    # behaviour" (ENDLESS's 20 s, Hypercorn's graceful timeout): none is a speed check.
    cut_at = min(frames[cid][-1][0] for cid in ("long1", "long2"))
    assert idle_close[0][1] == CLOSE_GOING_AWAY
    # at once: not when the busy connection's requests were done
    assert idle_close[0][0] < cut_at, (idle_close[0][0] - signalled, cut_at - signalled)
    # The short request finished on its own inside the drain window, before it ended.
    assert frames["short"][-1][1]["type"] == "response.completed"
    assert frames["short"][-1][0] < cut_at
    # The long ones were ended after the drain window with error + response.failed.
    for cid in ("long1", "long2"):
        kinds = [f["type"] for _, f in frames[cid]]
        assert kinds[-2:] == ["error", "response.failed"], kinds
        error = frames[cid][-2][1]
        assert error["code"] == "service_unavailable"
        assert "shutting down" in error["message"]
        assert frames[cid][-1][1]["response"]["status"] == "failed"
        ended = frames[cid][-1][0] - signalled
        assert DRAIN - 0.2 <= ended < 15, ended  # by the shutdown, not after ENDLESS's 20 s
    # ... and only then was the socket closed, with 1001.
    close_at, close_code = busy_close[0]
    assert close_code == CLOSE_GOING_AWAY
    assert close_at >= max(frames[cid][-1][0] for cid in frames)
    # The open sockets did not hold the server for Hypercorn's graceful timeout.
    assert exited - signalled < GRACEFUL, exited - signalled

    storage = open_storage(f"sqlite:///{tmp_path}/gateway.db")
    try:
        now = datetime.now(UTC)
        rows = await storage.usage_rows("t1", now - timedelta(days=1), now + timedelta(days=1))
    finally:
        await storage.close()
    by_id = {r.request_id: r for r in rows}
    assert len(rows) == 3
    short_row = by_id[request_id([f for _, f in frames["short"]])]
    assert short_row.status == "ok" and short_row.output_tokens == 6
    for cid in ("long1", "long2"):
        row = by_id[request_id([f for _, f in frames[cid]])]
        assert row.endpoint == "responses.ws"
        assert row.error_code == "service_unavailable"
        assert row.output_tokens == deltas(cid) and 0 < deltas(cid) < 100
        assert row.cost > 0  # what was sent is billed


async def test_while_draining_handshakes_get_503_and_new_requests_an_error(
    gateway: Running,
) -> None:
    from trio_websocket import ConnectionRejected

    async with connect(gateway, headers=[*bearer(gateway.key), (b"x-request-id", b"ws-drain-1")]) as ws:
        await create(ws, "slow", "still running", scenario="latency_ms=30000")
        started = await wait_for_type(ws, "slow", "response.in_progress")
        # The first step of a shutdown, without closing the listener (as during a pre-stop).
        gateway.services.streams.begin_draining()
        with trio.fail_after(60):  # a hang guard: what came is checked below
            await create(ws, "late", "too late")
            late = await receive(ws)
        assert late["type"] == "error" and late["id"] == "late"
        assert late["code"] == "service_unavailable"
        assert late["request_id"] == "ws-drain-1"  # the handshake's: no request was created
        # A new handshake is refused with a plain HTTP 503 ...
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(gateway, headers=[*bearer(gateway.key), (b"x-request-id", b"ws-drain-2")]):
                pass
        assert rejected.value.status_code == 503
        assert rejected.value.body is not None
        refused = json.loads(rejected.value.body)["error"]
        assert refused["code"] == "service_unavailable" and refused["request_id"] == "ws-drain-2"
        # ... while the request in flight goes on; once it is over, the socket closes (1001).
        with trio.fail_after(60):  # a hang guard: the Mock alone answers at 30 s
            await send(ws, {"type": "response.cancel", "id": "slow"})
            assert (await receive(ws))["type"] == "response.cancelled"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == CLOSE_GOING_AWAY
    row = await row_for(gateway, request_id(started))
    assert row.status == "client_closed"
    assert not [r for r in await ledger(gateway) if r.request_id != request_id(started)]
