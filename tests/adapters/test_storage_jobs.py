"""Storage on both backends: the job queue (claims, leases, tenant scoping, updates),
and Postgres cancellation that leaves the pool healthy."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import trio
from attrs import evolve

from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.storage.records import JobRecord
from core.errors import Conflict

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = 1_800_000_000.0


def make_job(n: int, tenant: str = "t1", **changes: Any) -> JobRecord:
    values: dict[str, Any] = {
        "id": f"job_{n:03d}",
        "tenant": tenant,
        "project": "p1",
        "key_id": "key_1",
        "request": {"model": "gpt-4.1", "input": f"job {n}", "n": n},
        "status": "queued",
        "attempts": 0,
        "run_after": NOW,
        "lease_owner": None,
        "lease_expires": None,
        "deadline": None,
        "cancel_requested": False,
        "result": None,
        "error": None,
        "cost": None,
        "webhook_url": None,
        "created_at": T0 + timedelta(seconds=n),
        "started_at": None,
        "completed_at": None,
    }
    return JobRecord(**{**values, **changes})


async def test_job_round_trip_and_duplicate_id(storage: Storage) -> None:
    job = make_job(1, webhook_url="https://example.test/hook", deadline=NOW + 60)
    await storage.insert_job(job)
    assert await storage.get_job("t1", "job_001") == job
    with pytest.raises(Conflict):
        await storage.insert_job(job)


async def test_get_and_list_jobs_are_tenant_scoped(storage: Storage) -> None:
    for n in range(5):
        await storage.insert_job(make_job(n))
    await storage.insert_job(make_job(10, tenant="t2"))
    assert await storage.get_job("t2", "job_001") is None
    assert await storage.get_job("t1", "job_010") is None
    assert [j.id for j in await storage.list_jobs("t2", None, 10, None)] == ["job_010"]
    assert await storage.list_jobs("t1", None, 10, "job_010") == []  # another tenant's cursor


async def test_list_jobs_newest_first_with_cursor_and_status(storage: Storage) -> None:
    for n in range(7):
        await storage.insert_job(make_job(n, status="succeeded" if n % 2 else "queued"))
    page1 = await storage.list_jobs("t1", None, 3, None)
    assert [j.id for j in page1] == ["job_006", "job_005", "job_004"]
    page2 = await storage.list_jobs("t1", None, 3, page1[-1].id)
    assert [j.id for j in page2] == ["job_003", "job_002", "job_001"]
    page3 = await storage.list_jobs("t1", None, 3, page2[-1].id)
    assert [j.id for j in page3] == ["job_000"]
    done = await storage.list_jobs("t1", "succeeded", 10, None)
    assert [j.id for j in done] == ["job_005", "job_003", "job_001"]
    assert [j.id for j in await storage.list_jobs("t1", "succeeded", 10, "job_003")] == ["job_001"]


async def test_claim_takes_oldest_ready_job_and_respects_run_after(storage: Storage) -> None:
    await storage.insert_job(make_job(1, run_after=NOW + 100))  # not yet
    await storage.insert_job(make_job(2))
    await storage.insert_job(make_job(3))
    await storage.insert_job(make_job(4, status="succeeded"))
    first = await storage.claim_job("w1", NOW, 30.0)
    assert first is not None and first.id == "job_002"
    assert (first.status, first.lease_owner, first.attempts) == ("running", "w1", 1)
    assert first.lease_expires == NOW + 30.0
    assert first.started_at == datetime.fromtimestamp(NOW, UTC)
    assert await storage.get_job("t1", "job_002") == first
    second = await storage.claim_job("w1", NOW, 30.0)
    assert second is not None and second.id == "job_003"
    assert await storage.claim_job("w1", NOW, 30.0) is None
    later = await storage.claim_job("w2", NOW + 100, 30.0)
    assert later is not None and later.id == "job_001"


async def test_expired_lease_is_reclaimed(storage: Storage) -> None:
    await storage.insert_job(make_job(1))
    claimed = await storage.claim_job("w1", NOW, 30.0)
    assert claimed is not None
    assert await storage.claim_job("w2", NOW + 10, 30.0) is None  # lease still held
    assert await storage.heartbeat("job_001", "w1", NOW + 45) is True
    assert await storage.claim_job("w2", NOW + 40, 30.0) is None  # extended to +45
    again = await storage.claim_job("w2", NOW + 46, 30.0)
    assert again is not None and again.id == "job_001"
    assert (again.lease_owner, again.attempts, again.lease_expires) == ("w2", 2, NOW + 76)
    assert again.started_at == claimed.started_at  # set once
    assert await storage.heartbeat("job_001", "w1", NOW + 100) is False  # not the owner
    assert await storage.heartbeat("job_001", "w2", NOW + 100) is True
    assert await storage.heartbeat("job_404", "w2", NOW + 100) is False


async def test_concurrent_claimers_never_double_claim(storage_url: str) -> None:
    stores = [open_storage(storage_url), open_storage(storage_url)]
    for store in stores:
        await store.migrate()
    try:
        for n in range(30):
            await stores[0].insert_job(make_job(n))
        claims: list[tuple[str, str]] = []

        async def worker(store: Storage, name: str) -> None:
            while (job := await store.claim_job(name, NOW, 300.0)) is not None:
                claims.append((job.id, name))
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for w in range(6):
                nursery.start_soon(worker, stores[w % 2], f"w{w}")
        ids = [job_id for job_id, _ in claims]
        assert sorted(ids) == [f"job_{n:03d}" for n in range(30)]  # each exactly once
        for job_id, name in claims:
            job = await stores[1].get_job("t1", job_id)
            assert job is not None and job.lease_owner == name and job.attempts == 1
    finally:
        for store in stores:
            await store.close()


async def test_update_job_is_an_atomic_read_modify_write(storage: Storage) -> None:
    await storage.insert_job(make_job(1))
    done = T0 + timedelta(minutes=5)

    def finish(job: JobRecord) -> JobRecord:
        return evolve(
            job, status="succeeded", result={"text": "hi", "usage": {"input_tokens": 3}},
            cost=Decimal("0.0000012345"), completed_at=done,
        )

    updated = await storage.update_job("job_001", finish)
    assert updated is not None and updated.status == "succeeded"
    assert await storage.get_job("t1", "job_001") == updated
    assert await storage.update_job("job_404", finish) is None
    with pytest.raises(ValueError, match="may not change"):
        await storage.update_job("job_001", lambda job: evolve(job, tenant="t2"))

    async def add_attempt() -> None:
        await storage.update_job("job_001", lambda job: evolve(job, attempts=job.attempts + 1))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(add_attempt)
    final = await storage.get_job("t1", "job_001")
    assert final is not None and final.attempts == 20 and final.cost == Decimal("0.0000012345")


@pytest.mark.postgres
async def test_postgres_cancel_while_blocked_keeps_pool_healthy(postgres_url: str) -> None:
    """A Trio cancel reaches a statement waiting in a thread (here: on a row lock held by
    another connection); the transaction does not happen and the pool keeps working."""
    store = open_storage(postgres_url)
    await store.migrate()
    try:
        await store.update_state("locked", lambda s: (None, {"count": 0}))
        with psycopg.connect(postgres_url) as other:
            other.execute("SELECT data FROM state WHERE scope = 'locked' FOR UPDATE")
            started = time.monotonic()
            with trio.move_on_after(0.3) as scope:
                await store.update_state("locked", lambda s: (None, {"count": 99}))
            assert scope.cancelled_caught
            assert time.monotonic() - started < 3.0
            other.rollback()
        for _ in range(12):  # more calls than the pool has connections
            await store.update_state("locked", lambda s: (None, {"count": (s or {})["count"] + 1}))
        assert await store.read_state("locked") == {"count": 12}
        assert await store.health() is True
    finally:
        await store.close()
