"""Following a job's events for `GET /v1/jobs/{id}/stream`, from any process.

Owns: reading a job's stored events (written by storage with each job change:
core/job_events.py, adapters/storage/job_events_sql.py) after a cursor, and then the
rest as they come, until the job's terminal event.

Rules:
- Tenant scoping is the job's: another tenant's job (or an unknown id) is `NotFound`
  (`param` "id"), raised before anything is sent, as `GET /v1/jobs/{id}` answers.
- The cursor is `core.resume`'s: the events with a sequence number greater than it.
- Waiting: woken in this process when its job service changes the job (a claim, a
  finish, a cancel), and polling storage every `poll_seconds` for the changes other
  processes make (a worker elsewhere on Postgres), so a change is seen at most
  `poll_seconds` after it committed. An empty batch means nothing came for `keepalive`
  seconds (the caller sends a keep-alive).
- A job stored before job events existed has no stored events: a finished one is
  followed as one event of its terminal status (sequence number 0); an unfinished one
  gets its events from its next change on.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

from adapters.clock import Clock
from adapters.follow import Snapshot, follow_events
from adapters.jobs import JobService
from adapters.storage.base import Storage
from adapters.storage.records import JobRecord
from adapters.storage.streams import StoredEvent, StreamHead
from core import job_events
from core import jobs as lifecycle


def _without_events(job: JobRecord, after: int) -> Snapshot:
    """A job with no stored events (stored by an older version)."""
    ended = lifecycle.is_terminal(job.status)
    if not ended:
        return StreamHead(job.id, job.tenant, False, -1, 0.0, math.inf), []
    seen = job_events.Seen(job.status, job.attempts)
    data = job_events.encode(job_events.event_data(0, job.id, seen, job.error))
    event = StoredEvent(0, job_events.PREFIX + job.status, data)
    return StreamHead(job.id, job.tenant, True, 0, 0.0, math.inf), [event] if after < 0 else []


class JobEvents:
    def __init__(
        self, storage: Storage, clock: Clock, jobs: JobService, *, poll_seconds: float
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.jobs = jobs
        self.poll_seconds = poll_seconds

    async def read(self, tenant: str, job_id: str, after: int) -> Snapshot:
        """The job's head and its events after `after`; `NotFound` for another tenant's
        job or an id that is no job (a response's stored stream shares the tables)."""
        await self.jobs.get(tenant, job_id)  # NotFound (param "id")
        return await self._events(tenant, job_id, after)

    async def _events(self, tenant: str, job_id: str, after: int) -> Snapshot:
        """(The id is known to be the tenant's job.)"""
        head, events = await self.storage.stream_read(tenant, job_id, after)
        if head is not None:
            return head, events
        return _without_events(await self.jobs.get(tenant, job_id), after)

    def follow(
        self, tenant: str, job_id: str, first: Snapshot, after: int, *, keepalive: float = math.inf
    ) -> AsyncIterator[list[StoredEvent]]:
        """From `first` (what `read(tenant, job_id, after)` gave), the events in batches
        as they come, until the terminal one; `[]` after `keepalive` quiet seconds."""

        async def read(seq: int) -> Snapshot:
            return await self._events(tenant, job_id, seq)

        async def wait(seq: int, until: float) -> None:
            del seq  # any change of the job is worth a read
            await self.jobs.changed(job_id, min(self.poll_seconds, max(0.0, until - self.clock.now())))

        return follow_events(first, after, read=read, wait=wait, clock=self.clock, keepalive=keepalive)


__all__ = ["JobEvents", "Snapshot"]
