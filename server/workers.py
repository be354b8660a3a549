"""Background work: the job workers and webhook deliveries, what wakes them, and the
periodic prune.

Owns: what runs besides request handling, in `umg serve` (unless `--no-workers`) and in
`umg worker` (only this). On Postgres a LISTEN connection (`adapters/wakeup.py`) wakes
idle workers when another process queues work, and their fallback scan (for retries that
come due and leases that expire) runs every `[jobs] listen_poll_seconds`; on SQLite they
scan every `[jobs] poll_seconds`. The periodic prune (`run_prune`, adapters/retention.py)
runs in `umg serve` (with or without workers) and in `umg worker`; its first check
waits `PRUNE_START_SECONDS` (or the interval, if shorter), so a start is not slowed by
it. Cancelling it (shutdown) loses nothing: a running job
keeps its lease until it expires, a pending webhook retry stays in the outbox.
"""

from __future__ import annotations

from functools import partial

import trio

from adapters.retention import run_periodic
from adapters.wakeup import listen
from server.services import Services

PRUNE_START_SECONDS = 60.0


def listens(services: Services) -> bool:
    return services.settings.database_url.startswith(("postgresql://", "postgres://"))


async def run_workers(services: Services) -> None:
    jobs = services.jobs
    if jobs is None:
        return
    async with trio.open_nursery() as nursery:
        if listens(services):
            await nursery.start(partial(listen, services.settings.database_url, jobs.wake))
            jobs.poll_seconds = jobs.deliverer.poll_seconds = services.settings.jobs.listen_poll_seconds
        # with 0 job workers it still runs the webhook deliveries
        nursery.start_soon(jobs.run_workers, max(0, services.settings.jobs.workers))


async def run_prune(services: Services) -> None:
    settings = services.settings
    policy = settings.retention
    if policy.interval_seconds == 0:
        return
    await trio.sleep(min(PRUNE_START_SECONDS, policy.interval_seconds))
    await run_periodic(services.storage, services.clock, policy, settings.idempotency.ttl_seconds)
