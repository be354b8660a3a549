"""End to end: the observer hook (adapters/observe.py) as the driver calls it.

A recording observer is attached to a real gateway; each test makes real requests and
checks the calls it got, in order and field by field, against the answer and the ledger
row: a plain call, a stream, a fallback (with the provider's server address), a client
that goes away, an unauthenticated request, a circuit that opens. It also checks the
`x-gateway-overhead-ms` header and the `gateway` block's `overhead_ms`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from adapters.observe import (
    AttemptEnded,
    AttemptStarted,
    BreakerChanged,
    FirstChunk,
    JobRan,
    Metered,
    Observer,
    Refused,
    RunFinished,
    RunOpened,
    RunWatch,
    WebhookSent,
    fan_out,
)
from adapters.storage import open_storage
from core.model import FailureKind
from server.services import Services
from tests.adapters.test_webhook_delivery import deliverer, drive, finished_job
from tests.fakes import FakeProvider, Fault, running_fake_provider
from tests.server.conftest import Running
from tests.server.test_e2e_failures import ask, ledger, only_row, start_live
from tests.server.test_e2e_jobs import REQUEST, create, until

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Recorder(Observer):
    """Every call, in order: ("opened", RunOpened), ("attempt_started", ...), ..."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def run_opened(self, event: RunOpened) -> RunWatch:
        self.calls.append(("opened", event))
        recorder = self

        class Watch(RunWatch):
            def attempt_started(self, event: AttemptStarted) -> None:
                recorder.calls.append(("attempt_started", event))

            def first_chunk(self, event: FirstChunk) -> None:
                recorder.calls.append(("first_chunk", event))

            def metered(self, event: Metered) -> None:
                recorder.calls.append(("metered", event))

            def attempt_ended(self, event: AttemptEnded) -> None:
                recorder.calls.append(("attempt_ended", event))

            def run_finished(self, event: RunFinished) -> None:
                recorder.calls.append(("finished", event))

        return Watch()

    def refused(self, event: Refused) -> None:
        self.calls.append(("refused", event))

    def breaker_changed(self, event: BreakerChanged) -> None:
        self.calls.append(("breaker", event))

    def job_ran(self, event: JobRan) -> None:
        self.calls.append(("job", event))

    def webhook_sent(self, event: WebhookSent) -> None:
        self.calls.append(("webhook", event))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def of(self, name: str) -> list[Any]:
        return [event for n, event in self.calls if n == name]


def attach(services: Services, observer: Observer) -> None:
    services.gateway.driver.observer = fan_out(services.gateway.driver.observer, observer)
    services.gateway.health.observer = services.gateway.driver.observer
    if services.jobs is not None:
        services.jobs.observer = services.gateway.driver.observer


@pytest.fixture
async def fake() -> Any:
    async with running_fake_provider() as provider:
        yield provider


async def test_a_plain_call_is_told_in_order_with_the_ids_of_the_row_and_the_client(
    gateway: Running,
) -> None:
    recorder = Recorder()
    attach(gateway.services, recorder)
    async with gateway.client() as client:
        r = await client.post(
            "/v1/responses",
            json={"model": "mock-fast", "input": "hello there"},
            headers={"x-request-id": "client-id-1", "traceparent": TRACEPARENT, "tracestate": "a=b"},
        )
    assert r.status_code == 200, r.text
    assert recorder.names() == [
        "opened", "attempt_started", "first_chunk", "metered", "attempt_ended", "finished",
    ]
    row = await only_row(gateway)
    (opened,) = recorder.of("opened")
    assert opened.request_id == row.request_id != "client-id-1"
    assert opened.client_request_id == "client-id-1" == r.headers["x-request-id"]
    assert (opened.endpoint, opened.model, opened.stream, opened.routing) == (
        "responses", "mock-fast", False, "cost",
    )
    assert (opened.tenant, opened.project) == ("t1", "p1")
    assert gateway.key.startswith(f"umg_live_{opened.key_prefix}_")
    assert opened.trace_headers == {"traceparent": TRACEPARENT, "tracestate": "a=b"}

    (started,) = recorder.of("attempt_started")
    assert (started.attempt, started.deployment, started.provider) == (1, row.deployment, "mock")
    assert started.server_address is None  # the Mock is in-process
    (metered,) = recorder.of("metered")
    assert metered.usage.output_tokens == row.output_tokens > 0
    assert metered.cost == row.cost
    (ended,) = recorder.of("attempt_ended")
    assert (ended.ok, ended.failure, ended.next, ended.fell_back) == (True, None, "answered", False)
    (finished,) = recorder.of("finished")
    assert finished.row == row
    assert (finished.error, finished.finish_reason, finished.routing) == (None, "stop", "cost")

    gateway_block = r.json()["gateway"]
    assert gateway_block["overhead_ms"] == round(finished.overhead_ms, 2)
    header = float(r.headers["x-gateway-overhead-ms"])
    assert header == pytest.approx(finished.overhead_ms, abs=0.01)
    assert header > 0


async def test_a_stream_tells_its_first_chunk_and_carries_the_overhead_at_both_ends(
    gateway: Running,
) -> None:
    recorder = Recorder()
    attach(gateway.services, recorder)
    sent = trio.current_time()  # the gateway's clock too: it runs in this process
    async with gateway.client() as client:
        r = await client.post(
            "/v1/responses",
            json={"model": "mock-fast", "input": "hello there", "stream": True,
                  "metadata": {"mock_scenario": "latency_ms=50"}},
        )
    assert r.status_code == 200, r.text
    assert recorder.names() == [
        "opened", "attempt_started", "first_chunk", "metered", "attempt_ended", "finished",
    ]
    row = await only_row(gateway)
    (first,) = recorder.of("first_chunk")
    assert first.ttft == pytest.approx(row.ttft_ms / 1000, abs=0.002)
    assert first.ttft >= 0.05
    (finished,) = recorder.of("finished")
    assert finished.ttft == first.ttft  # told again at the end
    assert finished.attempts == tuple(recorder.of("attempt_ended"))
    # the head is sent before the provider is called: only the admission's overhead
    assert float(r.headers["x-gateway-overhead-ms"]) <= finished.overhead_ms + 0.01
    # the provider's 50 ms are not the gateway's: arrival >= sent, the end <= finished.at
    assert finished.overhead_ms <= (finished.at - sent) * 1000 - 50
    assert f'"overhead_ms":{round(finished.overhead_ms, 2)}' in r.text


async def test_a_fallback_is_told_with_its_failure_kind_and_the_server_address(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    recorder = Recorder()
    gw = await start_live(nursery, tmp_path, fake, tweak=lambda s: attach(s, recorder))
    fake.script(Fault(status=500))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(text="hello there"))
    assert r.status_code == 200, r.text
    assert recorder.names() == [
        "opened",
        "attempt_started", "attempt_ended",
        "attempt_started", "first_chunk", "metered", "attempt_ended",
        "finished",
    ]
    first, second = recorder.of("attempt_started")
    assert (first.provider, second.provider) == ("openai", "anthropic")
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.server_address == "127.0.0.1" and first.server_port == int(
        fake.openai_base_url.rsplit(":", 1)[1].split("/")[0]
    )
    failed, answered = recorder.of("attempt_ended")
    assert (failed.ok, failed.failure, failed.next, failed.fell_back) == (
        False, FailureKind.SERVER_ERROR, "fallback", True,
    )
    assert (answered.ok, answered.next) == (True, "answered")
    (finished,) = recorder.of("finished")
    assert finished.attempts == (failed, answered)  # every attempt's end, again, in order
    (first_chunk,) = recorder.of("first_chunk")
    assert finished.ttft == first_chunk.ttft  # a whole answer's: when it arrived
    assert finished.row == await only_row(gw)
    assert finished.row.attempts == 2
    gw.stop.set()


async def test_a_failed_run_is_told_with_its_error_and_a_circuit_that_opens(
    nursery: trio.Nursery, tmp_path: Path, fake: FakeProvider
) -> None:
    recorder = Recorder()
    gw = await start_live(
        nursery, tmp_path, fake, failure_threshold=1, tweak=lambda s: attach(s, recorder)
    )
    fake.script(Fault(status=400, message="no such parameter"))
    async with gw.client() as client:
        r = await client.post("/v1/responses", json=ask(text="hello there"))
    assert r.status_code == 400, r.text
    (ended,) = recorder.of("attempt_ended")
    assert (ended.failure, ended.next) == (FailureKind.BAD_REQUEST, "gave_up")
    assert ended.message is not None and "no such parameter" in ended.message
    (finished,) = recorder.of("finished")
    assert (finished.attempts, finished.ttft) == ((ended,), None)  # no content came
    assert finished.error is not None and finished.error.code == "upstream_rejected"
    assert (finished.row.status, finished.row.error_code) == ("error", "upstream_rejected")
    assert finished.finish_reason is None

    fake.script(Fault(status=500), Fault(status=500), Fault(status=500))
    async with gw.client() as client:
        await client.post("/v1/responses", json=ask(text="hello there"))
    changes = [(b.deployment, b.before, b.after) for b in recorder.of("breaker")]
    assert ("openai/gpt-4.1", "closed", "open") in changes
    gw.stop.set()


async def test_a_client_that_leaves_mid_stream_ends_the_attempt_as_cut(gateway: Running) -> None:
    recorder = Recorder()
    attach(gateway.services, recorder)
    # store: false, or the stored stream would go on detached to its end (stored streams)
    body = {"model": "mock-fast", "input": "hello there", "stream": True, "store": False,
            "metadata": {"mock_scenario": "output_tokens=50;chunk_delay_ms=20"}}
    async with gateway.client() as client, client.stream("POST", "/v1/responses", json=body) as r:
        async for _ in r.aiter_bytes():
            break
    with trio.fail_after(5):
        while "finished" not in recorder.names():
            await trio.sleep(0.01)
    assert recorder.names()[-2:] == ["attempt_ended", "finished"]
    (ended,) = recorder.of("attempt_ended")
    assert (ended.ok, ended.next) == (False, "cut")
    (finished,) = recorder.of("finished")
    assert finished.attempts == (ended,)
    assert finished.row.status == "client_closed"
    assert [r.request_id for r in await ledger(gateway)] == [finished.row.request_id]


async def test_an_unauthenticated_request_is_refused_without_a_run(gateway: Running) -> None:
    recorder = Recorder()
    attach(gateway.services, recorder)
    async with gateway.client(key="umg_live_nope") as client:
        r = await client.post("/v1/chat/completions", json={"model": "mock-fast", "messages": []})
    assert r.status_code == 401
    assert "x-gateway-overhead-ms" in r.headers
    (refused,) = recorder.of("refused")
    assert recorder.names() == ["refused"]
    assert (refused.endpoint, refused.error.status) == ("chat.completions", 401)
    assert refused.client_request_id == r.headers["x-request-id"]


def test_fan_out_skips_none_and_tells_each_observer() -> None:
    assert fan_out() is None and fan_out(None, None) is None
    one = Recorder()
    assert fan_out(None, one) is one
    a, b = Recorder(), Recorder()
    both = fan_out(a, b)
    assert both is not None
    change = BreakerChanged("d", "closed", "open", 1.0)
    both.breaker_changed(change)
    assert a.calls == b.calls == [("breaker", change)]


def test_fan_out_calls_each_hook_only_on_the_watches_that_override_it_in_order() -> None:
    calls: list[tuple[str, str]] = []

    class Ends(RunWatch):
        def attempt_ended(self, event: AttemptEnded) -> None:
            calls.append(("ends", "attempt_ended"))

        def run_finished(self, event: RunFinished) -> None:
            calls.append(("ends", "run_finished"))

    class Starts(RunWatch):
        def attempt_started(self, event: AttemptStarted) -> None:
            calls.append(("starts", "attempt_started"))

        def run_finished(self, event: RunFinished) -> None:
            calls.append(("starts", "run_finished"))

    class Nothing(RunWatch):
        pass

    class Giving(Observer):
        def __init__(self, watch: type[RunWatch] | None) -> None:
            self.watch = watch

        def run_opened(self, event: RunOpened) -> RunWatch | None:
            return self.watch() if self.watch is not None else None

    recorder = Recorder()
    observer = fan_out(Giving(Ends), Giving(None), Giving(Nothing), Giving(Starts), recorder)
    assert observer is not None
    opened = RunOpened("r", "r", "responses", "p", "k", "t", "p", "m", False, "cost", {}, 0.0)
    hooks = ("attempt_started", "first_chunk", "metered", "attempt_ended", "run_finished")
    for _ in range(2):  # the second run's watches come in the same (cached) combination
        calls.clear()
        recorder.calls.clear()
        watch = observer.run_opened(opened)
        assert watch is not None
        for hook in hooks:
            getattr(watch, hook)(hook)
        assert calls == [
            ("starts", "attempt_started"), ("ends", "attempt_ended"),
            ("ends", "run_finished"), ("starts", "run_finished"),
        ]
        assert recorder.calls == [("opened", opened), *[(h.replace("run_", ""), h) for h in hooks]]
    nested = fan_out(fan_out(Giving(Ends), Giving(Starts)), Giving(Nothing))
    assert nested is not None
    watch = nested.run_opened(opened)
    assert [type(w) for w in watch.watches] == [Ends, Starts, Nothing]  # type: ignore[union-attr]
    alone = fan_out(Giving(None), Giving(Starts))
    assert alone is not None and type(alone.run_opened(opened)) is Starts  # one watch: itself


async def test_a_bad_body_is_told_as_opened_and_finished(gateway: Running) -> None:
    recorder = Recorder()
    attach(gateway.services, recorder)
    async with gateway.client() as client:
        r = await client.post("/v1/responses", json={"model": 3, "input": "x"})
    assert r.status_code == 400
    assert recorder.names() == ["opened", "finished"]
    opened, finished = recorder.of("opened")[0], recorder.of("finished")[0]
    assert opened.model == "" and finished.row.status == "error"
    assert finished.error is not None and finished.error.param == "model"


async def test_a_job_run_is_told_with_its_request_and_outcome(gateway: Running) -> None:
    recorder = Recorder()
    attach(gateway.services, recorder)
    async with gateway.client() as client:
        r = await create(client, {"request": REQUEST})
        assert r.status_code == 202, r.text
        job = await until(client, r.json()["id"], {"succeeded"})
    with trio.fail_after(5):
        while not recorder.of("job"):
            await trio.sleep(0.01)
    (ran,) = recorder.of("job")
    (opened,) = recorder.of("opened")
    assert opened.endpoint == "jobs"
    assert (ran.job_id, ran.tenant, ran.status, ran.attempt) == (job["id"], "t1", "succeeded", 1)
    assert ran.request_id == opened.request_id and ran.error_code is None
    assert ran.seconds > 0


async def test_webhook_deliveries_are_told_each_attempt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    del autojump_clock
    answers = [500, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0))

    recorder = Recorder()
    storage = open_storage(f"sqlite:///{tmp_path}/outbox.db")
    await storage.migrate()
    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            sender = deliverer(storage, http)
            sender.observer = recorder
            await finished_job(storage, "job_1", "http://receiver.test/hook")
            rec = await drive(sender, storage, "job_1")
    finally:
        await storage.close()
    first, second = recorder.of("webhook")
    assert (first.message_id, first.job_id, first.attempt, first.status_code, first.ok) == (
        rec.id, "job_1", 1, 500, False,
    )
    assert (first.error, first.gave_up) == ("HTTP 500", False)
    assert (second.attempt, second.status_code, second.ok, second.error, second.gave_up) == (
        2, 200, True, None, False,
    )
