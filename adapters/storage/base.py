"""The `Storage` interface every backend implements (SQLite and Postgres).

Owns: what the rest of the gateway may ask of storage, and the guarantees:

- Atomicity lives in the database. `update_state` and `update_job` run the caller's
  function inside one transaction that holds the row's lock (Postgres `FOR UPDATE`,
  SQLite `BEGIN IMMEDIATE`), so a read-modify-write holds across tasks, pools and
  gateway processes sharing the database. The function must be quick and must not
  await; it runs on the Trio thread (so it may read a Trio clock) while the database
  thread waits for it. Whatever it raises rolls the transaction back and propagates.
- `insert_usage` is idempotent on `request_id`: a retried write never double-bills.
- Job reads are tenant-scoped (`get_job`, `list_jobs`); workers use `claim_job`,
  `update_job` and `heartbeat`, which are not (they act on ids they claimed).
- A unique key (`id` or `prefix` of a key, `id` of a job) inserted twice raises
  `core.errors.Conflict`; a value that cannot be stored exactly raises `ValueError`.
- Driver errors (`sqlite3.Error`, `psycopg.Error`) propagate except in `health()`,
  which answers False instead (and logs why).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from adapters.storage.records import JobRecord, KeyRecord, UsageRecord

T = TypeVar("T")

State = dict[str, Any]
StateFn = Callable[[State | None], tuple[T, State]]
JobFn = Callable[[JobRecord], JobRecord]


class Storage(Protocol):
    async def migrate(self) -> None:
        """Create or upgrade the tables; safe to run from many processes at once."""

    async def close(self) -> None: ...

    async def health(self) -> bool: ...

    # -- keys ------------------------------------------------------------------------
    async def insert_key(self, rec: KeyRecord) -> None: ...

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None: ...

    async def key_by_id(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        """Keys (oldest first), of one tenant or all."""

    async def revoke_key(self, id_or_prefix: str, at: datetime) -> KeyRecord | None:
        """Mark the key revoked at `at` (kept if already revoked); None if no such key."""

    async def count_keys(self) -> int: ...

    # -- usage ledger ----------------------------------------------------------------
    async def insert_usage(self, rec: UsageRecord) -> bool:
        """Write one ledger row; False (and no change) if `request_id` is already there."""

    async def usage_rows(self, tenant: str, start: datetime, end: datetime) -> list[UsageRecord]:
        """The tenant's rows with `start <= at < end`, in time order."""

    async def usage_count(self) -> int: ...

    # -- generic atomic state --------------------------------------------------------
    async def update_state(self, scope: str, fn: StateFn[T]) -> T:
        """Atomically replace the JSON state of `scope` by `fn(state)[1]`; return `[0]`."""

    async def read_state(self, scope: str) -> State | None: ...

    # -- jobs ------------------------------------------------------------------------
    async def insert_job(self, rec: JobRecord) -> None: ...

    async def get_job(self, tenant: str, job_id: str) -> JobRecord | None: ...

    async def list_jobs(
        self, tenant: str, status: str | None, limit: int, after: str | None
    ) -> list[JobRecord]:
        """Newest first; `after` is the id of the last job of the previous page
        (an id the tenant does not have gives an empty page)."""

    async def claim_job(self, worker: str, now: float, lease_seconds: float) -> JobRecord | None:
        """Take the oldest job that is queued with `run_after <= now`, or running with an
        expired lease: status running, lease to `worker` until `now + lease_seconds`,
        attempts + 1, `started_at` set if unset. None when there is nothing to do."""

    async def update_job(self, job_id: str, fn: JobFn) -> JobRecord | None:
        """Atomic read-modify-write of one job (its id cannot change); None if absent."""

    async def heartbeat(self, job_id: str, worker: str, until: float) -> bool:
        """Extend the lease to `until` if `worker` still owns the running job."""

    # -- idempotency records ---------------------------------------------------------
    async def idempotency_get(
        self, tenant: str, key: str, now: datetime | None = None
    ) -> dict[str, Any] | None:
        """The stored value unless expired at `now` (default: the database's clock)."""

    async def idempotency_put(
        self, tenant: str, key: str, value: dict[str, Any], expires_at: datetime
    ) -> None:
        """Store (or replace) the value for (tenant, key)."""
