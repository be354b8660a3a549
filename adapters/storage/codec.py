"""Turning records into column values and back, for both backends.

Owns: the value rules shared by SQLite and Postgres: which fields are money, datetimes,
JSON or booleans; how money is checked and made canonical; how JSON is written.

Rules:
- Money is stored with exactly 10 decimal places (Postgres NUMERIC(30,10); SQLite the
  same digits as TEXT), so both backends hand back identical `Decimal`s. A value that
  would lose digits (more than 10 places, or 20+ integer digits, or not finite) is
  refused with `ValueError` instead of being rounded.
- Datetimes must be timezone-aware; SQLite keeps them as fixed-width ISO-8601 UTC text
  (`2026-01-02T03:04:05.000006+00:00`), so text order is time order.
- JSON is written compactly with `allow_nan=False` (Postgres jsonb refuses NaN too).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Context, Decimal
from operator import attrgetter
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from adapters.storage.records import (
    BudgetRecord,
    DeliveryRecord,
    JobRecord,
    KeyRecord,
    UsageRecord,
)

R = TypeVar("R", KeyRecord, UsageRecord, JobRecord, BudgetRecord, DeliveryRecord)
Record = KeyRecord | UsageRecord | JobRecord | BudgetRecord | DeliveryRecord

MONEY_FIELDS = frozenset({"budget_usd", "cost"})
DATETIME_FIELDS = frozenset(
    {"created_at", "revoked_at", "at", "started_at", "completed_at", "finished_at", "updated_at"}
)
JSON_FIELDS = frozenset({"request", "result", "error", "attempt_log", "webhook_events_filter"})
BOOL_FIELDS = frozenset({"stream", "cancel_requested", "admin"})

_QUANTUM = Decimal("1E-10")
_LIMIT = Decimal("1E20")
_CONTEXT = Context(prec=40)  # 30 digits always fit; the default 28 would not


def columns(cls: type[Record]) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(cls))


def money(value: Decimal) -> Decimal:
    """`value` with exactly 10 decimal places; ValueError if that would change it."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"money must be a finite Decimal, got {value!r}")
    if value.copy_abs() >= _LIMIT:
        raise ValueError(f"money {value} does not fit NUMERIC(30,10): 20 integer digits at most")
    fixed = _CONTEXT.quantize(value, _QUANTUM)
    if fixed != value:
        raise ValueError(f"money {value} does not fit NUMERIC(30,10) exactly")
    return fixed


def utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"datetimes must be timezone-aware, got {value!r}")
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    return utc(value).isoformat(timespec="microseconds")


# `json.dumps`'s encoder for these options, made once: `json.dumps` with any option but
# the defaults builds a `JSONEncoder` per call (half of a small value's cost)
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    return _JSON.encode(value)


# ---- SQLite: everything is TEXT / INTEGER / REAL ----------------------------------------


def to_sqlite(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in MONEY_FIELDS:
        return format(money(value), "f")
    if name in DATETIME_FIELDS:
        return iso(value)
    if name in JSON_FIELDS:
        return dumps(value)
    if name in BOOL_FIELDS:
        return int(value)
    return value


def from_sqlite(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in MONEY_FIELDS:
        return Decimal(value)
    if name in DATETIME_FIELDS:
        return datetime.fromisoformat(value)
    if name in JSON_FIELDS:
        return json.loads(value)
    if name in BOOL_FIELDS:
        return bool(value)
    return value


def _sqlite_writer(name: str) -> Callable[[Any], Any] | None:
    """What `to_sqlite` does to a non-None value of column `name` (None: nothing)."""
    if name in MONEY_FIELDS:
        return lambda value: format(money(value), "f")
    if name in DATETIME_FIELDS:
        return iso
    if name in JSON_FIELDS:
        return dumps
    if name in BOOL_FIELDS:
        return int
    return None


_Plan = tuple[Callable[[Any], tuple[Any, ...]], tuple[tuple[int, Callable[[Any], Any]], ...]]


def _sqlite_plan(cls: type[Record]) -> _Plan:
    """The columns of `cls` read at once (`attrgetter`), and the position and writer of
    each column that has one (the same answer as `to_sqlite`, column by column)."""
    names = columns(cls)
    assert len(names) > 1, cls  # attrgetter of one name gives the value, not a tuple
    written = tuple((i, write) for i, name in enumerate(names) if (write := _sqlite_writer(name)) is not None)
    return attrgetter(*names), written


# worked out once per record class, at import (a ledger row is written on every request)
_SQLITE_PLANS: Mapping[type, _Plan] = MappingProxyType(
    {cls: _sqlite_plan(cls) for cls in (KeyRecord, UsageRecord, JobRecord, BudgetRecord, DeliveryRecord)}
)


def sqlite_row(rec: Record) -> tuple[Any, ...]:
    read, written = _SQLITE_PLANS[type(rec)]
    out = list(read(rec))
    for i, write in written:
        value = out[i]
        if value is not None:
            out[i] = write(value)
    return tuple(out)


def from_sqlite_row(cls: type[R], row: tuple[Any, ...]) -> R:
    return cls(*(from_sqlite(n, v) for n, v in zip(columns(cls), row, strict=True)))


# ---- Postgres: native types; the caller wraps JSON for the driver -----------------------


def to_postgres(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in MONEY_FIELDS:
        return money(value)
    if name in DATETIME_FIELDS:
        return utc(value)
    if name in JSON_FIELDS:
        return dumps(value)  # bound as text and cast with ::jsonb in the SQL
    return value


def from_postgres(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in DATETIME_FIELDS:
        return value.astimezone(UTC)
    if name in ("run_after", "lease_expires", "deadline", "next_at"):
        return float(value)
    return value


def postgres_row(rec: Record) -> tuple[Any, ...]:
    return tuple(to_postgres(n, getattr(rec, n)) for n in columns(type(rec)))


def from_postgres_row(cls: type[R], row: tuple[Any, ...]) -> R:
    return cls(*(from_postgres(n, v) for n, v in zip(columns(cls), row, strict=True)))


# ---- each backend's way with rows, for the SQL both write the same way -----------------


@attrs.frozen
class RowCodec:
    """One backend's placeholder and codec functions (`key_rows.py`, `shared_tables.py`)."""

    mark: str  # "?" or "%s"
    row: Callable[[Any], tuple[Any, ...]]  # a record as bound values
    record: Callable[[type[Any], tuple[Any, ...]], Any]  # a fetched row as a record of a class
    value: Callable[[str, Any], Any]  # one column's value as bound
    when: Callable[[datetime], Any]  # a datetime as bound


SQLITE = RowCodec("?", sqlite_row, from_sqlite_row, to_sqlite, iso)
POSTGRES = RowCodec("%s", postgres_row, from_postgres_row, to_postgres, utc)
