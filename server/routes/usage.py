"""`GET /v1/usage`: the caller's tenant's requests, tokens and cost over a time window.

Owns: the usage API. `from` and `to` are RFC 3339 instants (`from` inclusive, `to`
exclusive; `to` defaults to now, `from` to 30 days before `to`); `group_by` is a comma-
separated list of day, hour, month, model, provider, project, status. Only rows of the
caller's tenant are read. Money is a decimal string. The sums are the database's
(`Storage.usage_totals`: the hourly rollup for the window's whole hours, the ledger for
its partial first and last hours), never one Python step per ledger row.

`budgets` lists every budget that covers the caller's requests now (its key's, its
project's, its tenant's; `adapters/budgets.py`), each in its current period: the
limit, what is spent and reserved in that period, and what is left (`remaining_usd`,
never below 0). A request must fit all of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from quart import request
from quart_trio import QuartTrio

from adapters.budgets import Covering
from adapters.storage.ledger import LedgerFilter
from core.billing import format_usd
from core.budget import BudgetState
from core.errors import InvalidRequest
from core.usage import Totals, check_group_by
from server.auth import require_key
from server.query import Query
from server.services import Services

MAX_WINDOW = timedelta(days=400)


def parse_instant(value: str, param: str) -> datetime:
    text = value.strip().replace("z", "Z")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'{param}' must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z", param=param
        ) from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"'{param}' needs a time zone offset (for example Z)", param=param)
    return parsed.astimezone(UTC)


def totals_json(t: Totals) -> dict[str, Any]:
    return {
        "requests": t.requests,
        "errors": t.errors,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cached_input_tokens": t.cached_input_tokens,
        "total_tokens": t.total_tokens,
        "cost_usd": format_usd(t.cost),
    }


def register(app: QuartTrio, services: Services) -> None:
    @app.get("/v1/usage")
    async def usage() -> dict[str, Any]:
        key = await require_key(services)
        now = services.clock.wall()
        query = Query(request.args, ("from", "to", "group_by"))
        to, since = query.text("to"), query.text("from")
        end = parse_instant(to, "to") if to is not None else now
        start = parse_instant(since, "from") if since is not None else end - timedelta(days=30)
        if start >= end:
            raise InvalidRequest("'from' must be before 'to'", param="from")
        if end - start > MAX_WINDOW:
            raise InvalidRequest("The window may span at most 400 days", param="from")
        raw = query.text("group_by") or ""
        group_by = tuple(g.strip() for g in raw.split(",") if g.strip())
        check_group_by(group_by)
        window = LedgerFilter(start=start, end=end, tenant=key.tenant)
        summary = await services.storage.usage_totals(window, group_by)
        covering = await services.gateway.limits.covering_now(key)
        return {
            "object": "usage",
            "tenant": key.tenant,
            "from": start.isoformat().replace("+00:00", "Z"),
            "to": end.isoformat().replace("+00:00", "Z"),
            "group_by": list(group_by),
            "totals": totals_json(summary.totals),
            "groups": [
                {"key": dict(g.key), **totals_json(g.totals)} for g in summary.groups
            ],
            "budgets": [budget_json(cover, state) for cover, state in covering],
        }


def budget_json(cover: Covering, state: BudgetState) -> dict[str, Any]:
    return {
        "kind": cover.kind,
        "tenant": cover.tenant,
        "project": cover.project,
        "period": cover.period,
        "period_key": cover.scope.rsplit(":", 1)[1],
        "limit_usd": format_usd(cover.limit),
        "spent_usd": format_usd(state.spent),
        "reserved_usd": format_usd(state.reserved),
        "remaining_usd": format_usd(state.available),
    }
