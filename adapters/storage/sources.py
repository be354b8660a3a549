"""Where each part of a read of the usage ledger comes from: a rollup's whole periods or
the ledger's own rows.

Owns: the table of rollups a read may use (`ROLLUPS`: what each keeps, its period, how
it stores cost and bins) and `plan`, which cuts a read's window into parts, each read
from one source, so that together they cover the window exactly once.

Rules (`plan`):
- A rollup answers a read only if it keeps every column the read filters or groups on
  (`Source.columns`), and only at its period or coarser: the daily rollup cannot give
  hour buckets (nor /v1/usage's `hour` dimension).
- A rollup table that is missing is an error, never a silently smaller answer: its reads
  fail, and `missing` (run by each backend's `migrate`, so a gateway does not start on
  such a database) names it.
- Coarsest first: the whole days of the window from `usage_daily` (when the read is by
  day); then, in what is left (the partial days at the edges, or the whole window for an
  hourly read), the whole hours from the smallest hourly rollup that answers
  (`usage_hourly_model` when the read names no tenant, key or project, else
  `usage_hourly_all` when it names no tenant or key, else `usage_hourly_nokey` when it
  names no key); the rest, partial hours (or everything no rollup answers: an
  hourly read on a key), from the ledger. Each part is a range of whole periods
  `[start, end)`; the ledger's parts are ranges of instants.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from attrs import frozen

from adapters.storage import rollup, rollup_wide

Grain = Literal["hour", "day"]
_STEP: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_TEXT = {"hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d"}


@frozen
class Source:
    """A rollup table: its period column (`grain`: `hour` or `day`, named so), the ledger
    columns it keeps, and its histogram counts (a table of (bin, n) rows, or None: bin
    columns in its rows, `rollup_wide.bin_columns`)."""

    table: str
    grain: Grain
    columns: frozenset[str]
    bins: str | None


DAILY = Source(rollup_wide.DAILY, "day", frozenset(rollup_wide.DAY.columns), None)
HOURLY_ALL = Source(rollup_wide.HOURLY_ALL, "hour", frozenset(rollup_wide.ALL.columns), None)
HOURLY_MODEL = Source(rollup_wide.HOURLY_MODEL, "hour", frozenset(rollup_wide.MODEL.columns), None)
HOURLY = Source(rollup.HOURLY, "hour", frozenset(rollup.KEY_COLUMNS[1:]), rollup.BINS)
# coarsest and smallest first: the order `plan` tries them
ROLLUPS = (DAILY, HOURLY_MODEL, HOURLY_ALL, HOURLY)
TABLES = (*(s.table for s in ROLLUPS), rollup.BINS)  # every table a read may take from


class RollupMissing(RuntimeError):
    """A rollup table the reads and the ledger writer need is not in the database."""


def missing(present: Iterable[str]) -> None:
    """Raise `RollupMissing` unless every rollup table (`TABLES`) is in `present`."""
    have = set(present)
    gone = [t for t in TABLES if t not in have]
    if gone:
        raise RollupMissing(
            f"the usage rollup tables {', '.join(gone)} are missing: the console and"
            " /v1/usage cannot be answered from them (restore them from a backup, or"
            " recreate them with their migration's statements)"
        )


@frozen
class Part:
    """`[start, end)` of a read's window, from `source` (None: the ledger)."""

    source: Source | None
    start: datetime
    end: datetime

    def periods(self) -> tuple[str, str]:
        """A rollup part's range as its period texts: `[first, past)`."""
        if self.source is None:
            raise ValueError("a ledger part is a range of instants, not of periods")
        fmt = _TEXT[self.source.grain]
        return self.start.strftime(fmt), self.end.strftime(fmt)


def floor(at: datetime, grain: Grain) -> datetime:
    at = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return at if grain == "hour" else at.replace(hour=0)


def _ceil(at: datetime, grain: Grain) -> datetime:
    down = floor(at, grain)
    return down if down == at else down + _STEP[grain]


def split(start: datetime, end: datetime, grain: Grain) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """[start, end) as (its whole periods `[first, past)`, or None; the partial edges).
    Together they cover the window exactly once."""
    first, past = _ceil(start, grain), floor(end, grain)
    if first >= past:
        return None, [(start, end)] if start < end else []
    return (first, past), [(a, b) for a, b in ((start, first), (past, end)) if a < b]


def answers(source: Source, used: Iterable[str], grain: Grain) -> bool:
    """Whether `source` can answer a read at `grain` that filters or groups on `used`."""
    return (grain == "day" or source.grain == "hour") and set(used) <= source.columns


def plan(
    start: datetime, end: datetime, used: Iterable[str], grain: Grain,
    rollups: tuple[Source, ...] = ROLLUPS,
) -> list[Part]:  # fmt: skip
    """The parts of `[start, end)` and where each comes from (see the module's rules), for
    a read at `grain` that filters or groups on the columns `used`. `rollups` (coarsest
    first) are the ones it may use: all of them but for a comparison (`make bench-console`
    times the reads as they were with the hourly rollup alone)."""
    used = frozenset(used)
    parts: list[Part] = []
    rest = [(start, end)] if start < end else []
    for source in rollups:
        if not answers(source, used, grain):
            continue
        left: list[tuple[datetime, datetime]] = []
        for a, b in rest:
            whole, edges = split(a, b, source.grain)
            if whole is not None:
                parts.append(Part(source, *whole))
            left += edges
        rest = left
    return parts + [Part(None, a, b) for a, b in rest]
