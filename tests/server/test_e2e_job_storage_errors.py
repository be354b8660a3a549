"""A storage failure when a job worker reads the job's key (adapters/job_worker.py,
`_key_of`), on SQLite and on Postgres: the attempt ends with exactly one ledger row (a
retryable 503 `storage_unavailable`, nothing admitted, nothing billed), and the job is
retried after its backoff; on its last attempt it fails with that error. The real job
service, driver and Mock provider, no HTTP; the failure comes from a wrapper around the
real storage whose `key_by_id` raises the backend's own error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import evolve

from adapters.admin import create_key
from adapters.storage.base import Storage
from adapters.storage.outbox_sql import attempt_request_id
from adapters.storage.records import JobRecord, KeyRecord, UsageRecord
from core.errors import StorageUnavailable
from core.jobs import is_terminal
from server.services import Services, build_services
from server.wire.responses import parse_responses_request
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import test_settings as settings_for

REQUEST: dict[str, Any] = {"model": "gpt-4.1", "input": "Hello storage"}


class KeyReadsFail:
    """The real storage, except that its next `times` `key_by_id` calls raise `error` (what
    the backend raises for a failed read: sqlite3's error, or Postgres's 503)."""

    def __init__(self, real: Storage, error: Exception, times: int) -> None:
        self._real = real
        self._error = error
        self.left = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        if self.left > 0:
            self.left -= 1
            raise self._error
        return await self._real.key_by_id(key_id)


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


def failing_key_reads(services: Services, times: int, max_attempts: int) -> KeyReadsFail:
    """Put the wrapper under the job workers (started afterwards) and a short backoff."""
    jobs = services.jobs
    assert jobs is not None
    if sqlite3.Error in services.storage.errors:
        error: Exception = sqlite3.OperationalError("disk I/O error")
    else:
        error = StorageUnavailable("The gateway's database connection failed", retry_after=2.0)
    assert isinstance(error, services.storage.errors)
    wrapper = KeyReadsFail(services.storage, error, times)
    jobs.storage = wrapper  # type: ignore[assignment]
    jobs.policy = evolve(jobs.policy, base_backoff=0.05, max_backoff=0.05, max_attempts=max_attempts)
    return wrapper


async def new_job(services: Services) -> tuple[KeyRecord, JobRecord]:
    assert services.jobs is not None
    _, key = await create_key(services.storage, services.clock, tenant="t1", project="p1")
    job = await services.jobs.create(key, parse_responses_request(REQUEST), REQUEST, None)
    return key, job


async def run_until_finished(services: Services, job_id: str) -> JobRecord:
    assert services.jobs is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(services.jobs.run_workers, 1)
        with trio.fail_after(20):
            while True:
                job = await services.storage.get_job("t1", job_id)
                assert job is not None
                if is_terminal(job.status):
                    break
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return job


async def ledger(services: Services) -> list[UsageRecord]:
    rows = await services.storage.usage_rows(
        "t1", datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    )
    return sorted(rows, key=lambda r: r.request_id)


def assert_refused_by_storage(row: UsageRecord, job: JobRecord, attempt: int, key_id: str) -> None:
    assert (row.request_id, row.endpoint, row.status, row.error_code) == (
        attempt_request_id(job.id, attempt), "jobs", "error", "storage_unavailable",
    )  # fmt: skip
    assert (row.tenant, row.project, row.key_id) == ("t1", "p1", key_id)
    assert (row.cost, row.attempts, row.provider, row.input_tokens) == (0, 0, None, 0)


async def test_a_key_read_failing_once_gives_that_attempt_its_row_and_the_job_is_retried(
    services: Services,
) -> None:
    wrapper = failing_key_reads(services, times=1, max_attempts=3)
    key, job = await new_job(services)
    done = await run_until_finished(services, job.id)
    assert wrapper.left == 0
    assert (done.status, done.attempts) == ("succeeded", 2)
    first, second = await ledger(services)  # one row per attempt, no `interrupted` row
    assert_refused_by_storage(first, job, 1, key.id)
    assert (second.request_id, second.status, second.provider) == (
        attempt_request_id(job.id, 2), "ok", "openai",
    )  # fmt: skip
    assert second.cost > 0 and done.cost == second.cost  # billed once, for the run that ran


async def test_a_key_read_failing_on_the_last_attempt_fails_the_job_with_its_row(
    services: Services,
) -> None:
    failing_key_reads(services, times=1, max_attempts=1)
    key, job = await new_job(services)
    done = await run_until_finished(services, job.id)
    assert (done.status, done.attempts) == ("failed", 1)
    assert done.error is not None
    assert (done.error["type"], done.error["code"]) == ("server_error", "storage_unavailable")
    assert done.error["request_id"] == attempt_request_id(job.id, 1)
    assert done.result is None and done.cost == 0
    (row,) = await ledger(services)
    assert_refused_by_storage(row, job, 1, key.id)
