"""`umg serve --no-workers` and `umg worker` as real processes on one Postgres database:
a worker killed with SIGKILL mid-job, two worker processes sharing the queue and the
webhook outbox, webhooks checked by a real receiver (Standard Webhooks signature, one
`webhook-id` across retries). Idle workers here scan only every 60 s
(`listen_poll_seconds`), so work is picked up promptly only because LISTEN/NOTIFY woke
them.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from adapters.storage import open_storage
from adapters.storage.outbox_sql import attempt_request_id
from adapters.storage.records import UsageRecord
from core import webhooks
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.test_e2e_jobs import Delivery, Receiver
from tests.server.test_process import ANY_PORT, UMG, Server, clean_env, umg_serve

pytestmark = pytest.mark.postgres
SLOW = {"model": "gpt-4.1", "input": "Hi", "metadata": {"mock_scenario": "latency_ms=4000"}}
FAST = {"model": "gpt-4.1", "input": "Hi"}


def config(tmp_path: Path) -> str:
    path = tmp_path / "workers.toml"
    path.write_text(
        "[jobs]\nworkers = 2\nlease_seconds = 1.5\npoll_seconds = 60\nlisten_poll_seconds = 60\n"
        '[webhooks]\nallow_hosts = ["127.0.0.1"]\nallow_http = true\nretry_delays = [0.3, 0.3]\n'
        "lease_seconds = 5\n"
    )
    return str(path)


async def worker_ready(server: Server) -> None:
    with trio.fail_after(20):
        while "Worker running" not in server.stdout:
            assert server.proc.returncode is None, server.stderr
            await trio.sleep(0.02)


async def rows(url: str) -> list[UsageRecord]:
    storage = open_storage(url)
    try:
        found = await storage.usage_rows(
            "acme", datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
        )
        return [r for r in found if r.endpoint == "jobs"]
    finally:
        await storage.close()


async def until_done(client: httpx.AsyncClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "canceled", "aborted"):
                return job
            await trio.sleep(0.05)


async def test_sigkill_mid_job_and_two_workers_deliver_everything_once(
    postgres_url: str, tmp_path: Path, nursery: trio.Nursery  # noqa: F811
) -> None:
    receiver = Receiver.new([])
    await nursery.start(receiver.run)
    env = {"DATABASE_URL": postgres_url, "MOCK_MODE": "true", "UMG_CONFIG": config(tmp_path)}
    async with umg_serve("serve", "--no-workers", "--port", ANY_PORT, env=env) as api:
        url = await api.started()
        made = await trio.run_process(
            [UMG, "keys", "create", "--tenant", "acme", "--project", "web", "--json"],
            env=clean_env(**env), capture_stdout=True, check=True,
        )  # fmt: skip
        key = json.loads(made.stdout)["key"]
        done = await trio.run_process(
            [UMG, "webhooks", "secret", "--tenant", "acme"], env=clean_env(**env),
            capture_stdout=True, check=True,
        )  # fmt: skip
        secret = done.stdout.decode().strip()
        headers = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            # 1. a worker is killed with SIGKILL in the middle of a job
            async with umg_serve("worker", env=env) as doomed:
                await worker_ready(doomed)
                body = {"request": SLOW, "webhook_url": receiver.url}
                victim = (await client.post("/v1/jobs", json=body)).json()["id"]
                with trio.fail_after(30):  # woken by NOTIFY, well before the 60 s scan
                    while (await client.get(f"/v1/jobs/{victim}")).json()["status"] != "running":
                        await trio.sleep(0.05)
                doomed.proc.send_signal(signal.SIGKILL)
                await doomed.exited(10)
            assert (await client.get(f"/v1/jobs/{victim}")).json()["status"] == "running"

            # 2. two worker processes take over; more jobs, and a receiver that fails
            #    every message's first attempt (the victim's too)
            receiver.fail_first = True
            async with umg_serve("worker", env=env) as a, umg_serve("worker", env=env) as b:
                await worker_ready(a)
                await worker_ready(b)
                others = [
                    (await client.post("/v1/jobs", json={"request": FAST, "webhook_url": receiver.url})).json()["id"]
                    for _ in range(10)
                ]
                # the victim's lease (1.5 s) expires; the scan that reclaims it is the
                # 60 s one, so a new job's NOTIFY is what wakes a worker to claim it
                await trio.sleep(2.0)
                await client.post("/v1/jobs", json={"request": FAST})
                finished = [await until_done(client, j) for j in [victim, *others]]
                got: list[Delivery] = []
                with trio.fail_after(30):
                    while len(got) < 22:  # 11 messages, each failed once then delivered
                        got.append(await receiver.receive.receive())
                with trio.move_on_after(1.0):
                    extra = await receiver.receive.receive()
                    pytest.fail(f"a delivery was made twice: {extra.headers['webhook-id']}")
                await a.stopped()
                await b.stopped()
        await api.stopped()

    assert [j["status"] for j in finished] == ["succeeded"] * 11
    assert finished[0]["attempts"] == 2  # the killed run, then the one that finished
    ids = Counter(d.headers["webhook-id"] for d in got)
    assert ids == Counter({f"msg_{j}_succeeded": 2 for j in [victim, *others]})
    for d in got:
        webhooks.verify(secret, d.headers, d.body, now=int(time.time()))
    by_id: dict[str, set[bytes]] = {}
    for d in got:
        by_id.setdefault(d.headers["webhook-id"], set()).add(d.body)
    assert all(len(bodies) == 1 for bodies in by_id.values())  # the same body on the retry
    ledger = await rows(postgres_url)
    victim_rows = sorted((r.request_id, r.status) for r in ledger if victim[4:] in r.request_id)
    assert victim_rows == [
        (attempt_request_id(victim, 1), "interrupted"), (attempt_request_id(victim, 2), "ok"),
    ]  # fmt: skip
    assert sorted(r.status for r in ledger) == ["interrupted"] + ["ok"] * 12  # + the no-hook job
