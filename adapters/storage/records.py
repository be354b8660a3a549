"""What storage keeps: API keys, budgets, ledger rows, jobs and webhook deliveries, as frozen values.

Owns: the record shapes every backend reads and writes. Field names are column names
(the backends build their SQL from `attrs.fields`), so renaming a field is a migration.

Rules:
- Money is `Decimal` (at most 10 decimal places, below 1e20; see `codec.money`).
- Datetimes are timezone-aware and come back from storage in UTC.
- Job times that the lifecycle machine compares (`run_after`, `lease_expires`,
  `deadline`) are epoch seconds as floats; timestamps for people are datetimes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from attrs import field, frozen


def _names(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _entries(value: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    return tuple(value)  # a typed `tuple`: mypy cannot solve the builtin as a converter


@frozen
class KeyRecord:
    id: str
    prefix: str
    secret_hash: str  # sha256 hex of the whole key; the key itself is never stored
    tenant: str
    project: str
    name: str | None
    rpm: int | None
    tpm: int | None
    budget_usd: Decimal | None
    budget_period: str  # "month" | "day" | "total"
    created_at: datetime
    revoked_at: datetime | None
    admin: bool = False  # manages every tenant (admin API, console); else reads its own


@frozen
class BudgetRecord:
    """A spending limit for a whole project or a whole tenant (`project` "": the tenant).

    Unique per (tenant, project). Its spending lives in `state` rows per period, like a
    key's (adapters/budgets.py names them)."""

    tenant: str
    project: str  # "" for the tenant's own budget
    budget_usd: Decimal
    budget_period: str  # "month" | "day" | "total"
    updated_at: datetime


@frozen
class UsageRecord:
    """One ledger row per gateway request; `request_id` is unique (writes are idempotent)."""

    id: str
    request_id: str
    at: datetime
    tenant: str
    project: str
    key_id: str
    endpoint: str
    model: str
    provider: str | None
    deployment: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost: Decimal
    price_version: str | None
    status: str  # "ok", "error", "canceled", "client_closed", ...
    error_code: str | None
    latency_ms: int | None
    ttft_ms: int | None
    attempts: int
    stream: bool
    # one {"deployment", "provider", "attempt", "outcome"} object per provider attempt
    attempt_log: tuple[dict[str, Any], ...] = field(default=(), converter=_entries)
    # the client's own `x-request-id` (server/requestid.py: validated), when it sent one
    client_request_id: str | None = None


@frozen
class JobRecord:
    id: str
    tenant: str
    project: str
    key_id: str
    request: dict[str, Any]
    status: str
    attempts: int
    run_after: float
    lease_owner: str | None
    lease_expires: float | None
    deadline: float | None
    cancel_requested: bool
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    cost: Decimal | None
    webhook_url: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    # the webhook events wanted ("start", "output", "completed"); None: completed only
    webhook_events_filter: tuple[str, ...] | None = field(default=None, converter=_names)


@frozen
class DeliveryRecord:
    """One webhook message in the outbox (`core.outbox`): `id` is its `webhook-id`.

    `body` is the JSON sent, fixed at the first attempt (every retry sends the same
    bytes); `next_at` and `lease_expires` are epoch seconds like the job times."""

    id: str
    tenant: str
    job_id: str
    event: str  # "start" | "output" | "completed"
    url: str
    body: str | None
    status: str  # core.outbox statuses
    attempts: int
    next_at: float
    lease_owner: str | None
    lease_expires: float | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
