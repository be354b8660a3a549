"""Query parameters of the ledger reads (`/v1/admin/requests`, `/v1/requests`,
`/v1/usage/series`): the time window, the filters, paging, and who may ask for what.

Owns: turning query strings into a `LedgerFilter`, with every mistake a 400 naming the
parameter, and the tenant rule: an admin key reads any tenant (or all); a tenant key
reads only its own, so its filter is pinned to its tenant and asking for another one is
a 403 naming `tenant`.

The reads of rows (`/v1/requests`, `/v1/admin/requests`: `REQUEST_PARAMS`) also take
`client_request_id`, the id a client sent in `x-request-id` (kept on its row): it must be
an id the gateway would have kept (1 to 128 characters of `A-Z a-z 0-9 . _ : -`,
server/requestid.py), or it is a 400. The series does not take it (the rollups do not
keep it).

Rules: `from` / `to` are RFC 3339 instants (`from` inclusive, `to` exclusive; `to`
defaults to now, `from` to 30 days before `to`); the window is at most 400 days. An
unknown parameter is refused (a typo must not silently widen a query).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from adapters.storage.ledger import FILTER_COLUMNS, LedgerFilter
from adapters.storage.records import KeyRecord
from core.errors import InvalidRequest, PermissionDenied
from server.requestid import sane
from server.routes.usage import parse_instant

MAX_WINDOW = timedelta(days=400)
DEFAULT_WINDOW = timedelta(days=30)
MAX_VALUE_LEN = 200


def check_params(args: Mapping[str, str], allowed: Iterable[str]) -> None:
    known = set(allowed)
    for name in args:
        if name not in known:
            raise InvalidRequest(
                f"Unknown query parameter '{name}'; known: {', '.join(sorted(known))}",
                param=name,
            )


def window(args: Mapping[str, str], now: datetime) -> tuple[datetime, datetime]:
    end = parse_instant(args["to"], "to") if "to" in args else now
    start = parse_instant(args["from"], "from") if "from" in args else end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidRequest("'from' must be before 'to'", param="from")
    if end - start > MAX_WINDOW:
        raise InvalidRequest("The window may span at most 400 days", param="from")
    return start, end


def ledger_filter(args: Mapping[str, str], caller: KeyRecord, now: datetime) -> LedgerFilter:
    """The filter for `caller`: from the query, pinned to the caller's tenant unless admin."""
    start, end = window(args, now)
    values: dict[str, str | None] = {}
    for column in FILTER_COLUMNS:
        value = args.get(column)
        if value is not None and (not value or len(value) > MAX_VALUE_LEN):
            raise InvalidRequest(
                f"'{column}' must be 1 to {MAX_VALUE_LEN} characters", param=column
            )
        values[column] = value
    if not caller.admin:
        if values["tenant"] not in (None, caller.tenant):
            raise PermissionDenied(
                "A tenant key reads only its own tenant's ledger", param="tenant"
            )
        values["tenant"] = caller.tenant
    client_id = args.get("client_request_id")
    if client_id is not None and not sane(client_id):
        raise InvalidRequest(
            "'client_request_id' must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"
            " (an x-request-id as the gateway keeps it)", param="client_request_id",
        )
    return LedgerFilter(
        start=start,
        end=end,
        tenant=values["tenant"],
        project=values["project"],
        key_id=values["key_id"],
        model=values["model"],
        provider=values["provider"],
        status=values["status"],
        client_request_id=client_id,
    )


def limit(args: Mapping[str, str], default: int = 50, maximum: int = 500) -> int:
    raw = args.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"'limit' must be a whole number, not {raw!r}", param="limit") from None
    if not 1 <= value <= maximum:
        raise InvalidRequest(f"'limit' must be from 1 to {maximum}, not {value}", param="limit")
    return value


FILTER_PARAMS = ("from", "to", *FILTER_COLUMNS)
REQUEST_PARAMS = (*FILTER_PARAMS, "client_request_id")  # the reads of rows
