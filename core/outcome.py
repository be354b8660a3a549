"""A request's outcome: the ledger status and error code, from what happened to it.

Owns: the one rule that names how a request ended. The driver sets nothing itself; it
records `outcome(happened)` in the request's one ledger row.

What happened is one of:
- `Answered`: the answer was delivered whole (status `ok`, no error code);
- `Canceled`: whoever owned the work stopped it (a job canceled, its lease lost, its
  worker shut down): status `canceled`, no error code;
- `Failed(error)`: the request ended with `error` (refused, failed upstream, client gone,
  cut at shutdown): its code is the error code, and the status is `rate_limited`,
  `budget_exceeded` or `client_closed` for those refusals, else `error`.
A request is never recorded `in_progress`: every way to end is one of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeAlias

from attrs import frozen

from core.errors import GatewayError

STATUS_BY_CODE: Mapping[str, str] = MappingProxyType(
    {
        "rate_limit_exceeded": "rate_limited",
        "budget_exceeded": "budget_exceeded",
        "client_closed_request": "client_closed",
    }
)
STATUSES: frozenset[str] = frozenset({"ok", "canceled", "error", *STATUS_BY_CODE.values()})


@frozen
class Answered:
    pass


@frozen
class Canceled:
    pass


@frozen
class Failed:
    error: GatewayError


Happened: TypeAlias = Answered | Canceled | Failed


@frozen
class Outcome:
    status: str
    error_code: str | None


def outcome(happened: Happened) -> Outcome:
    if isinstance(happened, Answered):
        return Outcome("ok", None)
    if isinstance(happened, Canceled):
        return Outcome("canceled", None)
    code = happened.error.code
    return Outcome(STATUS_BY_CODE.get(code or "", "error"), code)
