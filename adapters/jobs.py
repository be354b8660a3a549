"""Durable async jobs: the job service, what the API asks of it and who it wakes.

Owns: creating, reading, canceling and waiting for jobs, and the events of a job's change
in this process: who waits on a job (`wait`, `changed`, used by `Prefer: wait` and a
job's event stream) is woken when this process changes it, idle job workers when there
is new work, the webhook delivery workers when storage put messages in the outbox. Its
job workers (adapters/job_worker.py: claim, run, heartbeat, finish) run beside the
delivery workers (adapters/webhook_delivery.py) in `run_workers`. What a job row keeps
is adapters/job_records.py's; the lifecycle rules (leases, retries with backoff, cancel,
deadlines) are `core.jobs`'; this module and the workers apply them.

- A job is a stored request (adapters/job_records.py): created from a request the
  caller already parsed (a bad one was refused), for a model the catalog knows.
- Cancel marks the job canceled at once; a worker running it sees that at its next
  heartbeat and cancels the model call (the ledger records what was consumed). A job
  that already succeeded or failed answers `Conflict` (409).
- Webhooks are `adapters/webhook_delivery.py`'s: storage writes a job's messages into the
  outbox in the transaction that changes the job (`core.outbox` says which), and this
  service only wakes the delivery workers it runs beside its job workers.
- Another process's changes are not seen here as they happen: a waiter polls every
  `poll_seconds` (on Postgres, a NOTIFY calls `wake`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

import trio
from attrs import evolve

from adapters.clock import Clock
from adapters.driver import new_id
from adapters.gateway import Gateway
from adapters.job_records import stored_form
from adapters.job_worker import JobWorker
from adapters.observe import Observer
from adapters.outage import Outage
from adapters.storage.base import Storage, job_state, with_state
from adapters.storage.records import JobRecord, KeyRecord
from adapters.wakeup import Wakeup
from adapters.webhook_delivery import Deliverer
from core import jobs as lifecycle
from core.errors import Conflict, NotFound
from core.model import GatewayRequest

log = logging.getLogger("umg.jobs")


class JobService:
    def __init__(
        self,
        storage: Storage,
        gateway: Gateway,
        clock: Clock,
        *,
        deliverer: Deliverer,
        policy: lifecycle.JobPolicy | None = None,
        poll_seconds: float = 0.5,
        delivery_workers: int = 2,
        outage: Outage | None = None,
    ) -> None:
        self.storage = storage
        self.gateway = gateway
        self.clock = clock
        self.deliverer = deliverer
        self.policy = policy or lifecycle.JobPolicy()
        self.poll_seconds = poll_seconds
        self.delivery_workers = delivery_workers
        # one line when the database goes away, one when it is back; shared with the
        # delivery workers (adapters/outage.py)
        self.outage = outage or Outage(clock, log, base=poll_seconds)
        deliverer.outage = self.outage
        self._changed: dict[str, trio.Event] = {}
        self.wakeup = Wakeup(clock)  # idle job workers wait on it
        self.observer: Observer | None = None  # told of job runs (deliveries: Deliverer.observer)

    # -- API side ----------------------------------------------------------------------

    async def create(
        self, key: KeyRecord, request: GatewayRequest, body: dict[str, Any],
        webhook_url: str | None, trace: Mapping[str, str] | None = None, *,
        events: tuple[str, ...] | None = None, deadline: float | None = None,
    ) -> JobRecord:
        """Store `request` (already parsed: a bad one was refused by the caller) with the
        JSON `body` it came as, and `trace`, the creating request's trace context."""
        self.gateway.catalog.resolve(request.model)  # an unknown model: 404 model_not_found
        now = self.clock.epoch()
        job = JobRecord(
            id=new_id("job"),
            tenant=key.tenant,
            project=key.project,
            key_id=key.id,
            request=stored_form(body, request, trace),
            status="queued",
            attempts=0,
            run_after=now,
            lease_owner=None,
            lease_expires=None,
            deadline=deadline,
            cancel_requested=False,
            result=None,
            error=None,
            cost=None,
            webhook_url=webhook_url,
            created_at=self.clock.wall(),
            started_at=None,
            completed_at=None,
            webhook_events_filter=events,
        )
        await self.storage.insert_job(job)
        self.wakeup.set()
        return job

    async def get(self, tenant: str, job_id: str) -> JobRecord:
        job = await self.storage.get_job(tenant, job_id)
        if job is None:
            raise NotFound(f"No job '{job_id}'", param="id")
        return job

    async def cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Cancel a queued or running job; canceling a canceled job again is a no-op that
        answers the job, but a job that already succeeded or failed raises `Conflict`."""
        now = self.clock.epoch()
        asked: list[lifecycle.JobAction] = []

        def apply(job: JobRecord) -> JobRecord:
            state, actions = lifecycle.step(job_state(job), lifecycle.Cancel(), now, self.policy)
            asked[:] = actions
            done = job.completed_at or (self.clock.wall() if state.status == "canceled" else None)
            return evolve(with_state(job, state), completed_at=done)

        await self.get(tenant, job_id)  # another tenant's job is a 404, not a cancel
        job = await self.storage.update_job(job_id, apply)
        assert job is not None
        if job.status in ("succeeded", "failed"):
            raise Conflict(f"Job '{job_id}' already {job.status}; it can no longer be canceled",
                           param="id")
        self.notify(job)
        self.perform(asked)
        return job

    async def wait(self, tenant: str, job_id: str, seconds: float) -> JobRecord:
        """The job once terminal, or as it is after `seconds`."""
        job = await self.get(tenant, job_id)
        with trio.move_on_after(seconds):
            while not lifecycle.is_terminal(job.status):
                await self.changed(job_id, self.poll_seconds)
                job = await self.get(tenant, job_id)
        return job

    async def changed(self, job_id: str, seconds: float) -> None:
        """Until this process changes the job (claim, finish, cancel), at most `seconds`."""
        event = self._changed.setdefault(job_id, trio.Event())
        with trio.move_on_after(seconds):
            await event.wait()
        if self._changed.get(job_id) is event and not event.statistics().tasks_waiting:
            del self._changed[job_id]  # nobody waits on it now: not kept for a remote job

    # -- what a change in this process wakes ----------------------------------------------

    def wake(self) -> None:
        """Wake idle job and delivery workers (new work may be there: a NOTIFY came)."""
        self.wakeup.set()
        self.deliverer.wakeup.set()

    def notify(self, job: JobRecord) -> None:
        """This process changed `job`: wake whoever waits on it here."""
        event = self._changed.pop(job.id, None)
        if event is not None:
            event.set()

    def perform(self, actions: list[lifecycle.JobAction]) -> None:
        """What the machine asked for once the row is stored (a run is started by a
        worker, from the claimed row)."""
        if any(isinstance(action, lifecycle.Announce) for action in actions):
            self.deliverer.wakeup.set()  # storage put its messages in the outbox

    def ended(self, job: JobRecord) -> None:
        """A worker stored `job`'s end of a run (or of the job)."""
        self.notify(job)
        if lifecycle.is_terminal(job.status):
            self.deliverer.wakeup.set()  # storage put its messages in the outbox

    # -- workers -----------------------------------------------------------------------

    async def run_workers(self, count: int) -> None:
        """Run `count` job workers and the webhook delivery workers until cancelled.
        Cancelling (shutdown) loses nothing: a running job keeps its lease until it
        expires, a pending webhook retry stays in the outbox."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.deliverer.run, self.delivery_workers)
            for n in range(count):
                nursery.start_soon(JobWorker(self, f"w{n}-{secrets.token_hex(4)}").run)
