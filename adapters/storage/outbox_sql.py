"""The outbox's SQL, shared by both backends: what a job write adds, and delivery claims.

Owns: the statements that run inside a backend's transaction (the caller's connection,
the caller's transaction), so a job's change and the messages it implies commit together:
- `enqueue`: after a job row is written, one outbox row per message `core.outbox`
  says the change announces (`INSERT ... ON CONFLICT DO NOTHING` on the message id, so a
  message is enqueued once however many writers see the change). The row is due at once
  (`next_at` 0) and its body is left to the first attempt.
- `claim` / `update`: a delivery's transition (`core.outbox.step`) applied to the locked
  row; on Postgres the claim is `FOR UPDATE SKIP LOCKED`, so concurrent claimers in any
  number of processes never get the same delivery.
- Postgres also sends `NOTIFY umg_work` in the transaction that enqueues work, so idle
  workers in other processes wake when it commits (`adapters/wakeup.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from attrs import evolve, frozen

from adapters.storage import codec
from adapters.storage.base import DeliveryFn
from adapters.storage.records import DeliveryRecord, JobRecord, UsageRecord
from core import outbox

CHANNEL = "umg_work"

_COLUMNS = codec.columns(DeliveryRecord)
_COLS = ", ".join(_COLUMNS)
_MUTABLE = tuple(c for c in _COLUMNS if c not in ("id", "tenant", "job_id", "event", "url"))
_USAGE = codec.columns(UsageRecord)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


@frozen
class Dialect:
    mark: str  # the driver's placeholder
    postgres: bool

    def value(self, name: str, value: Any) -> Any:
        return codec.to_postgres(name, value) if self.postgres else codec.to_sqlite(name, value)

    def marks(self, cols: tuple[str, ...]) -> str:
        cast = "::jsonb" if self.postgres else ""
        return ", ".join(f"{self.mark}{cast}" if c in codec.JSON_FIELDS else self.mark for c in cols)

    def delivery(self, row: tuple[Any, ...] | None) -> DeliveryRecord | None:
        if row is None:
            return None
        if self.postgres:
            return codec.from_postgres_row(DeliveryRecord, row)
        return codec.from_sqlite_row(DeliveryRecord, row)

    def notify(self, c: Conn) -> None:
        if self.postgres:
            c.execute(f"SELECT pg_notify('{CHANNEL}', '')")


SQLITE = Dialect("?", postgres=False)
POSTGRES = Dialect("%s", postgres=True)


def attempt_request_id(job_id: str, attempt: int) -> str:
    """The request id (and so the ledger row) of a job's `attempt`-th run."""
    return f"req_{job_id.removeprefix('job_')}_{attempt}"


def _model(job: JobRecord) -> str:
    body = job.request.get("body", job.request)
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def interrupted_row(job: JobRecord, attempt: int, at: datetime) -> UsageRecord:
    """The ledger row of a job's `attempt` lost with its worker: nothing billed (what it
    consumed upstream is unknown), under that attempt's request id."""
    request_id = attempt_request_id(job.id, attempt)
    return UsageRecord(
        id=f"use_{request_id.removeprefix('req_')}_lost", request_id=request_id, at=at,
        tenant=job.tenant, project=job.project, key_id=job.key_id, endpoint="jobs",
        model=_model(job), provider=None, deployment=None, input_tokens=0, output_tokens=0,
        cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0, cost=Decimal(0),
        price_version=None, status="interrupted", error_code="worker_lost", latency_ms=None,
        ttft_ms=None, attempts=0, stream=False,
    )  # fmt: skip


def _change(old: JobRecord, new: JobRecord) -> outbox.JobChange:
    return outbox.JobChange(
        status_before=old.status, status_after=new.status,
        started_before=old.started_at is not None, started_after=new.started_at is not None,
        result_before=old.result is not None, result_after=new.result is not None,
    )  # fmt: skip


def enqueue(c: Conn, d: Dialect, old: JobRecord, new: JobRecord) -> int:
    """The messages `old -> new` announces, into the outbox; how many were new."""
    if new.webhook_url is None:
        return 0
    added = 0
    at = new.completed_at or new.started_at or new.created_at
    for event in outbox.announced(_change(old, new), new.webhook_events_filter):
        rec = DeliveryRecord(
            id=outbox.message_id(new.id, event, new.status), tenant=new.tenant, job_id=new.id,
            event=event, url=new.webhook_url, body=None, status="pending", attempts=0,
            next_at=0.0, lease_owner=None, lease_expires=None, last_error=None,
            created_at=at, finished_at=None,
        )  # fmt: skip
        values = tuple(d.value(n, getattr(rec, n)) for n in _COLUMNS)
        sql = f"INSERT INTO webhook_deliveries ({_COLS}) VALUES ({d.marks(_COLUMNS)}) ON CONFLICT DO NOTHING"
        added += c.execute(sql, values).rowcount
    if added:
        d.notify(c)
    return added


# ---- deliveries -------------------------------------------------------------------------


def state(rec: DeliveryRecord) -> outbox.DeliveryState:
    return outbox.DeliveryState(
        status=rec.status,  # type: ignore[arg-type]
        attempts=rec.attempts, next_at=rec.next_at, lease_owner=rec.lease_owner,
        lease_expires=rec.lease_expires, last_error=rec.last_error,
    )  # fmt: skip


def with_state(rec: DeliveryRecord, new: outbox.DeliveryState, now: float) -> DeliveryRecord:
    finished = rec.finished_at
    if new.status in outbox.TERMINAL and finished is None:
        finished = datetime.fromtimestamp(now, UTC)
    return evolve(
        rec, status=new.status, attempts=new.attempts, next_at=new.next_at,
        lease_owner=new.lease_owner, lease_expires=new.lease_expires,
        last_error=new.last_error, finished_at=finished,
    )  # fmt: skip


def _write(c: Conn, d: Dialect, old: DeliveryRecord, new: DeliveryRecord) -> None:
    if (new.id, new.tenant, new.job_id) != (old.id, old.tenant, old.job_id):
        raise ValueError("a delivery's id, tenant and job cannot change")
    if new != old:
        sets = ", ".join(f"{col} = {d.mark}" for col in _MUTABLE)
        values = [d.value(col, getattr(new, col)) for col in _MUTABLE]
        c.execute(f"UPDATE webhook_deliveries SET {sets} WHERE id = {d.mark}", (*values, old.id))


def claim(
    c: Conn, d: Dialect, worker: str, now: float, policy: outbox.DeliveryPolicy
) -> DeliveryRecord | None:
    """Claim the most overdue delivery for `worker`: sending (leased), or given up when a
    dead sender spent its last attempt (returned too: the caller claims again)."""
    lock = " FOR UPDATE SKIP LOCKED" if d.postgres else ""
    sql = (
        f"SELECT {_COLS} FROM webhook_deliveries WHERE (status = 'pending' AND next_at <= {d.mark})"
        f" OR (status = 'sending' AND lease_expires < {d.mark})"
        f" ORDER BY next_at, id LIMIT 1{lock}"
    )
    old = d.delivery(c.execute(sql, (now, now)).fetchone())
    if old is None:
        return None
    new = with_state(old, outbox.step(state(old), outbox.Claim(worker), now, policy), now)
    _write(c, d, old, new)
    return new


def update(c: Conn, d: Dialect, delivery_id: str, fn: DeliveryFn) -> DeliveryRecord | None:
    """Apply `fn` (pure: it runs in the database thread) to the locked row."""
    lock = " FOR UPDATE" if d.postgres else ""
    sql = f"SELECT {_COLS} FROM webhook_deliveries WHERE id = {d.mark}{lock}"
    old = d.delivery(c.execute(sql, (delivery_id,)).fetchone())
    if old is None:
        return None
    new = fn(old)
    _write(c, d, old, new)
    return new


def of_job(c: Conn, d: Dialect, job_id: str) -> list[DeliveryRecord]:
    sql = f"SELECT {_COLS} FROM webhook_deliveries WHERE job_id = {d.mark} ORDER BY created_at, id"
    rows = c.execute(sql, (job_id,)).fetchall()
    return [r for r in (d.delivery(row) for row in rows) if r is not None]


def webhook_secret(c: Conn, d: Dialect, tenant: str, fresh: str) -> str:
    """The tenant's signing secret; `fresh` becomes it when the tenant has none yet."""
    m = d.mark
    c.execute(
        f"INSERT INTO webhook_secrets (tenant, secret) VALUES ({m}, {m}) ON CONFLICT DO NOTHING",
        (tenant, fresh),
    )
    row = c.execute(f"SELECT secret FROM webhook_secrets WHERE tenant = {m}", (tenant,)).fetchone()
    return str(row[0])
