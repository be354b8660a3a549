"""Postgres job queries: insert, tenant-scoped reads, claiming with SKIP LOCKED, leases.

Owns: the SQL of the job queue on Postgres (split out of `postgres.py` to keep each
module one decision). Each method runs one transaction through the backend's `run`.

Rules:
- `claim` locks one eligible row with `FOR UPDATE SKIP LOCKED`: concurrent claimers in
  any number of processes never get the same job, and never wait on each other. The
  row's new state is `core.jobs`' (`base.claim_record`), not SQL arithmetic.
- `update` holds the row lock (`FOR UPDATE`) while the caller's function runs (on the
  Trio thread, via `trio.from_thread.run_sync`).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import errors as pg_errors

from adapters.storage import codec, job_events_sql, outbox_sql
from adapters.storage.base import (
    DeliveryFn,
    JobFn,
    claim_record,
    claimable_where,
    heartbeat_fn,
    job_list_query,
)
from adapters.storage.records import DeliveryRecord, JobRecord
from core import jobs as lifecycle
from core import outbox
from core.errors import Conflict

T = TypeVar("T")
Conn = psycopg.Connection[Any]
Run = Callable[[Callable[[Conn], Any]], Awaitable[Any]]

_COLUMNS = codec.columns(JobRecord)
_COLS = ", ".join(_COLUMNS)
_MUTABLE = tuple(c for c in _COLUMNS if c not in ("id", "tenant", "key_id"))


def _write(c: Conn, old: JobRecord, new: JobRecord) -> None:
    """Store `new` over `old` (the same job, locked in this transaction)."""
    if (new.id, new.tenant, new.key_id) != (old.id, old.tenant, old.key_id):
        raise ValueError("update_job may not change a job's id, tenant or key_id")
    if new != old:
        sets = ", ".join(
            f"{col} = %s::jsonb" if col in codec.JSON_FIELDS else f"{col} = %s"
            for col in _MUTABLE
        )
        values = [codec.to_postgres(col, getattr(new, col)) for col in _MUTABLE]
        c.execute(f"UPDATE jobs SET {sets} WHERE id = %s", (*values, old.id))
        outbox_sql.enqueue(c, outbox_sql.POSTGRES, old, new)
        job_events_sql.record(c, "%s", old, new)


def _record(row: tuple[Any, ...] | None) -> JobRecord | None:
    return None if row is None else codec.from_postgres_row(JobRecord, row)


class JobQueries:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def insert(self, rec: JobRecord) -> None:
        marks = ", ".join("%s::jsonb" if c in codec.JSON_FIELDS else "%s" for c in _COLUMNS)
        row = codec.postgres_row(rec)
        sql = f"INSERT INTO jobs ({_COLS}) VALUES ({marks})"
        try:
            def insert(c: Conn) -> None:
                c.execute(sql, row)
                job_events_sql.record(c, "%s", None, rec)
                outbox_sql.POSTGRES.notify(c)  # idle workers wake at commit

            await self._run(insert)
        except pg_errors.UniqueViolation as err:
            raise Conflict(f"A job with id '{rec.id}' already exists") from err

    async def get(self, tenant: str, job_id: str) -> JobRecord | None:
        sql = f"SELECT {_COLS} FROM jobs WHERE tenant = %s AND id = %s"
        return _record(await self._run(lambda c: c.execute(sql, (tenant, job_id)).fetchone()))

    async def list(
        self, tenant: str, status: str | None, limit: int, after: str | None
    ) -> list[JobRecord]:
        sql, args = job_list_query(_COLS, "%s", tenant, status, limit, after)
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [codec.from_postgres_row(JobRecord, r) for r in rows]

    async def claim(
        self, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        sql = (
            f"SELECT {_COLS} FROM jobs WHERE {claimable_where('%s')}"
            " ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
        )

        def apply(c: Conn) -> JobRecord | None:
            old = _record(c.execute(sql, (now, now)).fetchone())
            if old is None:
                return None
            new = claim_record(old, worker, now, policy)  # pure: fine on this thread
            _write(c, old, new)
            return new

        result: JobRecord | None = await self._run(apply)
        return result

    async def update(self, job_id: str, fn: JobFn) -> JobRecord | None:
        def apply(c: Conn) -> JobRecord | None:
            sql = f"SELECT {_COLS} FROM jobs WHERE id = %s FOR UPDATE"
            old = _record(c.execute(sql, (job_id,)).fetchone())
            if old is None:
                return None
            new = trio.from_thread.run_sync(fn, old)
            _write(c, old, new)
            return new

        result: JobRecord | None = await self._run(apply)
        return result

    async def heartbeat(
        self, job_id: str, worker: str, now: float, policy: lifecycle.JobPolicy
    ) -> JobRecord | None:
        return await self.update(job_id, heartbeat_fn(worker, now, policy))

    # -- the webhook outbox ----------------------------------------------------------

    async def claim_delivery(
        self, worker: str, now: float, policy: outbox.DeliveryPolicy
    ) -> DeliveryRecord | None:
        result: DeliveryRecord | None = await self._run(
            lambda c: outbox_sql.claim(c, outbox_sql.POSTGRES, worker, now, policy)
        )
        return result

    async def update_delivery(self, delivery_id: str, fn: DeliveryFn) -> DeliveryRecord | None:
        result: DeliveryRecord | None = await self._run(
            lambda c: outbox_sql.update(c, outbox_sql.POSTGRES, delivery_id, fn)
        )
        return result

    async def webhook_secret(self, tenant: str, fresh: str) -> str:
        result: str = await self._run(
            lambda c: outbox_sql.webhook_secret(c, outbox_sql.POSTGRES, tenant, fresh)
        )
        return result

    async def deliveries_of_job(self, job_id: str) -> builtins.list[DeliveryRecord]:
        result: builtins.list[DeliveryRecord] = await self._run(
            lambda c: outbox_sql.of_job(c, outbox_sql.POSTGRES, job_id)
        )
        return result
