"""Key management and what an operator may see: the admin side of the gateway.

Owns: minting keys (shared by `umg keys create`, the dev key of `umg serve` and
`POST /v1/admin/keys`), how a key, its spend and a ledger row are shown (never the
secret or its hash), each deployment's health as the console shows it, and the audit
line every admin action writes.

Rules:
- The plain key exists once: `create_key` returns it beside the record and it is shown
  once by the caller; `key_view` has no field that could carry it.
- A key's spend is its budget state for the current period (`Limits.key_budget`),
  the number the gateway enforces, not a re-count of the ledger.
- Audit lines go to the `umg.admin` logger as JSON with `action`, `actor` (the admin
  key's id), `target` and the changed fields; never a key, a hash or a prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from adapters import keys
from adapters.clock import Clock
from adapters.gateway import new_id
from adapters.health_book import HealthBook
from adapters.limits import Limits
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord, UsageRecord
from core import health
from core.billing import format_usd
from core.budget import BudgetState
from core.catalog import Catalog

audit_log = logging.getLogger("umg.admin")


async def create_key(
    storage: Storage,
    clock: Clock,
    *,
    tenant: str,
    project: str,
    name: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_usd: Decimal | None = None,
    budget_period: str = "month",
    admin: bool = False,
) -> tuple[str, KeyRecord]:
    """A new key, stored: (the plain key, shown once; its record)."""
    plain, prefix, digest = keys.mint()
    record = KeyRecord(
        id=new_id("key"),
        prefix=prefix,
        secret_hash=digest,
        tenant=tenant,
        project=project,
        name=name,
        rpm=rpm,
        tpm=tpm,
        budget_usd=budget_usd,
        budget_period=budget_period,
        created_at=clock.wall(),
        revoked_at=None,
        admin=admin,
    )
    await storage.insert_key(record)
    return plain, record


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def key_view(record: KeyRecord) -> dict[str, Any]:
    """A key as listings show it: everything but the secret and its hash."""
    return {
        "object": "key",
        "id": record.id,
        "prefix": record.prefix,
        "tenant": record.tenant,
        "project": record.project,
        "name": record.name,
        "admin": record.admin,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "budget_usd": None if record.budget_usd is None else format_usd(record.budget_usd),
        "budget_period": record.budget_period,
        "created_at": _iso(record.created_at),
        "revoked_at": _iso(record.revoked_at),
    }


async def spend_view(limits: Limits, record: KeyRecord) -> dict[str, Any] | None:
    """The key's spend in the current budget period, or None for a key without a budget."""
    return _spend(record, await limits.key_budget(record))


async def spend_views(limits: Limits, records: list[KeyRecord]) -> dict[str, dict[str, Any] | None]:
    """`spend_view` of every key, by key id, from one storage read (the key list's)."""
    states = await limits.key_budgets(records)
    return {r.id: _spend(r, states[r.id]) for r in records}


def _spend(record: KeyRecord, state: BudgetState | None) -> dict[str, Any] | None:
    if state is None or record.budget_usd is None:
        return None
    return {
        "period": record.budget_period,
        "limit_usd": format_usd(record.budget_usd),
        "spent_usd": format_usd(state.spent),
        "reserved_usd": format_usd(state.reserved),
    }


def usage_view(rec: UsageRecord) -> dict[str, Any]:
    """One ledger row as the admin API and the console show it."""
    return {
        "object": "request",
        "id": rec.id,
        "request_id": rec.request_id,
        "at": _iso(rec.at),
        "tenant": rec.tenant,
        "project": rec.project,
        "key_id": rec.key_id,
        "endpoint": rec.endpoint,
        "model": rec.model,
        "provider": rec.provider,
        "deployment": rec.deployment,
        "input_tokens": rec.input_tokens,
        "output_tokens": rec.output_tokens,
        "cached_input_tokens": rec.cached_input_tokens,
        "cache_write_tokens": rec.cache_write_tokens,
        "reasoning_tokens": rec.reasoning_tokens,
        "cost_usd": format_usd(rec.cost),
        "price_version": rec.price_version,
        "status": rec.status,
        "error_code": rec.error_code,
        "latency_ms": rec.latency_ms,
        "ttft_ms": rec.ttft_ms,
        "attempts": rec.attempts,
        "attempt_log": list(rec.attempt_log),
        "stream": rec.stream,
        "client_request_id": rec.client_request_id,
    }


def provider_health(catalog: Catalog, book: HealthBook, now: float) -> list[dict[str, Any]]:
    """Every catalog deployment with this process's view of its health."""
    states = book.snapshot()
    policy = book.policy
    out = []
    for entry in sorted(catalog.models.values(), key=lambda m: m.id):
        for d in entry.deployments:
            state = states.get(d.id)
            recent = state.recent if state is not None else ()
            failures = recent.count(False)
            latency = health.latency(state)
            out.append(
                {
                    "object": "deployment.health",
                    "deployment": d.id,
                    "model": entry.id,
                    "provider": d.provider,
                    "upstream_model": d.upstream_model,
                    "circuit": state.circuit if state is not None else "closed",
                    "available": health.available(state, now, policy),
                    "window": len(recent),
                    "failures": failures,
                    "error_rate": round(failures / len(recent), 4) if recent else None,
                    "consecutive_failures": state.consecutive_failures if state else 0,
                    "latency_ms": None if latency is None else round(latency * 1000, 1),
                    "cooldown_left_s": _cooldown_left(state, now, policy),
                }
            )
    return out


def _cooldown_left(
    state: health.DeploymentHealth | None, now: float, policy: health.HealthPolicy
) -> float | None:
    if state is None or state.circuit != "open" or state.opened_at is None:
        return None
    return round(max(0.0, policy.cooldown - max(0.0, now - state.opened_at)), 3)


def audit(actor: KeyRecord, action: str, target: str | None, details: Mapping[str, Any]) -> None:
    """One JSON log line for an admin action (no secrets: callers pass field values only)."""
    audit_log.info(
        "admin %s %s",
        action,
        target or "",
        extra={
            "action": action,
            "actor": actor.id,
            "actor_tenant": actor.tenant,
            "target": target,
            "details": dict(details),
        },
    )
