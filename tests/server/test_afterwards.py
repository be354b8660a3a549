"""A hot-route run's work after its ledger row is done after the answer's last byte
(adapters/afterwards.py): the observers told it finished and the tokens-per-minute
correction come after the answer's last send, for a JSON answer, a stream and an error
one; the row itself still comes before the last byte. A keyed request (the layered way
in) does that work before its answer, as before."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio

from adapters.afterwards import Afterwards
from adapters.observe import Observer, RunFinished, RunOpened, RunWatch
from server import hot, streaming
from tests.server.conftest import Running

BODY = {"model": "mock-fast", "messages": [{"role": "user", "content": "hello"}]}


class _Recorded:
    """The order of the answer's last send, the run's end and the tokens correction."""

    def __init__(self, gateway: Running, monkeypatch: pytest.MonkeyPatch) -> None:
        self.order: list[str] = []
        self.rows_at_last_byte: list[int] = []
        storage = gateway.services.storage
        recorded = self
        whole, stream = hot.send_whole, streaming.send_stream

        async def send_whole(send: Any, status: int, body: bytes, headers: Mapping[str, object],
                             tail: tuple[tuple[bytes, bytes], ...] = ()) -> None:
            await whole(send, status, body, headers, tail)
            await recorded.last_byte(storage)

        async def send_stream(*args: Any, **named: Any) -> None:
            await stream(*args, **named)
            await recorded.last_byte(storage)

        monkeypatch.setattr(hot, "send_whole", send_whole)
        monkeypatch.setattr(hot, "send_stream", send_stream)

        class Watch(RunWatch):
            def run_finished(self, event: RunFinished) -> None:
                recorded.order.append("finished")

        class Seen(Observer):
            def run_opened(self, event: RunOpened) -> RunWatch:
                return Watch()

        driver = gateway.services.gateway.driver
        monkeypatch.setattr(driver, "observer", Seen())
        limits = driver.limits
        adjust = limits.adjust_tokens

        async def adjust_tokens(*args: Any) -> None:
            recorded.order.append("tokens corrected")
            await adjust(*args)

        monkeypatch.setattr(limits, "adjust_tokens", adjust_tokens)

    async def last_byte(self, storage: Any) -> None:
        self.order.append("last byte")
        self.rows_at_last_byte.append(await storage.usage_count())  # may let the client on

    async def settled(self, expected: int) -> list[str]:
        """The order, once `expected` steps were recorded (the work after an answer may
        still be running when its client has read it)."""
        with trio.fail_after(10):
            while len(self.order) < expected:
                await trio.sleep(0.01)
        return self.order


async def test_a_json_answer_is_sent_before_its_observers_and_token_correction(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _Recorded(gateway, monkeypatch)
    async with gateway.client() as client:
        got = await client.post("/v1/chat/completions", json=BODY)
    assert got.status_code == 200
    assert await recorded.settled(3) == ["last byte", "finished", "tokens corrected"]
    assert recorded.rows_at_last_byte == [1]  # the row before the last byte, as always


async def test_a_stream_and_an_error_answer_too(gateway: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _Recorded(gateway, monkeypatch)
    async with gateway.client() as client:
        async with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as s:
            streamed = b"".join([part async for part in s.aiter_bytes()])
        failed = await client.post("/v1/chat/completions", json=BODY,
                                   headers={"x-umg-mock-scenario": "fail=400"})
    assert streamed.rstrip().endswith(b"data: [DONE]")
    assert failed.status_code == 400
    # the failed attempt's run has a plan, so its tokens are corrected too
    assert await recorded.settled(6) == ["last byte", "finished", "tokens corrected"] * 2
    assert recorded.rows_at_last_byte == [1, 2]


async def test_a_keyed_request_does_that_work_before_its_answer(
    gateway: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _Recorded(gateway, monkeypatch)
    async with gateway.client() as client:
        got = await client.post("/v1/chat/completions", json=BODY, headers={"idempotency-key": "k-1"})
    assert got.status_code == 200
    assert await recorded.settled(3) == ["finished", "tokens corrected", "last byte"]


async def test_work_deferred_once_run_has_begun_is_refused_and_an_error_leaves_the_rest_done() -> None:
    afterwards = Afterwards()
    done: list[str] = []

    async def work(name: str) -> None:
        done.append(name)
        if name == "second":
            raise RuntimeError("boom")

    for name in ("first", "second", "third"):
        assert afterwards.defer(lambda name=name: work(name))  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="boom"):
        await afterwards.run()
    assert done == ["first", "second", "third"]
    assert not afterwards.defer(lambda: work("late"))
    await trio.lowlevel.checkpoint()
    assert done == ["first", "second", "third"]
