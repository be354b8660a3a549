"""Job deadlines: `Cancel-After` and `deadline`. The rules on Trio's autojump clock with
the real job service, driver, Mock provider and SQLite (no HTTP), and the HTTP surface
(headers, fields, 400s) on the real server.

- A job whose deadline passes before it starts is `aborted`: never run, never billed.
- A job running past it is `canceled` (error `job_deadline_exceeded`) at the deadline,
  its model call cancelled; the ledger has the run's one row (`canceled`, with what it
  consumed), and the job's cost is that row's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from adapters.admin import create_key
from adapters.storage.outbox_sql import attempt_request_id
from adapters.storage.records import JobRecord, KeyRecord, UsageRecord
from core.jobs import is_terminal
from server.services import Services, build_services
from server.wire.responses import parse_responses_request
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

REQUEST: dict[str, Any] = {"model": "gpt-4.1", "input": "Hello deadlines"}
SLOW: dict[str, Any] = {**REQUEST, "metadata": {"mock_scenario": "latency_ms=60000"}}


async def finished(services: Services, job_id: str) -> JobRecord:
    """Poll the row every 0.5 s of fake time (not `JobService.wait`: with the autojump
    clock a timeout fires whenever every task waits on a database thread)."""
    for _ in range(2000):
        job = await services.storage.get_job("t1", job_id)
        assert job is not None
        if is_terminal(job.status):
            return job
        await trio.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


async def ledger(services: Services) -> list[UsageRecord]:
    return await services.storage.usage_rows(
        "t1", datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    )


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[Services, KeyRecord]]:
    services = await build_services(settings_for(tmp_path))
    _, key = await create_key(services.storage, services.clock, tenant="t1", project="p1")
    try:
        yield services, key
    finally:
        await services.close()


async def test_a_job_whose_deadline_passes_before_it_starts_is_aborted_and_never_billed(
    autojump_clock: trio.testing.MockClock, local: tuple[Services, KeyRecord]
) -> None:
    services, key = local
    jobs = services.jobs
    assert jobs is not None
    deadline = services.clock.epoch() + 30
    job = await jobs.create(key, parse_responses_request(REQUEST), REQUEST, None, deadline=deadline)
    await trio.sleep(31)  # no worker ran meanwhile
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.run_workers, 1)
        done = await finished(services, job.id)
        nursery.cancel_scope.cancel()
    assert done.status == "aborted" and done.attempts == 0
    assert done.error is not None and done.error["code"] == "job_deadline_exceeded"
    assert done.cost is None and done.started_at is None
    assert await ledger(services) == []  # never run, never billed


async def test_a_job_running_past_its_deadline_is_canceled_and_billed_for_its_run(
    local: tuple[Services, KeyRecord],
) -> None:
    # On the real clock (2 s): on the autojump clock the run's deadline could come while
    # the worker still waits on database threads to claim the job and open the run.
    services, key = local
    jobs = services.jobs
    assert jobs is not None
    start = trio.current_time()
    deadline = services.clock.epoch() + 2
    job = await jobs.create(key, parse_responses_request(SLOW), SLOW, None, deadline=deadline)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.run_workers, 1)
        done = await finished(services, job.id)
        nursery.cancel_scope.cancel()
    took = trio.current_time() - start
    assert done.status == "canceled" and done.attempts == 1
    assert done.error is not None and done.error["code"] == "job_deadline_exceeded"
    assert 2 <= took < 60  # at the deadline, not after the model's 60 s
    (row,) = await ledger(services)
    assert (row.status, row.request_id) == ("canceled", attempt_request_id(job.id, 1))
    assert done.cost == row.cost


async def test_a_job_that_finishes_before_its_deadline_succeeds(
    local: tuple[Services, KeyRecord],
) -> None:
    # On the real clock: the autojump clock jumps to the next deadline whenever every task
    # waits on a database thread, and while the run is in flight the next one is the
    # run's own deadline scope, however far away it is.
    services, key = local
    jobs = services.jobs
    assert jobs is not None
    deadline = services.clock.epoch() + 3600
    job = await jobs.create(key, parse_responses_request(REQUEST), REQUEST, None, deadline=deadline)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.run_workers, 1)
        done = await finished(services, job.id)
        nursery.cancel_scope.cancel()
    assert done.status == "succeeded" and done.deadline == deadline
    assert [r.status for r in await ledger(services)] == ["ok"]


# ---- over HTTP -----------------------------------------------------------------------------


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_gateway(nursery, settings_for(tmp_path))
    yield running
    running.stop.set()


async def test_cancel_after_ends_a_running_job_at_its_deadline(gateway: Running) -> None:
    async with gateway.client() as client:
        r = await client.post("/v1/jobs", json={"request": SLOW}, headers={"Cancel-After": "1s"})
        assert r.status_code == 202, r.text
        job = r.json()
        with trio.fail_after(15):
            while job["status"] not in ("succeeded", "failed", "canceled", "aborted"):
                await trio.sleep(0.05)
                job = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert job["status"] == "canceled" and job["error"]["code"] == "job_deadline_exceeded"
    assert job["deadline"] is not None
    (row,) = [r for r in await ledger(gateway.services) if r.endpoint == "jobs"]
    assert row.status == "canceled"


@pytest.mark.parametrize(
    ("headers", "body", "param"),
    [({"Cancel-After": "soon"}, {}, "Cancel-After"), ({"Cancel-After": "0s"}, {}, "Cancel-After"),
     ({}, {"deadline": 30}, "deadline"), ({}, {"deadline": "2000-01-01T00:00:00Z"}, "deadline"),
     ({}, {"deadline": "2999-01-01T00:00:00"}, "deadline"), ({}, {"deadline": "tomorrow"}, "deadline")],
)  # fmt: skip
async def test_a_bad_deadline_is_a_400_naming_it(
    gateway: Running, headers: dict[str, str], body: dict[str, Any], param: str
) -> None:
    async with gateway.client() as client:
        r = await client.post("/v1/jobs", json={"request": REQUEST, **body}, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        assert (await client.get("/v1/jobs")).json()["data"] == []  # nothing queued


async def test_the_earlier_of_header_and_field_wins(gateway: Running) -> None:
    async with gateway.client() as client:
        before = gateway.services.clock.epoch()
        r = await client.post("/v1/jobs", json={"request": SLOW, "deadline": "1h"},
                              headers={"Cancel-After": "5m"})  # fmt: skip
        assert r.status_code == 202, r.text
        stored = await gateway.services.storage.get_job("t1", r.json()["id"])
        assert stored is not None and stored.deadline is not None
        assert before + 300 <= stored.deadline <= gateway.services.clock.epoch() + 300
        await client.post(f"/v1/jobs/{r.json()['id']}/cancel")


# ---- a deadline while the run is still opening: the attempt still has its one row ----------


async def _one_job_past_its_deadline(services: Services, key: KeyRecord, seconds: float) -> JobRecord:
    jobs = services.jobs
    assert jobs is not None
    deadline = services.clock.epoch() + seconds
    job = await jobs.create(key, parse_responses_request(REQUEST), REQUEST, None, deadline=deadline)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.run_workers, 1)
        done = await finished(services, job.id)
        nursery.cancel_scope.cancel()
    return done


async def test_a_deadline_while_the_jobs_key_is_looked_up_still_records_the_attempt(
    local: tuple[Services, KeyRecord],
) -> None:
    """The deadline fires after the claim (attempt 1 started) but before the driver's run
    exists (the worker still reads the job's key): the attempt gets its `canceled` row."""
    services, key = local
    storage = services.storage
    real = storage.key_by_id

    async def slow_key(key_id: str) -> KeyRecord | None:
        await trio.sleep(3.0)  # past the deadline
        return await real(key_id)

    storage.key_by_id = slow_key  # type: ignore[method-assign]
    done = await _one_job_past_its_deadline(services, key, 1.0)
    assert (done.status, done.attempts) == ("canceled", 1)
    rows = await ledger(services)
    assert [(r.status, r.request_id, r.cost) for r in rows] == [
        ("canceled", attempt_request_id(done.id, 1), 0)
    ]


async def test_a_deadline_during_admission_still_records_the_attempt(
    local: tuple[Services, KeyRecord],
) -> None:
    """The deadline fires inside `run.open()` (the rate limits are being taken)."""
    services, key = local
    limits = services.gateway.driver.limits
    real = limits.take_rate

    async def slow_rate(*args: Any) -> Any:
        await trio.sleep(3.0)
        return await real(*args)

    limits.take_rate = slow_rate  # type: ignore[method-assign]
    done = await _one_job_past_its_deadline(services, key, 1.0)
    assert (done.status, done.attempts) == ("canceled", 1)
    rows = await ledger(services)
    assert [(r.status, r.request_id) for r in rows] == [("canceled", attempt_request_id(done.id, 1))]


async def test_a_deadline_before_the_provider_answers_headers_records_the_attempt(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A real HTTP provider (the fake server) that holds its response headers past the
    job's deadline: the call is cancelled, the job canceled, the attempt has one row."""
    from tests.fakes import Fault, running_fake_provider
    from tests.server.live import live_gateway

    async with running_fake_provider() as fake:
        fake.script(Fault(delay=30.0))
        gw = await live_gateway(nursery, tmp_path, fake)
        try:
            body = {"request": {"model": "local/llama-3-8b", "input": "hold the headers"}}
            async with gw.client() as client:
                r = await client.post("/v1/jobs", json=body, headers={"Cancel-After": "1s"})
                assert r.status_code == 202, r.text
                job = r.json()
                with trio.fail_after(15):
                    while job["status"] not in ("succeeded", "failed", "canceled", "aborted"):
                        await trio.sleep(0.05)
                        job = (await client.get(f"/v1/jobs/{job['id']}")).json()
            assert (job["status"], job["attempts"]) == ("canceled", 1)
            assert len(fake.requests) == 1  # the call was made, and never answered
            with trio.fail_after(5):
                while not (rows := [r for r in await ledger(gw.services) if r.endpoint == "jobs"]):
                    await trio.sleep(0.05)
            await trio.sleep(0.5)  # no second row comes later
            rows = [r for r in await ledger(gw.services) if r.endpoint == "jobs"]
            assert [(r.status, r.request_id) for r in rows] == [
                ("canceled", attempt_request_id(job["id"], 1))
            ]
        finally:
            gw.stop.set()
