"""`[[budgets]]` and budget amounts: what a project's or tenant's budget may be.

Owns: `BudgetSetting`, reading the `[[budgets]]` entries (written to storage at start)
and `parse_budget`, the one reading of a USD amount: a decimal, never a float, finite
and not negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from attrs import frozen

from adapters.config.values import ConfigError


@frozen
class BudgetSetting:
    """A `[[budgets]]` entry: a project's (or, without `project`, a tenant's) budget."""

    tenant: str
    project: str  # "" for the tenant's own budget
    limit_usd: Decimal
    period: str = "month"


def read_budgets(file_cfg: Mapping[str, Any]) -> tuple[BudgetSetting, ...]:
    """`[[budgets]]`: tenant, optional project, limit_usd (a string or whole number, never a
    float: money is exact) and period (day, month or total; default month)."""
    entries = file_cfg.get("budgets", [])
    if not isinstance(entries, list):
        raise ConfigError("budgets must be an array of tables ([[budgets]])")
    found: list[BudgetSetting] = []
    for n, item in enumerate(entries):
        where = f"budgets[{n}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = sorted(set(item) - {"tenant", "project", "limit_usd", "period"})
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}")
        tenant, project = item.get("tenant"), item.get("project", "")
        if not isinstance(tenant, str) or not tenant.strip() or not isinstance(project, str):
            raise ConfigError(f"{where}: tenant (and project, when given) must be non-empty strings")
        raw = item.get("limit_usd")
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ConfigError(f"{where}.limit_usd must be a decimal string such as \"100.00\"")
        period = item.get("period", "month")
        if period not in ("day", "month", "total"):
            raise ConfigError(f"{where}.period must be day, month or total, not {period!r}")
        limit = parse_budget(str(raw))
        assert limit is not None
        found.append(BudgetSetting(tenant, project, limit, period))
    return tuple(found)


def parse_budget(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except ArithmeticError:
        raise ConfigError(f"budget must be a decimal amount in USD, not {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError("budget must be a non-negative amount")
    return amount
