"""`[jobs]`: the background job workers of a process.

Owns: `JobSettings` and reading it from `[jobs]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen


@frozen
class JobSettings:
    workers: int = 4
    lease_seconds: float = 30.0
    max_attempts: int = 3
    # idle workers are woken in process when this process queues work (SQLite: all of
    # it); this is their fallback scan there (leases of workers that died)
    poll_seconds: float = 5.0
    # on Postgres idle workers wake on LISTEN/NOTIFY; this is their fallback scan (retries
    # coming due, expired leases)
    listen_poll_seconds: float = 5.0


def read_jobs(file_cfg: Mapping[str, Any]) -> JobSettings:
    """`[jobs]`; a bad value raises TypeError or ValueError (`load_settings` makes it a
    `ConfigError`)."""
    jobs = file_cfg.get("jobs", {})
    return JobSettings(
        workers=int(jobs.get("workers", 4)),
        lease_seconds=float(jobs.get("lease_seconds", 30.0)),
        max_attempts=int(jobs.get("max_attempts", 3)),
        poll_seconds=float(jobs.get("poll_seconds", 5.0)),
        listen_poll_seconds=float(jobs.get("listen_poll_seconds", 5.0)),
    )
