"""Every end of a job's run has its one job log line (adapters/jobs.py tells
`Observer.job_ran`, adapters/request_log.py writes it): a run cut by the job's deadline,
a run its owner canceled, and a job the claim found past its deadline (aborted, never
run). Lines are captured as the JSON formatter writes them and checked field by field
against the job and its ledger row.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from adapters.admin import create_key
from adapters.storage.outbox_sql import attempt_request_id
from adapters.storage.records import KeyRecord
from server.services import Services, build_services
from server.wire.responses import parse_responses_request
from tests.server.conftest import start_gateway
from tests.server.conftest import test_settings as settings_for
from tests.server.test_e2e_job_deadlines import REQUEST, SLOW, finished, ledger
from tests.server.test_e2e_jobs import create, fast_settings, rows_when, scenario, until
from tests.server.test_e2e_telemetry import log_lines, parsed

__all__ = ["log_lines"]  # the fixture, re-used


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[Services, KeyRecord]]:
    services = await build_services(settings_for(tmp_path))
    _, key = await create_key(services.storage, services.clock, tenant="t1", project="p1")
    try:
        yield services, key
    finally:
        await services.close()


async def job_line(out: io.StringIO, job_id: str) -> dict[str, Any]:
    with trio.fail_after(5):
        while not [line for line in parsed(out, "job") if line["job_id"] == job_id]:
            await trio.sleep(0.01)
    (line,) = [line for line in parsed(out, "job") if line["job_id"] == job_id]
    return line


async def test_a_run_cut_by_the_deadline_has_its_job_line(
    local: tuple[Services, KeyRecord], log_lines: io.StringIO
) -> None:
    services, key = local
    jobs = services.jobs
    assert jobs is not None
    job = await jobs.create(
        key, parse_responses_request(SLOW), SLOW, None, deadline=services.clock.epoch() + 2
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.run_workers, 1)
        done = await finished(services, job.id)
        line = await job_line(log_lines, job.id)
        nursery.cancel_scope.cancel()
    assert done.status == "canceled"
    (row,) = await ledger(services)
    expected = {
        "event": "job", "logger": "umg.job", "level": "info", "tenant": "t1", "status": "canceled",
        "attempt": 1, "error_code": "job_deadline_exceeded", "request_id": attempt_request_id(job.id, 1),
    }  # fmt: skip
    assert {k: line[k] for k in expected} == expected
    assert row.request_id == line["request_id"]
    assert line["duration_ms"] > 0


async def test_a_run_canceled_by_its_owner_has_its_job_line(
    nursery: trio.Nursery, tmp_path: Path, log_lines: io.StringIO
) -> None:
    gw = await start_gateway(nursery, fast_settings(tmp_path))
    try:
        async with gw.client() as client:
            r = await create(client, {"request": scenario("latency_ms=5000")})
            job_id = r.json()["id"]
            await until(client, job_id, {"running"})
            assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
            (row,) = await rows_when(gw.services, 1, timeout=3.0)
            line = await job_line(log_lines, job_id)
    finally:
        gw.stop.set()
    assert (line["status"], line["attempt"], line["request_id"]) == ("canceled", 1, row.request_id)
    assert row.status == "canceled"
    assert line["level"] == "info"


async def test_a_job_aborted_at_its_claim_has_its_job_line(
    autojump_clock: trio.testing.MockClock, local: tuple[Services, KeyRecord], log_lines: io.StringIO
) -> None:
    services, key = local
    jobs = services.jobs
    assert jobs is not None
    job = await jobs.create(
        key, parse_responses_request(REQUEST), REQUEST, None, deadline=services.clock.epoch() + 30
    )
    await trio.sleep(31)  # no worker ran meanwhile
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.run_workers, 1)
        done = await finished(services, job.id)
        line = await job_line(log_lines, job.id)
        nursery.cancel_scope.cancel()
    assert done.status == "aborted"
    expected = {"status": "aborted", "attempt": 0, "request_id": None, "error_code": "job_deadline_exceeded",
                "level": "warning"}  # fmt: skip
    assert {k: line[k] for k in expected} == expected
