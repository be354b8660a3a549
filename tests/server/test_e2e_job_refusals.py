"""A job refused before its run does anything, on SQLite and on Postgres: what the job
says and which ledger rows there are. The real job service, driver and Mock provider,
no HTTP.

- Its key revoked, or gone, by the time it runs: the run is refused as a token of that
  key is (401 `invalid_api_key`), the job fails with that error and the run's request
  id, and the run has its one row (status `error`, nothing billed, no provider called).
- Its key's budget cannot pay the first grant: the run's one row is `budget_exceeded`.
- Its deadline passed before any run started (`aborted`), or canceled while queued:
  no run, so no row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import evolve

from adapters.admin import create_key
from adapters.jobs import JobService
from adapters.storage.outbox_sql import attempt_request_id
from adapters.storage.records import JobRecord, KeyRecord, UsageRecord
from core.jobs import is_terminal
from server.services import Services, build_services
from server.wire.responses import parse_responses_request
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import test_settings as settings_for

REQUEST: dict[str, Any] = {"model": "gpt-4.1", "input": "Hello refusals"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def services(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Services]:
    env = {}
    if request.param == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    built = await build_services(settings_for(tmp_path, **env))
    try:
        yield built
    finally:
        await built.close()


def job_service(services: Services) -> JobService:
    assert services.jobs is not None
    return services.jobs


async def new_key(services: Services, **limits: Any) -> KeyRecord:
    _, key = await create_key(services.storage, services.clock, tenant="t1", project="p1", **limits)
    return key


async def create(services: Services, key: KeyRecord, deadline: float | None = None) -> JobRecord:
    request = parse_responses_request(REQUEST)
    return await job_service(services).create(key, request, REQUEST, None, deadline=deadline)


async def run_until_finished(services: Services, *job_ids: str) -> list[JobRecord]:
    """Run one job worker until every job is terminal."""
    done: list[JobRecord] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(job_service(services).run_workers, 1)
        with trio.fail_after(20):
            for job_id in job_ids:
                while True:
                    job = await services.storage.get_job("t1", job_id)
                    assert job is not None
                    if is_terminal(job.status):
                        done.append(job)
                        break
                    await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return done


async def ledger(services: Services) -> list[UsageRecord]:
    return await services.storage.usage_rows(
        "t1", datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    )


def assert_refused_for_its_key(job: JobRecord, rows: list[UsageRecord], key_id: str) -> None:
    assert (job.status, job.attempts) == ("failed", 1)
    assert job.result is None and job.cost == 0
    request_id = attempt_request_id(job.id, 1)
    assert job.error is not None
    assert (job.error["type"], job.error["code"]) == ("authentication_error", "invalid_api_key")
    assert job.error["request_id"] == request_id
    (row,) = rows
    assert (row.request_id, row.endpoint, row.status, row.error_code) == (
        request_id, "jobs", "error", "invalid_api_key",
    )  # fmt: skip
    assert (row.tenant, row.project, row.key_id) == ("t1", "p1", key_id)
    assert (row.cost, row.attempts, row.provider, row.input_tokens) == (0, 0, None, 0)


async def test_a_job_whose_key_was_revoked_before_it_ran_fails_with_its_one_row(
    services: Services,
) -> None:
    key = await new_key(services)
    job = await create(services, key)
    assert await services.storage.revoke_key(key.id, services.clock.wall()) is not None
    (done,) = await run_until_finished(services, job.id)
    assert done.error is not None and "revoked" in done.error["message"]
    assert_refused_for_its_key(done, await ledger(services), key.id)


async def test_a_job_whose_key_is_gone_fails_with_its_one_row_under_that_key_id(
    services: Services,
) -> None:
    key = await new_key(services)
    job = await create(services, evolve(key, id="key_gone"))  # as if its row were deleted
    assert await services.storage.key_by_id("key_gone") is None
    (done,) = await run_until_finished(services, job.id)
    assert done.error is not None and "no longer exists" in done.error["message"]
    assert_refused_for_its_key(done, await ledger(services), "key_gone")


async def test_a_job_whose_budget_cannot_pay_fails_with_its_one_budget_row(
    services: Services,
) -> None:
    key = await new_key(services, budget_usd=Decimal(0))
    job = await create(services, key)
    (done,) = await run_until_finished(services, job.id)
    assert (done.status, done.attempts) == ("failed", 1)
    assert done.error is not None and done.error["code"] == "budget_exceeded"
    (row,) = await ledger(services)
    assert (row.request_id, row.status, row.error_code, row.cost) == (
        attempt_request_id(job.id, 1), "budget_exceeded", "budget_exceeded", 0,
    )  # fmt: skip


async def test_a_job_aborted_or_canceled_before_any_run_has_no_row(services: Services) -> None:
    key = await new_key(services)
    jobs = job_service(services)
    past = await create(services, key, deadline=services.clock.epoch() - 1.0)
    canceled = await create(services, key)
    assert (await jobs.cancel("t1", canceled.id)).status == "canceled"
    ran = await create(services, key)  # run last: the worker has claimed the others by then
    aborted, stopped, succeeded = await run_until_finished(services, past.id, canceled.id, ran.id)
    assert (aborted.status, aborted.attempts) == ("aborted", 0)
    assert aborted.error is not None and aborted.error["code"] == "job_deadline_exceeded"
    assert (stopped.status, stopped.attempts) == ("canceled", 0)
    assert succeeded.status == "succeeded"
    assert [r.request_id for r in await ledger(services)] == [attempt_request_id(ran.id, 1)]
