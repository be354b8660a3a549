"""Webhook delivery from the outbox: real storage (SQLite, and Postgres where it matters),
the receiver an httpx MockTransport (the end-to-end tests use a real local receiver).

- The retry schedule runs on Trio's autojump clock: one task drives `deliver_one` and
  sleeps until each row's `next_at`, so every attempt's time is exact.
- Two "processes" (two Postgres storages with their own pools, each with several
  delivery workers) on one database never make the same attempt twice.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
from attrs import evolve

from adapters.clock import Clock
from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.storage.records import DeliveryRecord, JobRecord
from adapters.webhook_delivery import Deliverer
from core import outbox, webhook_targets, webhooks

SECRET_TENANT = "t1"
FAKE_RECEIVER = webhook_targets.TargetPolicy(allow_hosts=frozenset({"receiver.test"}), allow_http=True)


def a_job(job_id: str, url: str | None, events: tuple[str, ...] | None = None) -> JobRecord:
    return JobRecord(
        id=job_id, tenant=SECRET_TENANT, project="p1", key_id="key_1",
        request={"model": "gpt-4.1", "input": "hi"}, status="queued", attempts=0,
        run_after=0.0, lease_owner=None, lease_expires=None, deadline=None,
        cancel_requested=False, result=None, error=None, cost=None, webhook_url=url,
        created_at=datetime.now(UTC), started_at=None, completed_at=None,
        webhook_events_filter=events,
    )  # fmt: skip


def finished(job: JobRecord) -> JobRecord:
    now = datetime.now(UTC)
    return evolve(job, status="succeeded", attempts=1, started_at=now, completed_at=now,
                  result={"text": "ok"}, cost=Decimal("0.01"))  # fmt: skip


async def finished_job(storage: Storage, job_id: str, url: str) -> None:
    await storage.insert_job(a_job(job_id, url))
    await storage.update_job(job_id, finished)


def render(job: JobRecord) -> dict[str, Any]:
    return {"id": job.id, "status": job.status}


def deliverer(storage: Storage, http: httpx.AsyncClient, **extra: Any) -> Deliverer:
    return Deliverer(storage, Clock(), http, render=render, targets=FAKE_RECEIVER, **extra)


async def drive(d: Deliverer, storage: Storage, job_id: str) -> DeliveryRecord:
    """Attempt the job's one delivery until it ends, sleeping to each `next_at`."""
    while True:
        (rec,) = await storage.deliveries_of_job(job_id)
        if rec.status in outbox.TERMINAL:
            return rec
        wait = rec.next_at - d.clock.epoch()
        if wait > 0:
            await trio.sleep(wait)
        await d.deliver_one("w1")


@pytest.fixture
async def sqlite(tmp_path: Any) -> Any:
    store = open_storage(f"sqlite:///{tmp_path}/outbox.db")
    await store.migrate()
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("answers", "attempts", "status"),
    [
        ([500] * 10, 1 + len(webhooks.RETRY_DELAYS), "given_up"),  # the whole schedule
        ([500, 429, 204], 3, "delivered"),  # a 2xx ends it
        ([502, 410], 2, "gone"),  # 410 Gone: the receiver asked us to stop
        (["connect", 200], 2, "delivered"),  # a transport error is retried too
        ([307, 200], 2, "delivered"),  # a redirect is not followed: it is a failure
    ],
)
async def test_retries_follow_the_schedule_with_one_webhook_id_and_one_body(
    autojump_clock: trio.testing.MockClock, sqlite: Storage, answers: list[Any], attempts: int,
    status: str,
) -> None:
    del autojump_clock
    seen: list[tuple[float, httpx.Request]] = []
    pending = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((trio.current_time(), request))
        answer = pending.pop(0)
        if answer == "connect":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(int(answer), headers={"location": "http://127.0.0.1/x"})

    await finished_job(sqlite, "job_a", "http://receiver.test/hook")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        d = deliverer(sqlite, http)
        secret = await d.secret(SECRET_TENANT)
        start = trio.current_time()
        rec = await drive(d, sqlite, "job_a")

    assert (rec.status, rec.attempts, len(seen)) == (status, attempts, attempts)
    expected = [0.0]
    for delay in webhooks.RETRY_DELAYS[: attempts - 1]:
        expected.append(expected[-1] + delay)
    assert [round(at - start, 3) for at, _ in seen] == expected
    assert {r.content for _, r in seen} == {b'{"id":"job_a","status":"succeeded"}'}
    for at, request in seen:
        assert str(request.url) == "http://receiver.test/hook"  # never the redirect target
        assert request.headers["webhook-id"] == "msg_job_a_succeeded"
        now = int(d.clock.epoch() - (trio.current_time() - at))
        webhooks.verify(secret, request.headers, request.content, now=now, tolerance=1)


@pytest.mark.parametrize("internal", ["169.254.169.254", "10.0.0.1", "::1", "100.64.0.1"])
async def test_every_resolved_address_is_checked_before_any_connect(
    sqlite: Storage, internal: str
) -> None:
    sent: list[httpx.Request] = []

    async def mixed(host: str, port: int) -> list[webhook_targets.Address]:
        return [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address(internal)]

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    await finished_job(sqlite, "job_b", "https://hooks.example.com/h")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        d = Deliverer(sqlite, Clock(), http, render=render, resolver=mixed)
        rec = await drive(d, sqlite, "job_b")
    assert sent == [] and (rec.status, rec.attempts) == ("refused", 1)  # never retried
    assert rec.last_error is not None and "address" in rec.last_error


async def test_delivery_is_pinned_to_the_checked_address_and_rebinding_is_refused(
    autojump_clock: trio.testing.MockClock, sqlite: Storage
) -> None:
    """The request goes to the checked address (Host header and TLS SNI name the host);
    a redirect is not followed; when the retry's resolution answers an internal address
    (DNS rebinding), the delivery stops there."""
    del autojump_clock
    answers = [[ipaddress.ip_address("93.184.215.14")], [ipaddress.ip_address("127.0.0.1")]]
    sent: list[httpx.Request] = []

    async def rebinding(host: str, port: int) -> list[webhook_targets.Address]:
        assert (host, port) == ("hooks.example.com", 8443)
        return answers.pop(0)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(307, headers={"location": "http://127.0.0.1/steal"})

    await finished_job(sqlite, "job_c", "https://Hooks.Example.com:8443/h?x=1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        d = Deliverer(sqlite, Clock(), http, render=render, resolver=rebinding)
        rec = await drive(d, sqlite, "job_c")
    assert answers == [] and (rec.status, rec.attempts) == ("refused", 2)
    (only,) = sent
    assert str(only.url) == "https://93.184.215.14:8443/h?x=1"
    assert only.headers["host"] == "hooks.example.com:8443"
    assert only.extensions["sni_hostname"] == "hooks.example.com"


async def test_a_host_that_does_not_resolve_is_retried(
    autojump_clock: trio.testing.MockClock, sqlite: Storage
) -> None:
    del autojump_clock
    calls = 0

    async def flaky(host: str, port: int) -> list[webhook_targets.Address]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("temporary failure in name resolution")
        return [ipaddress.ip_address("93.184.215.14")]

    await finished_job(sqlite, "job_d", "https://hooks.example.com/h")
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    async with httpx.AsyncClient(transport=transport) as http:
        rec = await drive(Deliverer(sqlite, Clock(), http, render=render, resolver=flaky), sqlite, "job_d")
    assert (rec.status, rec.attempts, calls) == ("delivered", 2, 2)


# ---- the outbox in storage (both backends) ------------------------------------------------


async def test_a_message_is_enqueued_once_per_event_with_the_filter(storage: Storage) -> None:
    await storage.insert_job(a_job("job_e", "https://h.example/x", ("start", "completed")))
    assert await storage.deliveries_of_job("job_e") == []  # queued: nothing to say yet

    def started(job: JobRecord) -> JobRecord:
        return evolve(job, status="running", attempts=1, lease_owner="w", lease_expires=1e12,
                      started_at=datetime.now(UTC))  # fmt: skip

    await storage.update_job("job_e", started)
    await storage.update_job("job_e", lambda j: evolve(j, lease_expires=2e12))  # a heartbeat
    await storage.update_job("job_e", lambda j: evolve(finished(j), lease_owner=None, lease_expires=None))
    await storage.update_job("job_e", lambda j: evolve(j, cost=Decimal("0.02")))  # a late write
    rows = await storage.deliveries_of_job("job_e")
    assert sorted((r.id, r.event, r.status, r.attempts) for r in rows) == [
        ("msg_job_e_start", "start", "pending", 0),
        ("msg_job_e_succeeded", "completed", "pending", 0),
    ]
    await storage.insert_job(a_job("job_f", None))
    await storage.update_job("job_f", finished)
    assert await storage.deliveries_of_job("job_f") == []  # no webhook, no message


async def test_a_dead_senders_delivery_is_reclaimed_after_its_lease(storage: Storage) -> None:
    await finished_job(storage, "job_g", "https://h.example/x")
    policy = outbox.DeliveryPolicy(lease_seconds=60.0)
    now = 1_000.0
    first = await storage.claim_delivery("dead", now, policy)
    assert first is not None and (first.lease_owner, first.attempts) == ("dead", 1)
    assert await storage.claim_delivery("b", now + 59.0, policy) is None  # the lease is live
    taken = await storage.claim_delivery("b", now + 61.0, policy)
    assert taken is not None and (taken.lease_owner, taken.attempts) == ("b", 2)
    assert taken.last_error == outbox.LEASE_EXPIRED


async def test_the_secret_is_created_once_per_tenant(storage: Storage) -> None:
    first = await storage.webhook_secret("t1", "whsec_AAAA")
    assert first == "whsec_AAAA" == await storage.webhook_secret("t1", "whsec_BBBB")
    assert await storage.webhook_secret("t2", "whsec_CCCC") == "whsec_CCCC"


@pytest.mark.postgres
async def test_two_processes_never_make_the_same_attempt_twice(postgres_url: str) -> None:
    """Two storages (each its own pool, as two processes), four workers each, 30 messages
    whose receiver fails each one's first attempt: every message arrives exactly twice
    (attempt 1, then its retry), never more."""
    stores = [open_storage(postgres_url) for _ in range(2)]
    await stores[0].migrate()
    got: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        msg = request.headers["webhook-id"]
        got[msg] = got.get(msg, 0) + 1
        return httpx.Response(503 if got[msg] == 1 else 204)

    try:
        for n in range(30):
            await finished_job(stores[0], f"job_{n}", "http://receiver.test/hook")
        policy = outbox.DeliveryPolicy(retry_delays=(0.0,))
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            workers = [deliverer(s, http, policy=policy, poll_seconds=0.02) for s in stores]
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for w in workers:
                        nursery.start_soon(w.run, 4)
                    while sum(got.values()) < 60 or not await all_delivered(stores[1], 30):
                        await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
        assert got == {f"msg_job_{n}_succeeded": 2 for n in range(30)}
    finally:
        for s in stores:
            await s.close()


async def all_delivered(storage: Storage, count: int) -> bool:
    for n in range(count):
        (rec,) = await storage.deliveries_of_job(f"job_{n}")
        if rec.status != "delivered" or rec.attempts != 2:
            return False
    return True
