"""Retention: how far back each store is kept, as a cut-off per store at a given `now`.

Owns: the rule behind `umg prune` and the server's periodic prune. Storage deletes
what these cut-offs name and decides nothing; this module never reads a clock.

Rules (`cutoffs(policy, ttl_seconds, now)`; every time is epoch seconds, UTC):
- A `*_days` setting of 0 keeps that store forever: its cut-off is None.
- Ledger and rollup: rows before `ledger` go, and `ledger` is a UTC midnight (`now -
  ledger_days`, rounded DOWN to a whole day), so the rollups lose exactly the hours
  (hourly rollups) and days (daily rollup) the ledger loses: a kept day's totals from
  a rollup stay the sum of its kept raw rows.
- Jobs: only terminal jobs (succeeded, failed, canceled, aborted) that finished before
  `jobs`; a queued or running job is never a candidate, however old.
- Webhook outbox: only finished deliveries (delivered, gone, refused, given up) that
  finished before `outbox`; a pending or sending one stays.
- Idempotency records: a `done` record once its answer expired (`expires_at <= now`);
  a `running` claim only once its lock lapsed `ttl_seconds` ago (`idempotency_lapsed`):
  a holder may still finish a lapsed claim and store its answer, and no answer stored
  that late is kept beyond then anyway. A held claim (`now < locked_until`) never goes.
- Stream buffers: only streams whose `expires_at` passed (`streams` is `now`): an ended
  stream `retention_seconds` after its end, a running one only once its process has
  stopped writing it for longer than it may (`core.resume`).
- Budget periods: a period's state goes only when the period ENDED at or before
  `budget_periods` (`period_prunable`); "total" never ends, and the period containing
  `now` has not ended, so the current period is never pruned.
- `due(last_run, now, interval)`: a periodic prune runs when none ran in the last
  `interval` seconds (or the last one is in the future: a clock set back).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from attrs import field, frozen

DAY = 86400.0
STORES = ("ledger", "rollup", "jobs", "outbox", "idempotency", "streams", "budget_periods")


def _whole_days(instance: object, attribute: object, value: int) -> None:
    del instance
    name = getattr(attribute, "name", "days")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"retention.{name} must be a whole number of days >= 0, not {value!r}")


def _whole_positive(instance: object, attribute: object, value: int) -> None:
    del instance
    name = getattr(attribute, "name", "value")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"retention.{name} must be a whole number >= 1, not {value!r}")


def _non_negative(instance: object, attribute: object, value: float) -> None:
    del instance
    name = getattr(attribute, "name", "value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"retention.{name} must be a number >= 0, not {value!r}")


@frozen
class RetentionPolicy:
    """`[retention]` in the config file; a `*_days` of 0 keeps that store forever."""

    ledger_days: int = field(default=90, validator=_whole_days)
    jobs_days: int = field(default=30, validator=_whole_days)
    outbox_days: int = field(default=30, validator=_whole_days)
    budget_periods_days: int = field(default=90, validator=_whole_days)
    # the server's periodic prune (0: none; `umg prune` still works)
    interval_seconds: float = field(default=3600.0, validator=_non_negative)
    batch_rows: int = field(default=1000, validator=_whole_positive)  # rows per delete


@frozen
class Cutoffs:
    """What may go at `now` (see the module rules); None: that store is kept forever."""

    now: float
    ledger: float | None  # a UTC midnight: ledger rows and rollup hours before it go
    jobs: float | None  # terminal jobs finished before it
    outbox: float | None  # finished deliveries finished before it
    idempotency_expired: float  # done records with expires_at <= it (now)
    idempotency_lapsed: float  # running claims with locked_until <= it (now - ttl)
    streams: float  # stream buffers with expires_at <= it (now)
    budget_periods: float | None  # period states whose period ended at or before it


def day_floor(t: float) -> float:
    """The UTC midnight at or before `t` (epoch days are whole multiples of 86400 s)."""
    return math.floor(t / DAY) * DAY


def _back(now: float, days: int) -> float | None:
    return None if days == 0 else now - days * DAY


def cutoffs(policy: RetentionPolicy, ttl_seconds: float, now: float) -> Cutoffs:
    """The cut-off of every store at `now`; `ttl_seconds` is `[idempotency] ttl_seconds`."""
    ledger = _back(now, policy.ledger_days)
    return Cutoffs(
        now=now,
        ledger=None if ledger is None else day_floor(ledger),
        jobs=_back(now, policy.jobs_days),
        outbox=_back(now, policy.outbox_days),
        idempotency_expired=now,
        idempotency_lapsed=now - ttl_seconds,
        streams=now,
        budget_periods=_back(now, policy.budget_periods_days),
    )


def hour_text(t: float) -> str:
    """The rollup's hour key (`YYYY-MM-DDTHH`, UTC) of the hour containing `t`."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H")


def day_text(t: float) -> str:
    """The daily rollup's day key (`YYYY-MM-DD`, UTC) of the day containing `t`."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def period_end(scope: str) -> float | None:
    """When the budget period of a period scope (`core.budget.period_key`: `...:YYYY-MM`
    or `...:YYYY-MM-DD`) ends, in epoch seconds; None for `...:total`, or a scope that
    is not a period's (so it is never pruned)."""
    suffix = scope.rpartition(":")[2]
    parts = suffix.split("-")
    if not all(p.isdigit() and p.isascii() for p in parts):
        return None
    try:
        if len(parts) == 3 and [len(p) for p in parts] == [4, 2, 2]:
            day = datetime(int(parts[0]), int(parts[1]), int(parts[2]), tzinfo=UTC)
            return (day + timedelta(days=1)).timestamp()
        if len(parts) == 2 and [len(p) for p in parts] == [4, 2]:
            year, month = int(parts[0]), int(parts[1])
            if not 1 <= month <= 12:
                return None
            nxt = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            return nxt.timestamp()
    except (ValueError, OverflowError):  # not a real date: not a period scope
        return None
    return None


BUDGET_PREFIXES = ("key:", "budget:")  # the scopes of period budgets (adapters/budgets.py)


def period_prunable(scope: str, cut: Cutoffs) -> bool:
    """Whether a `state` row is a past budget period's that may go."""
    if cut.budget_periods is None or not scope.startswith(BUDGET_PREFIXES):
        return False
    end = period_end(scope)
    return end is not None and end <= cut.budget_periods and end <= cut.now


def due(last_run: float | None, now: float, interval: float) -> bool:
    """Whether the periodic prune should run now."""
    return last_run is None or last_run > now or now - last_run >= interval
