"""`idempotency_key` on WebSocket `response.create` (server/ws_idempotency.py), on the real
gateway (mock mode, SQLite) with trio_websocket: a repeat replays the frames first sent
(marked `idempotent_replayed`) without a second provider call, ledger row or bill, on the
same connection or another; another request under the key is a 422 error frame, a
repeat while the first runs a 409; a cancelled request releases its key."""

from __future__ import annotations

from typing import Any

import trio

from tests.server.conftest import Running
from tests.server.test_e2e_websocket import (
    Frame,
    bearer,
    connect,
    ledger,
    receive,
    send,
    until_done,
    wait_for_type,
)


def keyed(client_id: str, key: Any, prompt: str = "replay me", scenario: str | None = None) -> Frame:
    request: Frame = {"model": "gpt-4.1", "input": prompt}
    if scenario is not None:
        request["metadata"] = {"mock_scenario": scenario}
    return {"type": "response.create", "id": client_id, "request": request, "idempotency_key": key}


def without_marks(frames: list[Frame]) -> list[Frame]:
    return [{k: v for k, v in f.items() if k not in ("id", "idempotent_replayed")} for f in frames]


async def test_a_repeat_replays_the_same_frames_without_a_second_bill(gateway: Running) -> None:
    key = await gateway.new_key()
    async with connect(gateway, headers=bearer(key)) as ws:
        await send(ws, keyed("a", "k-1"))
        first = (await until_done(ws, "a"))["a"]
        await send(ws, keyed("b", "k-1"))  # same key and request, another client id
        again = (await until_done(ws, "b"))["b"]
    async with connect(gateway, headers=bearer(key)) as other:  # another connection
        await send(other, keyed("c", "k-1"))
        third = (await until_done(other, "c"))["c"]
    assert first[-1]["type"] == "response.completed"
    assert not any("idempotent_replayed" in f for f in first)
    assert all(f["idempotent_replayed"] is True and f["id"] == "b" for f in again)
    assert all(f["id"] == "c" for f in third)
    assert without_marks(again) == without_marks(first) == without_marks(third)
    rows = [r for r in await ledger(gateway) if r.endpoint == "responses.ws"]
    assert len(rows) == 1 and rows[0].cost > 0  # one call, one row, one bill


async def test_another_request_under_the_key_is_a_422_and_a_bad_key_a_400(gateway: Running) -> None:
    key = await gateway.new_key()
    async with connect(gateway, headers=bearer(key)) as ws:
        await send(ws, keyed("a", "k-2"))
        await until_done(ws, "a")
        await send(ws, keyed("b", "k-2", prompt="something else"))
        err = await receive(ws)
        assert (err["type"], err["id"], err["code"]) == ("error", "b", "idempotency_key_reused")
        for bad in (42, "", " padded"):
            await send(ws, keyed("c", bad))
            err = await receive(ws)
            assert (err["type"], err["id"], err["param"]) == ("error", "c", "idempotency_key")
    assert len([r for r in await ledger(gateway) if r.endpoint == "responses.ws"]) == 1


async def test_a_repeat_while_the_first_runs_is_a_409_and_a_cancelled_one_frees_its_key(
    gateway: Running,
) -> None:
    key = await gateway.new_key()
    slow = "output_tokens=30;chunk_delay_ms=50"
    async with connect(gateway, headers=bearer(key)) as ws:
        await send(ws, keyed("a", "k-3", scenario=slow))
        await wait_for_type(ws, "a", "response.output_text.delta")
        await send(ws, keyed("b", "k-3", scenario=slow))
        with trio.fail_after(10):
            while (frame := await receive(ws))["id"] != "b":
                pass
        assert (frame["type"], frame["code"]) == ("error", "idempotency_key_in_use")
        await send(ws, {"type": "response.cancel", "id": "a"})
        assert (await until_done(ws, "a"))["a"][-1]["type"] == "response.cancelled"
        await send(ws, keyed("c", "k-3"))  # released: runs anew (another request is fine)
        frames = (await until_done(ws, "c"))["c"]
    assert frames[-1]["type"] == "response.completed"
    assert not any("idempotent_replayed" in f for f in frames)
