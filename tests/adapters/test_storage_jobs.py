"""Storage on both backends: the job queue (claims, leases, tenant scoping, updates),
and Postgres cancellation that leaves the pool healthy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import trio
from attrs import evolve

from adapters.storage import open_storage
from adapters.storage.base import Storage, holds_lease
from adapters.storage.records import JobRecord
from core.errors import Conflict
from core.jobs import JobPolicy

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = 1_800_000_000.0
POLICY = JobPolicy(lease_seconds=30.0, max_attempts=3)
LONG = JobPolicy(lease_seconds=300.0)


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


async def test_job_counts_are_per_status_across_tenants(storage: Storage) -> None:
    assert await storage.job_counts() == {}
    await storage.insert_job(make_job(1))
    await storage.insert_job(make_job(2, tenant="t2"))
    await storage.insert_job(make_job(3, status="succeeded"))
    assert await storage.job_counts() == {"queued": 2, "succeeded": 1}


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
    first = await storage.claim_job("w1", NOW, POLICY)
    assert first is not None and first.id == "job_002"
    assert (first.status, first.lease_owner, first.attempts) == ("running", "w1", 1)
    assert first.lease_expires == NOW + 30.0
    assert first.started_at == datetime.fromtimestamp(NOW, UTC)
    assert await storage.get_job("t1", "job_002") == first
    second = await storage.claim_job("w1", NOW, POLICY)
    assert second is not None and second.id == "job_003"
    assert await storage.claim_job("w1", NOW, POLICY) is None
    later = await storage.claim_job("w2", NOW + 100, POLICY)
    assert later is not None and later.id == "job_001"


async def test_expired_lease_is_reclaimed(storage: Storage) -> None:
    await storage.insert_job(make_job(1))
    claimed = await storage.claim_job("w1", NOW, POLICY)
    assert claimed is not None
    assert await storage.claim_job("w2", NOW + 10, POLICY) is None  # lease still held
    beat = await storage.heartbeat("job_001", "w1", NOW + 15, POLICY)
    assert beat is not None and beat.lease_expires == NOW + 45  # now + lease
    assert await storage.claim_job("w2", NOW + 40, POLICY) is None  # extended to +45
    again = await storage.claim_job("w2", NOW + 46, POLICY)
    assert again is not None and again.id == "job_001" and again.status == "running"
    assert (again.lease_owner, again.attempts, again.lease_expires) == ("w2", 2, NOW + 76)
    assert again.started_at == claimed.started_at  # set once
    lost = await storage.heartbeat("job_001", "w1", NOW + 50, POLICY)  # not the owner
    assert lost == again and not holds_lease(lost, "w1")
    beat = await storage.heartbeat("job_001", "w2", NOW + 50, POLICY)
    assert beat is not None and holds_lease(beat, "w2") and beat.lease_expires == NOW + 80
    assert await storage.heartbeat("job_404", "w2", NOW + 50, POLICY) is None


async def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(
    storage: Storage,
) -> None:
    """Each run's worker dies (no heartbeat, no report): the job is reclaimed until its
    attempts are spent, then it fails with `job_attempts_exhausted`, never runs again,
    and the queue moves on to the next job."""
    await storage.insert_job(make_job(1))
    runs: list[int] = []
    now = NOW
    while (job := await storage.claim_job(f"w{len(runs)}", now, POLICY)) is not None:
        if job.status != "running":
            break
        runs.append(job.attempts)
        now += POLICY.lease_seconds + 1  # the worker died: its lease runs out
    assert runs == [1, 2, 3]
    assert job is not None and job.id == "job_001" and job.status == "failed"
    assert (job.attempts, job.lease_owner, job.lease_expires) == (3, None, None)
    assert job.error is not None and job.error["code"] == "job_attempts_exhausted"
    assert job.error["type"] == "server_error" and "3 attempt(s)" in job.error["message"]
    assert job.completed_at == datetime.fromtimestamp(now, UTC)
    assert await storage.get_job("t1", "job_001") == job  # stored, not just returned
    assert await storage.claim_job("w9", now + 1000, POLICY) is None  # never again
    await storage.insert_job(make_job(2, run_after=now))
    nxt = await storage.claim_job("w9", now + 1000, POLICY)
    assert nxt is not None and nxt.id == "job_002" and nxt.status == "running"


async def test_every_status_change_stores_one_numbered_event_with_the_job(
    storage: Storage,
) -> None:
    """Job writes add the job's stream events in the same transaction (core/job_events):
    created, claimed, reclaimed after its worker died (heartbeats add nothing), failed."""
    await storage.insert_job(make_job(1))
    now = NOW
    while (job := await storage.claim_job("w", now, POLICY)) is not None:
        await storage.heartbeat("job_001", "w", now + 1, POLICY)
        if job.status != "running":
            break
        now += POLICY.lease_seconds + 2
    head, events = await storage.stream_read("t1", "job_001", -1)
    assert head is not None and head.ended and head.last_seq == 4
    assert [(e.seq, e.event) for e in events] == [
        (0, "job.queued"), (1, "job.running"), (2, "job.running"), (3, "job.running"),
        (4, "job.failed"),
    ]
    last = json.loads(events[-1].data)
    assert (last["attempt"], last["error"]["code"]) == (3, "job_attempts_exhausted")
    assert (await storage.stream_read("t2", "job_001", -1)) == (None, [])  # tenant-scoped
    assert await storage.stream_prune(NOW + 10**9) == 0  # kept as long as the job


async def test_claim_obeys_the_policy_passed_in(storage: Storage) -> None:
    await storage.insert_job(make_job(1))
    one = JobPolicy(lease_seconds=5.0, max_attempts=1)
    first = await storage.claim_job("w1", NOW, one)
    assert first is not None and first.status == "running" and first.lease_expires == NOW + 5
    ended = await storage.claim_job("w2", NOW + 6, one)
    assert ended is not None and ended.status == "failed" and ended.attempts == 1
    assert ended.error is not None and ended.error["code"] == "job_attempts_exhausted"


async def test_claim_ends_a_job_past_its_deadline_instead_of_running_it(
    storage: Storage,
) -> None:
    await storage.insert_job(make_job(1, deadline=NOW + 10))  # queued, deadline passed
    await storage.insert_job(make_job(2, deadline=NOW + 100))  # running, dies, then late
    await storage.insert_job(make_job(3, deadline=NOW + 100))
    queued = await storage.claim_job("w1", NOW + 10, POLICY)  # at the deadline: too late
    assert queued is not None and queued.id == "job_001" and queued.status == "aborted"
    assert queued.attempts == 0 and queued.started_at is None
    assert queued.error is not None and queued.error["code"] == "job_deadline_exceeded"
    running = await storage.claim_job("w1", NOW + 10, POLICY)
    assert running is not None and running.id == "job_002" and running.status == "running"
    three = await storage.claim_job("w1", NOW + 10, POLICY)
    assert three is not None and three.id == "job_003"
    # job_002's worker dies; by the time its lease is dead the deadline has passed too
    late = await storage.claim_job("w2", NOW + 100, POLICY)
    assert late is not None and late.id == "job_002" and late.status == "canceled"
    assert late.attempts == 1 and late.error is not None
    assert late.error["code"] == "job_deadline_exceeded"
    assert await storage.get_job("t1", "job_002") == late


async def test_a_new_run_clears_the_previous_tries_error(storage: Storage) -> None:
    error = {"message": "upstream 503", "type": "server_error", "param": None, "code": "x"}
    await storage.insert_job(make_job(1, attempts=1, error=error, run_after=NOW))
    job = await storage.claim_job("w1", NOW, POLICY)
    assert job is not None and job.status == "running" and job.attempts == 2
    assert job.error is None


async def test_heartbeat_extends_the_lease_and_cancels_the_job_at_its_deadline(
    storage: Storage,
) -> None:
    await storage.insert_job(make_job(1, deadline=NOW + 50))
    await storage.insert_job(make_job(2))
    claimed = await storage.claim_job("w1", NOW, POLICY)
    assert claimed is not None and claimed.id == "job_001"
    beat = await storage.heartbeat("job_001", "w1", NOW + 20, POLICY)
    assert beat is not None and holds_lease(beat, "w1") and beat.lease_expires == NOW + 50
    older = await storage.heartbeat("job_001", "w1", NOW + 10, POLICY)  # clock went back
    assert older is not None and older.lease_expires == NOW + 50  # never shortened
    over = await storage.heartbeat("job_001", "w1", NOW + 50, POLICY)
    assert over is not None and over.status == "canceled" and not holds_lease(over, "w1")
    assert (over.lease_owner, over.lease_expires, over.attempts) == (None, None, 1)
    assert over.error is not None and over.error["code"] == "job_deadline_exceeded"
    assert over.completed_at == datetime.fromtimestamp(NOW + 50, UTC)
    assert await storage.get_job("t1", "job_001") == over
    again = await storage.heartbeat("job_001", "w1", NOW + 60, POLICY)
    assert again == over  # terminal: unchanged
    queued = await storage.heartbeat("job_002", "w1", NOW, POLICY)  # not running: no lease
    assert queued is not None and queued.status == "queued" and not holds_lease(queued, "w1")


async def test_concurrent_claimers_never_double_claim(storage_url: str) -> None:
    stores = [open_storage(storage_url), open_storage(storage_url)]
    for store in stores:
        await store.migrate()
    try:
        for n in range(30):
            await stores[0].insert_job(make_job(n))
        claims: list[tuple[str, str]] = []

        async def worker(store: Storage, name: str) -> None:
            while (job := await store.claim_job(name, NOW, LONG)) is not None:
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
    another connection); the transaction does not happen and the pool keeps working.

    No timed bound: the lock is held until this test lets it go, so a cancel that did not
    reach the statement would wait for ever. The holder's session ends itself after a
    generous `idle_in_transaction_session_timeout` (a hang guard only), which releases
    the lock; the test then fails, as the holder's transaction is gone."""
    store = open_storage(postgres_url)
    await store.migrate()
    try:
        await store.update_state("locked", lambda s: (None, {"count": 0}))
        with psycopg.connect(postgres_url) as other:
            other.execute("SET idle_in_transaction_session_timeout = '120s'")
            other.execute("SELECT data FROM state WHERE scope = 'locked' FOR UPDATE")
            with trio.move_on_after(0.3) as scope:
                await store.update_state("locked", lambda s: (None, {"count": 99}))
            assert scope.cancelled_caught
            # still holding the lock: the cancel came while the statement waited on it
            assert other.execute("SELECT 1").fetchone() == (1,)
            other.rollback()
        for _ in range(12):  # more calls than the pool has connections
            await store.update_state("locked", lambda s: (None, {"count": (s or {})["count"] + 1}))
        assert await store.read_state("locked") == {"count": 12}
        assert await store.health() is True
    finally:
        await store.close()
