"""Async jobs end to end: the real gateway (Hypercorn on port 0, SQLite, Mock provider)
called over HTTP with httpx; webhooks land on a real local HTTP receiver (trio + h11).

What the routes do (documented here because the tests pin it):
- `POST /v1/jobs` answers 202 while the job is not terminal and 200 once it is (which
  only happens with `Prefer: wait=N`); `GET /v1/jobs/{id}` is a plain read and answers 200
  whatever the status (with `Prefer: wait=N` too: the body's `status` says if it is done).
- `GET /v1/jobs?status=&limit=&after=`: newest first, `limit` 1..100 (default 20),
  `after` = the previous page's `last_id`, `has_more` says whether another page exists.
- Cancel is idempotent on a canceled job; on a succeeded or failed job it is 409.
- The webhook signing secret comes from `GET /v1/webhooks/secret` (`{"key": "whsec_..."}`),
  one per tenant, created on first use.
- The local receiver is `http://127.0.0.1:<port>`, which the gateway refuses by default
  (SSRF rules, `core.webhook_targets`): these tests' gateways allow it explicitly
  (`[webhooks] allow_hosts = ["127.0.0.1"]`, `allow_http = true`); the refusal tests
  at the end use a gateway without that.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import h11
import httpx
import pytest
import trio
from attrs import define, evolve, field
from openai.types.responses import Response as OpenAIResponse

from adapters.job_worker import JobWorker
from adapters.jobs import JobService
from adapters.storage.base import Storage
from adapters.storage.outbox_sql import attempt_request_id
from adapters.storage.records import DeliveryRecord, JobRecord, UsageRecord
from core import jobs as lifecycle
from core import webhook_targets, webhooks
from core.errors import InvalidRequest
from server.services import Services
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

REQUEST: dict[str, Any] = {"model": "gpt-4.1", "input": "Hello async jobs"}
DEADLINE = 15.0


def scenario(text: str, **extra: Any) -> dict[str, Any]:
    return {**REQUEST, "metadata": {"mock_scenario": text}, **extra}


async def create(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/v1/jobs", json=body, headers=headers)


async def until(
    client: httpx.AsyncClient, job_id: str, statuses: set[str], timeout: float = DEADLINE
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job's status is one of `statuses` (or fail)."""
    with trio.fail_after(timeout):
        while True:
            r = await client.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200, r.text
            job: dict[str, Any] = r.json()
            if job["status"] in statuses:
                return job
            await trio.sleep(0.05)


async def job_rows(services: Services, tenant: str = "t1") -> list[UsageRecord]:
    rows = await services.storage.usage_rows(
        tenant, datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    )
    return [r for r in rows if r.endpoint == "jobs"]


async def rows_when(services: Services, count: int, timeout: float = DEADLINE) -> list[UsageRecord]:
    """Poll the ledger until it holds `count` job rows."""
    with trio.fail_after(timeout):
        while len(rows := await job_rows(services)) < count:
            await trio.sleep(0.05)
    return rows


def fast_settings(tmp_path: Path, *, workers: int = 2, lease: float = 1.5) -> Any:
    """Short leases (heartbeat every lease/3) and polls, so cancel and restart are quick."""
    config = tmp_path / f"jobs-{workers}.toml"
    config.write_text(
        f"[jobs]\nworkers = {workers}\nlease_seconds = {lease}\npoll_seconds = 0.1\n"
        + WEBHOOKS_TO_THE_RECEIVER
    )
    return settings_for(tmp_path, UMG_CONFIG=str(config))


# the local receiver listens on 127.0.0.1 over http: refused unless the operator allows it
WEBHOOKS_TO_THE_RECEIVER = '[webhooks]\nallow_hosts = ["127.0.0.1"]\nallow_http = true\n'
TO_THE_FAKE_RECEIVER = webhook_targets.TargetPolicy(
    allow_hosts=frozenset({"receiver.test"}), allow_http=True
)


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    """The shared test gateway, with webhooks to the local receiver allowed."""
    settings = settings_for(
        tmp_path, UMG_WEBHOOK_ALLOW_HOSTS="127.0.0.1", UMG_WEBHOOK_ALLOW_HTTP="true"
    )
    running = await start_gateway(nursery, settings)
    yield running
    running.stop.set()


def assert_error(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["param"] == param
    assert error["message"] and error["type"] and error["code"]
    return error


# -- a tiny webhook receiver -----------------------------------------------------------


@define
class Delivery:
    headers: dict[str, str]
    body: bytes
    received: float  # unix seconds


@define
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 port 0 that answers each POST with the next of
    `statuses` (then 204) and reports every delivery on a channel."""

    statuses: list[int]
    send: trio.MemorySendChannel[Delivery]
    receive: trio.MemoryReceiveChannel[Delivery]
    url: str = ""
    fail_first: bool = False  # answer 503 to the first delivery of each webhook-id
    seen: set[str] = field(factory=set)
    _listeners: list[trio.SocketListener] = field(factory=list)

    @classmethod
    def new(cls, statuses: list[int]) -> Receiver:
        send, receive = trio.open_memory_channel[Delivery](100)
        return cls(statuses, send, receive)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        head: h11.Request | None = None
        body = b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    head, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert head is not None and head.method == b"POST"
                    hdrs = {k.decode().lower(): v.decode() for k, v in head.headers}
                    await self.send.send(Delivery(hdrs, body, time.time()))
                    status = self.statuses.pop(0) if self.statuses else 204
                    if self.fail_first and hdrs.get("webhook-id") not in self.seen:
                        status = 503
                    self.seen.add(hdrs.get("webhook-id", ""))
                    reply = h11.Response(status_code=status, headers=[("content-length", "0")])
                    await stream.send_all(conn.send(reply) + conn.send(h11.EndOfMessage()))
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
                else:  # ConnectionClosed
                    return


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> AsyncIterator[Receiver]:
    rec = Receiver.new([])
    await nursery.start(rec.run)
    yield rec


# -- the happy path ---------------------------------------------------------------------


async def test_created_job_runs_to_a_responses_shaped_result_with_cost(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await create(client, {"request": REQUEST})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["id"].startswith("job_") and job["object"] == "job"
        assert job["status"] in ("queued", "running")
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        created = datetime.fromisoformat(job["created_at"])
        assert abs(created.timestamp() - time.time()) < 60
        assert job["result"] is None and job["error"] is None and job["cost_usd"] is None
        assert job["request"] == REQUEST

        done = await until(client, job["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1 and done["error"] is None
    assert done["completed_at"] is not None and done["started_at"] is not None
    result = OpenAIResponse.model_validate(done["result"])  # the openai SDK's own model
    assert result.status == "completed" and result.model == "gpt-4.1"
    assert result.output_text.startswith("Mock answer from gpt-4.1: Hello async jobs")
    usage = done["usage"]
    assert usage["input_tokens"] == 3 + 4  # the Mock's documented count: words + 4
    assert usage["output_tokens"] == len(result.output_text.split())
    cost = Decimal(done["cost_usd"])
    assert cost > 0 and isinstance(done["cost_usd"], str)

    rows = await job_rows(gateway.services)
    assert len(rows) == 1  # one run, one ledger row
    (row,) = rows
    assert (row.status, row.model, row.input_tokens) == ("ok", "gpt-4.1", usage["input_tokens"])
    assert row.cost == cost


async def test_a_job_with_fractional_numbers_runs_what_was_admitted(gateway: Running) -> None:
    """Sampling parameters and tool schemas with fractions are ordinary: the job keeps
    the client's body for display and runs the admitted request (core encoding)."""
    tool = {"type": "function", "name": "t", "description": "d",
            "parameters": {"type": "object", "properties": {"x": {"type": "number", "maximum": 0.5}}}}
    request = {**REQUEST, "temperature": 0.7, "top_p": 0.25, "tools": [tool]}
    async with gateway.client() as client:
        r = await create(client, {"request": request})
        assert r.status_code == 202, r.text
        assert r.json()["request"] == request
        done = await until(client, r.json()["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done
    assert done["result"]["temperature"] == 0.7 and done["result"]["top_p"] == 0.25
    (row,) = await job_rows(gateway.services)
    assert row.status == "ok"


async def test_prefer_wait_returns_the_finished_job_or_the_unfinished_one_in_time(
    gateway: Running,
) -> None:
    """No timed bound on how soon an answer comes (CI runs loaded): a wait that ends
    early is seen in what is answered, the finished job before its window is over (the
    window is far longer than any run of the mock takes), the unfinished one as it is;
    the wait that runs out is bounded below only, which load cannot break."""
    async with gateway.client(timeout=90) as client:
        started = trio.current_time()
        r = await create(client, {"request": REQUEST}, prefer="wait=60")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded" and r.json()["result"] is not None
        assert trio.current_time() - started < 60  # answered at the end of the job, not of the window

        started = trio.current_time()
        r = await create(client, {"request": scenario("latency_ms=4000")}, prefer="wait=1")
        waited = trio.current_time() - started
        assert r.status_code == 202, r.text  # not done: still Accepted, before the job ended
        assert r.json()["status"] in ("queued", "running")
        assert waited >= 0.9  # it did wait
        slow = r.json()["id"]

        r = await client.get(f"/v1/jobs/{slow}", headers={"prefer": "wait=1"})
        assert r.status_code == 200 and r.json()["status"] in ("queued", "running")  # a read is 200
        r = await client.get(f"/v1/jobs/{slow}", headers={"prefer": "wait=60"})
        assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert len(await job_rows(gateway.services)) == 2


# -- listing ----------------------------------------------------------------------------


async def test_list_pages_newest_first_and_filters_by_status(gateway: Running) -> None:
    async with gateway.client() as client:
        ids = []
        for n in range(5):
            body = {"request": {**REQUEST, "input": f"job number {n}"}}
            r = await create(client, body, prefer="wait=10")
            assert r.status_code == 200 and r.json()["status"] == "succeeded"
            ids.append(r.json()["id"])
        r = await create(client, {"request": scenario("latency_ms=20000")})
        slow = r.json()["id"]
        r = await client.post(f"/v1/jobs/{slow}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        ids.append(slow)

        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            params = {"limit": "4"} | ({"after": after} if after else {})
            page = (await client.get("/v1/jobs", params=params)).json()
            assert page["object"] == "list" and 1 <= len(page["data"]) <= 4
            seen += [j["id"] for j in page["data"]]
            assert page["last_id"] == page["data"][-1]["id"]
            pages += 1
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert pages == 2 and seen == ids[::-1]

        r = await client.get("/v1/jobs", params={"status": "canceled"})
        assert [j["id"] for j in r.json()["data"]] == [slow]
        r = await client.get("/v1/jobs", params={"status": "succeeded", "limit": "100"})
        assert [j["id"] for j in r.json()["data"]] == ids[4::-1]
        assert r.json()["has_more"] is False
        assert (await client.get("/v1/jobs", params={"status": "failed"})).json()["data"] == []
        r = await client.get("/v1/jobs", params={"after": "job_nope"})
        assert r.status_code == 200 and r.json()["data"] == []

        assert_error(await client.get("/v1/jobs", params={"status": "done"}), 400, "status")
        for bad in ("0", "101", "x", "-1"):
            assert_error(await client.get("/v1/jobs", params={"limit": bad}), 400, "limit")


# -- cancel -----------------------------------------------------------------------------


async def test_cancel_stops_a_running_job_and_it_stays_canceled(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    gw = await start_gateway(nursery, fast_settings(tmp_path))
    try:
        async with gw.client() as client:
            # the upstream call would take a minute: only a stopped call ends sooner
            r = await create(client, {"request": scenario("latency_ms=60000")})
            job_id = r.json()["id"]
            await until(client, job_id, {"running"})
            r = await client.post(f"/v1/jobs/{job_id}/cancel")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "canceled" and r.json()["completed_at"] is not None

            # the worker notices at its next heartbeat (every 0.5 s) and stops the call:
            # the row comes (the deadline only guards a hang) and is the canceled call's
            (row,) = await rows_when(gw.services, 1, timeout=120)
            assert row.status == "canceled" and row.output_tokens == 0
            assert row.latency_ms is not None and row.latency_ms < 60_000

            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            assert job["status"] == "canceled" and job["result"] is None
            again = await client.post(f"/v1/jobs/{job_id}/cancel")
            assert again.status_code == 200 and again.json()["status"] == "canceled"
            assert again.json()["completed_at"] == r.json()["completed_at"]
        assert len(await job_rows(gw.services)) == 1
    finally:
        gw.stop.set()


async def test_cancel_of_a_finished_job_is_a_conflict(gateway: Running) -> None:
    async with gateway.client() as client:
        ok = (await create(client, {"request": REQUEST}, prefer="wait=10")).json()
        bad = (await create(client, {"request": scenario("fail=400")}, prefer="wait=10")).json()
        assert (ok["status"], bad["status"]) == ("succeeded", "failed")
        for job in (ok, bad):
            r = await client.post(f"/v1/jobs/{job['id']}/cancel")
            error = assert_error(r, 409, "id")
            assert error["code"] == "conflict" and job["status"] in error["message"]
            assert (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == job["status"]


async def test_a_canceled_queued_job_is_never_run(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with trio.open_nursery() as first:
        idle = await start_gateway(first, fast_settings(tmp_path, workers=0))
        async with idle.client() as client:
            r = await create(client, {"request": REQUEST})
            assert r.status_code == 202 and r.json()["status"] == "queued"
            canceled = r.json()["id"]
            other = (await create(client, {"request": REQUEST})).json()["id"]
            r = await client.post(f"/v1/jobs/{canceled}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "canceled"
        idle.stop.set()

    gw = await start_gateway(nursery, fast_settings(tmp_path, workers=2))
    try:
        async with gw.client() as client:
            assert (await until(client, other, {"succeeded"}))["attempts"] == 1
            job = (await client.get(f"/v1/jobs/{canceled}")).json()
            assert job["status"] == "canceled" and job["attempts"] == 0
        assert len(await job_rows(gw.services)) == 1  # only `other` ran
    finally:
        gw.stop.set()


# -- tenants, failures, bad input ------------------------------------------------------


async def test_another_tenants_job_is_not_found(gateway: Running) -> None:
    other_key = await gateway.new_key(tenant="t2", project="p9")
    async with gateway.client() as mine, gateway.client(other_key) as theirs:
        job = (await create(mine, {"request": REQUEST}, prefer="wait=10")).json()
        queued = (await create(mine, {"request": scenario("latency_ms=20000")})).json()
        for job_id in (job["id"], queued["id"]):
            assert_error(await theirs.get(f"/v1/jobs/{job_id}"), 404, "id")
            r = await theirs.get(f"/v1/jobs/{job_id}", headers={"prefer": "wait=1"})
            assert_error(r, 404, "id")
            assert_error(await theirs.post(f"/v1/jobs/{job_id}/cancel"), 404, "id")
        assert (await theirs.get("/v1/jobs")).json()["data"] == []
        assert (await theirs.get("/v1/jobs", params={"after": job["id"]})).json()["data"] == []
        # their cancel changed nothing
        assert (await mine.get(f"/v1/jobs/{queued['id']}")).json()["status"] in (
            "queued",
            "running",
        )
        assert len((await mine.get("/v1/jobs")).json()["data"]) == 2


async def test_non_retryable_upstream_failure_ends_failed_with_an_openai_error(
    gateway: Running,
) -> None:
    async with gateway.client() as client:
        r = await create(client, {"request": scenario("fail=400")})
        assert r.status_code == 202
        job = await until(client, r.json()["id"], {"succeeded", "failed", "canceled"})
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["result"] is None and job["usage"] is None
    error = job["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["type"] == "invalid_request_error" and isinstance(error["code"], str)
    assert "mock rejected the request" in error["message"]
    (row,) = await job_rows(gateway.services)
    assert row.status == "error" and row.error_code == error["code"]
    assert error["request_id"] == row.request_id


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "request"),
        ({"request": "Hello"}, "request"),
        ({"request": [REQUEST]}, "request"),
        ({"request": {"model": "gpt-4.1"}}, "request.input"),
        ({"request": {"input": "Hello"}}, "request.model"),
        ({"request": {**REQUEST, "temperature": "hot"}}, "request.temperature"),
        ({"request": REQUEST, "webhook_url": "ftp://example.com/hook"}, "webhook_url"),
        ({"request": REQUEST, "webhook_url": 42}, "webhook_url"),
        ({"request": REQUEST, "webhook": "https://example.com"}, "webhook"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    gateway: Running, body: dict[str, Any], param: str
) -> None:
    async with gateway.client() as client:
        error = assert_error(await create(client, body), 400, param)
        assert error["type"] == "invalid_request_error"
        assert (await client.get("/v1/jobs")).json()["data"] == []  # nothing was stored


async def test_a_body_that_is_not_json_is_a_400(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post(
            "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# -- restart ----------------------------------------------------------------------------


async def test_a_job_left_running_by_a_stopped_server_finishes_on_the_next(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = fast_settings(tmp_path)
    async with trio.open_nursery() as first:
        old = await start_gateway(first, settings)
        async with old.client() as client:
            job_id = (await create(client, {"request": scenario("latency_ms=2500")})).json()["id"]
            await until(client, job_id, {"running"})
        old.stop.set()  # the server stops while the worker is inside the model call
    stopped = trio.current_time()

    new = await start_gateway(nursery, settings)
    try:
        left = await new.services.storage.get_job("t1", job_id)
        assert left is not None and left.status == "running" and left.lease_owner is not None
        async with new.client() as client:
            job = await until(client, job_id, {"succeeded", "failed", "canceled"})
        assert job["status"] == "succeeded" and job["attempts"] == 2
        assert trio.current_time() - stopped >= 2.5  # it really ran again
        rows = await job_rows(new.services)
        # one row per run: the interrupted one and the one that finished
        assert sorted(r.status for r in rows) == ["canceled", "ok"]
        assert Decimal(job["cost_usd"]) == sum((r.cost for r in rows), Decimal(0))
    finally:
        new.stop.set()


async def test_a_running_job_with_an_expired_lease_is_reclaimed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = fast_settings(tmp_path)
    async with trio.open_nursery() as first:
        idle = await start_gateway(first, fast_settings(tmp_path, workers=0))
        async with idle.client() as client:
            job_id = (await create(client, {"request": REQUEST})).json()["id"]
        clock = idle.services.clock

        def dead_worker_took_it(job: JobRecord) -> JobRecord:
            return evolve(
                job,
                status="running",
                attempts=1,
                lease_owner="w-dead",
                lease_expires=clock.epoch() - 1.0,
                started_at=clock.wall(),
            )

        await idle.services.storage.update_job(job_id, dead_worker_took_it)
        idle.stop.set()

    new = await start_gateway(nursery, settings)
    try:
        async with new.client() as client:
            job = await until(client, job_id, {"succeeded", "failed", "canceled"})
        assert job["status"] == "succeeded" and job["attempts"] == 2
        stored = await new.services.storage.get_job("t1", job_id)
        assert stored is not None and stored.lease_owner is None
        rows = sorted(await job_rows(new.services), key=lambda r: r.request_id)
        # the attempt the dead worker lost has its one row, billed nothing; then the run
        assert [(r.status, r.request_id) for r in rows] == [
            ("interrupted", attempt_request_id(job_id, 1)),
            ("ok", attempt_request_id(job_id, 2)),
        ]
        assert rows[0].cost == 0 and rows[0].error_code == "worker_lost"
    finally:
        new.stop.set()


# -- webhooks ---------------------------------------------------------------------------


async def secret_of(client: httpx.AsyncClient) -> str:
    r = await client.get("/v1/webhooks/secret")
    assert r.status_code == 200, r.text
    secret: str = r.json()["key"]
    return secret


async def test_webhook_secret_is_stable_per_tenant(gateway: Running) -> None:
    other_key = await gateway.new_key(tenant="t2")
    async with gateway.client() as mine, gateway.client(other_key) as theirs:
        first = await secret_of(mine)
        assert first.startswith("whsec_") and first == await secret_of(mine)
        assert await secret_of(theirs) not in (first, "")
        async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
            assert (await anonymous.get("/v1/webhooks/secret")).status_code == 401


async def test_finished_job_is_posted_to_its_webhook_signed(
    gateway: Running, receiver: Receiver
) -> None:
    other_key = await gateway.new_key(tenant="t2")
    async with gateway.client() as client, gateway.client(other_key) as theirs:
        secret, wrong = await secret_of(client), await secret_of(theirs)
        r = await create(client, {"request": REQUEST, "webhook_url": receiver.url})
        assert r.status_code == 202 and r.json()["webhook_url"] == receiver.url
        job_id = r.json()["id"]
        with trio.fail_after(DEADLINE):
            hook = await receiver.receive.receive()
        job = (await client.get(f"/v1/jobs/{job_id}")).json()

    webhooks.verify(secret, hook.headers, hook.body, now=int(time.time()))
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(wrong, hook.headers, hook.body, now=int(time.time()))
    assert hook.headers["webhook-id"] == f"msg_{job_id}_succeeded"
    assert hook.headers["content-type"] == "application/json"
    assert abs(int(hook.headers["webhook-timestamp"]) - hook.received) <= 2
    sent = json.loads(hook.body)
    assert sent == job  # the job object, as GET shows it
    assert sent["status"] == "succeeded" and sent["result"]["status"] == "completed"


async def test_canceled_job_is_announced_once(gateway: Running, receiver: Receiver) -> None:
    async with gateway.client() as client:
        secret = await secret_of(client)
        body = {"request": scenario("latency_ms=20000"), "webhook_url": receiver.url}
        job_id = (await create(client, body)).json()["id"]
        await client.post(f"/v1/jobs/{job_id}/cancel")
        await client.post(f"/v1/jobs/{job_id}/cancel")  # idempotent: no second message
        with trio.fail_after(DEADLINE):
            hook = await receiver.receive.receive()
    webhooks.verify(secret, hook.headers, hook.body, now=int(time.time()))
    assert hook.headers["webhook-id"] == f"msg_{job_id}_canceled"
    assert json.loads(hook.body)["status"] == "canceled"
    with trio.move_on_after(0.5):
        extra = await receiver.receive.receive()
        pytest.fail(f"a second delivery arrived: {extra.headers['webhook-id']}")


async def test_a_failing_receiver_gets_the_same_message_again(
    gateway: Running, receiver: Receiver
) -> None:
    receiver.statuses[:] = [503]
    async with gateway.client() as client:
        secret = await secret_of(client)
        body = {"request": REQUEST, "webhook_url": receiver.url}
        job_id = (await create(client, body)).json()["id"]
        with trio.fail_after(60):  # a hang guard: the gap is checked below
            first = await receiver.receive.receive()
            second = await receiver.receive.receive()  # after core.webhooks' first delay
    for hook in (first, second):
        webhooks.verify(secret, hook.headers, hook.body, now=int(time.time()))
        assert hook.headers["webhook-id"] == f"msg_{job_id}_succeeded"
    assert second.body == first.body
    gap = second.received - first.received
    # after the first retry delay, and before the second one's (not a speed check)
    assert webhooks.RETRY_DELAYS[0] - 0.5 <= gap < webhooks.RETRY_DELAYS[1], gap
    assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"]) + 4
    with trio.move_on_after(0.5):  # 204 ends it
        await receiver.receive.receive()
        pytest.fail("delivered again after a 2xx")


async def test_a_late_finish_from_a_worker_that_lost_the_lease_changes_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Worker A's lease ran out and worker B reclaimed the job; A's model call then ends
    before its next heartbeat. A's report must be dropped, not crash the workers."""
    gw = await start_gateway(nursery, fast_settings(tmp_path, workers=0))
    try:
        async with gw.client() as client:
            job_id = (await create(client, {"request": REQUEST})).json()["id"]
        clock = gw.services.clock

        def reclaimed_by_b(job: JobRecord) -> JobRecord:
            return evolve(
                job, status="running", attempts=2, lease_owner="w-b",
                lease_expires=clock.epoch() + 60, started_at=clock.wall(),
            )  # fmt: skip

        before = await gw.services.storage.update_job(job_id, reclaimed_by_b)
        jobs = gw.services.jobs
        assert jobs is not None
        for outcome in (
            {"result": {"text": "late"}},
            {"error": InvalidRequest("late failure"), "retryable": False},
        ):
            await JobWorker(jobs, "w-a").finish(job_id, outcome)
            assert await gw.services.storage.get_job("t1", job_id) == before
    finally:
        gw.stop.set()


# -- robustness: broken runs, machine-ended jobs, shutdown ------------------------------


class FlakyStorage:
    """Delegates to a real storage, but the first use of each method named in `fail`
    raises (a storage error in the middle of the worker loop)."""

    def __init__(self, inner: Storage, fail: set[str]) -> None:
        self._inner = inner
        self._fail = set(fail)
        self.raised: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name in self._fail:
            self._fail.discard(name)
            self.raised.append(name)

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError(f"storage blew up in {name}")

            return broken
        return getattr(self._inner, name)


async def test_a_run_that_raises_is_logged_and_retried_and_the_worker_goes_on(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await start_gateway(nursery, fast_settings(tmp_path, workers=0))
    try:
        async with gw.client() as client:
            first = (await create(client, {"request": REQUEST})).json()["id"]
            second = (await create(client, {"request": REQUEST})).json()["id"]
            flaky = FlakyStorage(gw.services.storage, {"claim_job", "key_by_id"})
            assert gw.services.jobs is not None
            service = JobService(
                cast(Storage, flaky), gw.services.gateway, gw.services.clock,
                deliverer=gw.services.jobs.deliverer, poll_seconds=0.05,
                policy=lifecycle.JobPolicy(lease_seconds=1.5, max_attempts=3, base_backoff=0.1),
            )  # fmt: skip
            async with trio.open_nursery() as workers:
                workers.start_soon(service.run_workers, 1)
                done_first = await until(client, first, {"succeeded", "failed", "canceled"})
                done_second = await until(client, second, {"succeeded", "failed", "canceled"})
                workers.cancel_scope.cancel()
        assert flaky.raised == ["claim_job", "key_by_id"]
        # the broken run counted as a retryable failure; the retry (same worker) finished it
        assert done_first["status"] == "succeeded" and done_first["attempts"] == 2
        assert done_second["status"] == "succeeded" and done_second["attempts"] == 1
        logged = [r for r in caplog.records if r.name == "umg.jobs" and r.exc_info]
        assert any("could not claim" in r.getMessage() for r in logged)
        broke = [r for r in logged if "unexpected error" in r.getMessage()]
        assert len(broke) == 1 and first in broke[0].getMessage()
        assert "RuntimeError: storage blew up in key_by_id" in caplog.text  # the traceback
    finally:
        gw.stop.set()


async def test_a_job_whose_workers_keep_dying_ends_failed_and_is_announced(
    nursery: trio.Nursery, tmp_path: Path, receiver: Receiver
) -> None:
    """Reclaiming a job whose last allowed run's worker died fails it (not run again):
    `job_attempts_exhausted`, shown by GET and posted to its webhook."""
    gw = await start_gateway(nursery, fast_settings(tmp_path, workers=0))
    jobs = gw.services.jobs
    assert jobs is not None
    try:
        async with gw.client() as client:
            body = {"request": REQUEST, "webhook_url": receiver.url}
            job_id = (await create(client, body)).json()["id"]
            clock = gw.services.clock

            def last_worker_died(job: JobRecord) -> JobRecord:
                return evolve(
                    job, status="running", attempts=jobs.policy.max_attempts,
                    lease_owner="w-dead", lease_expires=clock.epoch() - 1.0,
                    started_at=clock.wall(),
                )  # fmt: skip

            await gw.services.storage.update_job(job_id, last_worker_died)
            async with trio.open_nursery() as workers:
                workers.start_soon(JobWorker(jobs, "w-test").run)
                job = await until(client, job_id, {"succeeded", "failed", "canceled"})
                with trio.fail_after(DEADLINE):
                    hook = await receiver.receive.receive()
                workers.cancel_scope.cancel()
        assert job["status"] == "failed" and job["attempts"] == jobs.policy.max_attempts
        assert job["error"]["code"] == "job_attempts_exhausted"
        assert job["error"]["type"] == "server_error" and job["error"]["message"]
        assert hook.headers["webhook-id"] == f"msg_{job_id}_failed"
        assert json.loads(hook.body)["error"] == job["error"]
        # the model was never called again; the lost last attempt has its one row
        (row,) = await job_rows(gw.services)
        assert (row.status, row.cost) == ("interrupted", 0)
        assert row.request_id == attempt_request_id(job_id, jobs.policy.max_attempts)
    finally:
        gw.stop.set()


async def pending_delivery(gw: Running, job_id: str) -> DeliveryRecord | None:
    """The job's one outbox row once its first attempt failed and a retry is scheduled."""
    (delivery,) = await gw.services.storage.deliveries_of_job(job_id)  # posted: it exists
    return delivery if (delivery.status, delivery.attempts) == ("pending", 1) else None


async def test_a_webhook_retry_pending_at_shutdown_is_sent_by_the_next_gateway(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Shutdown does not wait for a retry (prompt), and does not lose it: the outbox row
    survives, and the next gateway on the database sends it, same `webhook-id`, same body,
    signed with the same secret."""
    receiver.statuses[:] = [503]
    settings = fast_settings(tmp_path)
    with trio.fail_after(DEADLINE * 2):  # a hang would be the whole retry schedule
        async with trio.open_nursery() as server:
            gw = await start_gateway(server, settings)
            async with gw.client() as client:
                secret = await secret_of(client)
                body = {"request": REQUEST, "webhook_url": receiver.url}
                job_id = (await create(client, body)).json()["id"]
                with trio.fail_after(DEADLINE):
                    first = await receiver.receive.receive()  # to be answered 503
                    # The receiver reports a POST before it answers: stop only once the
                    # 503 is recorded and the retry scheduled. (Stopped sooner, the attempt
                    # in flight is cut and keeps its lease, 60 s, before anyone retries.)
                    while (await pending_delivery(gw, job_id)) is None:
                        await trio.sleep(0.02)
            gw.stop.set()
    # Shutdown did not wait for the retry (untimed: a stop that waited for it would have
    # let it be sent to the receiver, which still runs)
    with pytest.raises(trio.WouldBlock):
        receiver.receive.receive_nowait()

    async with trio.open_nursery() as server:
        gw = await start_gateway(server, settings)
        try:
            with trio.fail_after(DEADLINE):
                second = await receiver.receive.receive()
            (delivery,) = await gw.services.storage.deliveries_of_job(job_id)
            with trio.fail_after(DEADLINE):
                while delivery.status != "delivered":
                    await trio.sleep(0.05)
                    (delivery,) = await gw.services.storage.deliveries_of_job(job_id)
        finally:
            gw.stop.set()
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == f"msg_{job_id}_succeeded"
    assert second.body == first.body
    for hook in (first, second):
        webhooks.verify(secret, hook.headers, hook.body, now=int(time.time()))
    assert second.received - first.received >= webhooks.RETRY_DELAYS[0] - 0.5  # on schedule
    assert delivery.attempts == 2 and delivery.id == f"msg_{job_id}_succeeded"


async def test_webhook_events_filter_sends_start_and_completed_and_is_checked(
    gateway: Running, receiver: Receiver
) -> None:
    async with gateway.client() as client:
        for bad, why in [([], "non-empty"), (["done"], "unknown"), (["start", "start"], "twice"),
                         ("completed", "list")]:  # fmt: skip
            body = {"request": REQUEST, "webhook_url": receiver.url, "webhook_events_filter": bad}
            assert why in assert_error(await create(client, body), 400, "webhook_events_filter")["message"]
        body = {"request": REQUEST, "webhook_events_filter": ["completed"]}  # no webhook_url
        assert (await create(client, body)).status_code == 202  # kept, without effect
        body = {"request": REQUEST, "webhook_url": receiver.url,
                "webhook_events_filter": ["start", "completed"]}  # fmt: skip
        job_id = (await create(client, body)).json()["id"]
        with trio.fail_after(DEADLINE):
            got = {(await receiver.receive.receive()).headers["webhook-id"] for _ in range(2)}
    assert got == {f"msg_{job_id}_start", f"msg_{job_id}_succeeded"}
    with trio.move_on_after(0.5):
        extra = await receiver.receive.receive()
        pytest.fail(f"an unwanted delivery arrived: {extra.headers['webhook-id']}")


# -- SSRF: webhooks to internal addresses are refused ------------------------------------


@pytest.fixture
async def strict_gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    """A gateway with the default webhook rules but plain http allowed (so the refusals
    below are about the address, not the scheme)."""
    running = await start_gateway(nursery, settings_for(tmp_path, UMG_WEBHOOK_ALLOW_HTTP="1"))
    yield running
    running.stop.set()


async def test_a_webhook_to_an_internal_address_is_refused_at_creation(
    strict_gateway: Running, receiver: Receiver
) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    refused = [
        receiver.url,  # http://127.0.0.1:<port>/hook
        f"http://localhost:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://[fd00::1]/hook",
        "http://100.64.0.1/hook",
    ]
    async with strict_gateway.client() as client:
        for url in refused:
            r = await create(client, {"request": REQUEST, "webhook_url": url})
            error = assert_error(r, 400, "webhook_url")
            assert "webhook_url" in error["message"], url
        assert (await client.get("/v1/jobs")).json()["data"] == []  # nothing queued
    with pytest.raises(trio.WouldBlock):
        receiver.receive.receive_nowait()  # and no connection was ever made


async def test_plain_http_is_refused_unless_allowed(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(nursery, settings_for(tmp_path, UMG_CONFIG=""))  # the defaults
    jobs = gw.services.jobs
    assert jobs is not None
    jobs.deliverer.http = None  # the accepted job below is never announced to example.com
    try:
        async with gw.client() as client:
            r = await create(client, {"request": REQUEST, "webhook_url": "http://example.com/h"})
            assert "https" in assert_error(r, 400, "webhook_url")["message"]
            r = await create(client, {"request": REQUEST, "webhook_url": "https://example.com/h"})
            assert r.status_code == 202, r.text
    finally:
        gw.stop.set()


async def test_a_host_that_resolves_to_loopback_is_refused_at_delivery(
    strict_gateway: Running, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The name passes at creation (it is not an address); at delivery it resolves to
    127.0.0.1 (the test's resolver), so nothing is sent and nothing is retried."""
    jobs = strict_gateway.services.jobs
    assert jobs is not None
    asked: list[str] = []

    async def to_loopback(host: str, port: int) -> list[webhook_targets.Address]:
        asked.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    jobs.deliverer.resolver = to_loopback
    port = receiver.url.split(":")[2].split("/")[0]
    async with strict_gateway.client() as client:
        url = f"http://rebind.test:{port}/hook"
        r = await create(client, {"request": REQUEST, "webhook_url": url})
        assert r.status_code == 202, r.text
        await until(client, r.json()["id"], {"succeeded", "failed", "canceled"})
        with trio.fail_after(DEADLINE):
            while not any("refused" in m for m in caplog.messages):
                await trio.sleep(0.05)
    assert asked == ["rebind.test"]  # resolved once: a refusal is not retried
    refusal = next(m for m in caplog.messages if "refused" in m)
    assert "loopback" in refusal and "/hook" not in refusal  # the host, not the URL
    with trio.move_on_after(0.5):
        await receiver.receive.receive()
        pytest.fail("the refused webhook reached the receiver")
