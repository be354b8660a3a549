"""A job's events, stored in the transaction that writes the job (both backends).

Owns: turning a job write into its event row (`core.job_events` decides which), in the
stored-stream tables of migration 005 (`stream_heads` / `stream_events`, keyed by the job
id; adapters/storage/streams.py does the SQL), so `GET /v1/jobs/{id}/stream` reads them
from any process the way `GET /v1/responses/{id}` reads a response's events.

Rules:
- Called with the caller's connection inside the transaction that inserts or updates
  the job row (which holds the row lock, or SQLite's write lock): the next sequence
  number is the head's `last_seq + 1` read in that transaction, so concurrent writers of
  one job never number two events alike, and an event exists exactly when its change
  committed.
- The head is `ended` once the job is terminal. It is kept as long as the job: its
  `expires_at` is `KEPT` (year 9999), so the stream writer's pruning of response
  buffers never removes it; retention deletes it with its job (adapters/storage/prune.py).
- `updated_at` is the job's latest time (completed, started or created), from the row:
  storage reads no clock.
"""

from __future__ import annotations

from typing import Any

from adapters.storage import streams
from adapters.storage.records import JobRecord
from core import job_events

KEPT = 253402300799.0  # 9999-12-31T23:59:59Z: never pruned with the response buffers


def _seen(job: JobRecord) -> job_events.Seen:
    return job_events.Seen(job.status, job.attempts)


def _last_seq(c: Any, mark: str, job_id: str) -> int:
    row = c.execute(f"SELECT last_seq FROM stream_heads WHERE id = {mark}", (job_id,)).fetchone()
    return -1 if row is None else int(row[0])


def record(c: Any, mark: str, old: JobRecord | None, new: JobRecord) -> str | None:
    """Store the event `old -> new` announces (`old` None: `new` was just inserted); the
    event's name, or None when the change announces nothing."""
    event = job_events.announced(None if old is None else _seen(old), _seen(new))
    if event is None:
        return None
    seq = _last_seq(c, mark, new.id) + 1
    data = job_events.event_data(seq, new.id, _seen(new), new.error)
    at = new.completed_at or new.started_at or new.created_at
    head = streams.StreamHead(
        new.id, new.tenant, job_events.ends(event), seq, at.timestamp(), KEPT
    )
    stored = streams.StoredEvent(seq, event, job_events.encode(data))
    streams.write(c, mark, [streams.StreamWrite(head, (stored,))])
    return event
