"""A job's event stream: which event a change of a job announces, and what it says.

Owns: the events of `GET /v1/jobs/{id}/stream`, as a pure function of the job before and
after one write (`announced`), and the event's data (`event_data`). Storage calls it in
the transaction that writes the job (adapters/storage/job_events_sql.py), so every event
is stored exactly when its change commits, whichever process made it.

Rules:
- An event is named after the job's new status: `job.queued`, `job.running`,
  `job.succeeded`, `job.failed`, `job.canceled`, `job.aborted`.
- A new job announces `job.queued`. A write that changes the status announces the new
  status (a retry going back to the queue is a second `job.queued`, carrying the failed
  run's error). A reclaim (a running job whose lease expired, claimed again by another
  worker: still running, one more attempt) announces `job.running` again. Anything else
  (a heartbeat, the cost of a stopped run added later) announces nothing.
- So `job.running` comes once per run started: their count is the job's `attempts`.
- The event of a terminal status is the stream's last: nothing follows it (terminal jobs
  never change status).
- Events are numbered 0, 1, 2, ... per job (the SSE `id:`); the data carries the same
  number as `sequence_number`, the job id, the status, the attempt and the job's error
  (`None` while it has none).
- A job's run is collected, not streamed, so there are no output deltas: the result
  comes with the terminal event (the route adds the job object to it).
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from core.jobs import TERMINAL

PREFIX = "job."


@frozen
class Seen:
    """What of a job the events follow."""

    status: str
    attempts: int


def announced(before: Seen | None, after: Seen) -> str | None:
    """The event name `before -> after` announces (`before` None: the job is new)."""
    if before is None or before.status != after.status:
        return PREFIX + after.status
    if after.status == "running" and after.attempts != before.attempts:
        return PREFIX + "running"  # reclaimed: a new run under another worker
    return None


def ends(event: str) -> bool:
    """Whether `event` is a stream's last (a terminal status)."""
    return event.removeprefix(PREFIX) in TERMINAL


def event_data(
    seq: int, job_id: str, after: Seen, error: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "type": PREFIX + after.status,
        "sequence_number": seq,
        "job_id": job_id,
        "status": after.status,
        "attempt": after.attempts,
        "error": error,
    }


def encode(data: dict[str, Any]) -> str:
    """An event's data text (compact JSON, as stored and sent)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


__all__ = ["PREFIX", "Seen", "announced", "encode", "ends", "event_data"]
