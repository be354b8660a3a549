"""Pruning: the deletes behind retention (`core/retention.py`), for both backends.

Owns: which rows of each table a store's cut-off names (`TARGETS`, one line per table),
as SQL written once with the driver's placeholder, and deleting them in bounded
batches on a DB-API connection (sqlite3 or psycopg) inside the caller's transaction.

Rules:
- A batch selects at most `limit` rows of a table that match its condition, in no
  particular order (Postgres: `FOR UPDATE SKIP LOCKED`, so the condition holds for the rows it
  locked, rechecked on a row another transaction just changed, and a row someone holds
  is left for the next run; SQLite holds the database's write lock from `BEGIN
  IMMEDIATE`), deletes the rows that depend on them first (a stream's events), then
  them. One short transaction per batch: a big prune never holds a long lock.
- The rollup tables (`ROLLUP_TABLES`) go by the ledger's cut-off, a UTC midnight, as
  an hour key (hourly rollups) or a day key (`usage_daily`): whole days, exactly those
  the ledger loses. A table added to the rollups is one more line there.
- Budget periods are `state` rows: their period is in the scope's text, so the scopes
  under the budget prefixes are read in key order and `core.retention.period_prunable`
  picks the ones to delete (`budget_batch`).
- `count` answers what a prune would delete now, deleting nothing (`umg prune --dry-run`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from attrs import frozen

from adapters.storage import codec, rollup, rollup_wide
from core import jobs as lifecycle
from core import outbox
from core.retention import BUDGET_PREFIXES, Cutoffs, day_text, hour_text, period_prunable

Args = tuple[Any, ...]


@frozen
class Flavor:
    mark: str  # the driver's placeholder
    time: Callable[[datetime], Any]  # how an instant is bound
    lock: str  # appended to a batch's SELECT


SQLITE = Flavor("?", codec.iso, "")
POSTGRES = Flavor("%s", codec.utc, " FOR UPDATE SKIP LOCKED")


def _instant(f: Flavor, t: float) -> Any:
    return f.time(datetime.fromtimestamp(t, UTC))


def _quoted(names: frozenset[str]) -> str:
    return ", ".join(f"'{n}'" for n in sorted(names))


@frozen
class Target:
    store: str  # what it counts for (core.retention.STORES)
    table: str
    keys: tuple[str, ...]  # its primary key
    where: str  # the condition, `{m}` for each placeholder
    args: Callable[[Cutoffs, Flavor], Args | None]  # None: the store is kept forever
    children: tuple[tuple[str, str], ...] = ()  # (table, column = keys[0]): deleted first


def _ledger_time(cut: Cutoffs, f: Flavor) -> Args | None:
    return None if cut.ledger is None else (_instant(f, cut.ledger),)


def _ledger_hour(cut: Cutoffs, f: Flavor) -> Args | None:
    del f
    return None if cut.ledger is None else (hour_text(cut.ledger),)


def _ledger_day(cut: Cutoffs, f: Flavor) -> Args | None:
    del f
    return None if cut.ledger is None else (day_text(cut.ledger),)


def _twice(pick: Callable[[Cutoffs], float | None]) -> Callable[[Cutoffs, Flavor], Args | None]:
    """The cut-off bound twice (a finish time, else the creation time, before it)."""

    def args(cut: Cutoffs, f: Flavor) -> Args | None:
        at = pick(cut)
        return None if at is None else (_instant(f, at), _instant(f, at))

    return args


_JOB_TERMINAL = _quoted(frozenset(lifecycle.TERMINAL))
_DELIVERY_TERMINAL = _quoted(frozenset(outbox.TERMINAL))
_DELIVERY_OPEN = _quoted(frozenset(outbox.STATUSES) - frozenset(outbox.TERMINAL))

# The rollups of the ledger: (table, primary key, its period's cut-off as the period's
# text). A rollup table is one more line here.
ROLLUP_TABLES: tuple[tuple[str, tuple[str, ...], Callable[[Cutoffs, Flavor], Args | None]], ...] = (
    (rollup.HOURLY, rollup.KEY_COLUMNS, _ledger_hour),
    (rollup.BINS, rollup.BIN_COLUMNS, _ledger_hour),
    *((w.table, w.keys, _ledger_hour if w.grain == "hour" else _ledger_day) for w in rollup_wide.TABLES),
)

TARGETS: tuple[Target, ...] = (
    Target("ledger", "usage", ("id",), "at < {m}", _ledger_time),
    *(Target("rollup", table, keys, f"{keys[0]} < {{m}}", cut) for table, keys, cut in ROLLUP_TABLES),
    Target(
        "jobs", "jobs", ("id",),
        f"status IN ({_JOB_TERMINAL}) AND (completed_at < {{m}}"
        " OR (completed_at IS NULL AND created_at < {m}))"
        " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w WHERE w.job_id = jobs.id"
        f" AND w.status IN ({_DELIVERY_OPEN}))",
        _twice(lambda cut: cut.jobs),
        # the job's event stream (adapters/storage/job_events_sql.py) goes with it
        children=(("stream_events", "stream_id"), ("stream_heads", "id")),
    ),
    Target(
        "outbox", "webhook_deliveries", ("id",),
        f"status IN ({_DELIVERY_TERMINAL}) AND (finished_at < {{m}}"
        " OR (finished_at IS NULL AND created_at < {m}))",
        _twice(lambda cut: cut.outbox),
    ),
    Target(
        "idempotency", "idempotency_keys", ("tenant", "key"),
        "(state = 'done' AND expires_at <= {m}) OR (state = 'running' AND locked_until <= {m})",
        lambda cut, f: (cut.idempotency_expired, cut.idempotency_lapsed),
    ),
    Target(
        "streams", "stream_heads", ("id",), "expires_at <= {m}",
        lambda cut, f: (cut.streams,), children=(("stream_events", "stream_id"),),
    ),
)  # fmt: skip


def targets(store: str) -> tuple[Target, ...]:
    return tuple(t for t in TARGETS if t.store == store)


def _cond(t: Target, f: Flavor) -> str:
    return t.where.replace("{m}", f.mark)


def delete_batch(c: Any, f: Flavor, t: Target, cut: Cutoffs, limit: int) -> int:
    """Delete at most `limit` rows of `t` that `cut` lets go; how many."""
    args = t.args(cut, f)
    if args is None or limit < 1:
        return 0
    keys = ", ".join(t.keys)
    # no ORDER BY: the first rows the condition's index finds, not a sort of all of them
    select = f"SELECT {keys} FROM {t.table} WHERE {_cond(t, f)} LIMIT {f.mark}{f.lock}"
    rows = [tuple(r) for r in c.execute(select, (*args, limit)).fetchall()]
    if not rows:
        return 0
    cur = c.cursor()
    for child, column in t.children:
        cur.executemany(f"DELETE FROM {child} WHERE {column} = {f.mark}", [r[:1] for r in rows])
    match = " AND ".join(f"{k} = {f.mark}" for k in t.keys)
    cur.executemany(f"DELETE FROM {t.table} WHERE {match}", rows)
    return len(rows)


def count(c: Any, f: Flavor, t: Target, cut: Cutoffs) -> int:
    """How many rows of `t` a prune at `cut` would delete."""
    args = t.args(cut, f)
    if args is None:
        return 0
    return int(c.execute(f"SELECT count(*) FROM {t.table} WHERE {_cond(t, f)}", args).fetchone()[0])


# -- budget periods: `state` rows whose scope names a past period ---------------------


def _ranges() -> list[tuple[str, str]]:
    """[low, high) of each budget prefix in scope order (`key:` .. `key;`)."""
    return [(p, p[:-1] + chr(ord(p[-1]) + 1)) for p in BUDGET_PREFIXES]


def prunable_scopes(
    c: Any, f: Flavor, cut: Cutoffs, limit: int | None, skip: Callable[[str], bool]
) -> list[str]:
    """Up to `limit` (None: all) period scopes that may go, in scope order; `skip(scope)`
    keeps one anyway (SQLite: a scope changed in memory and not yet committed)."""
    if cut.budget_periods is None:
        return []
    m, page = f.mark, 1000
    found: list[str] = []
    for low, high in _ranges():
        after = ""
        while limit is None or len(found) < limit:
            sql = (
                f"SELECT scope FROM state WHERE scope >= {m} AND scope < {m} AND scope > {m}"
                f" ORDER BY scope LIMIT {m}"
            )
            scopes = [str(r[0]) for r in c.execute(sql, (low, high, after, page)).fetchall()]
            found += [s for s in scopes if period_prunable(s, cut) and not skip(s)]
            if len(scopes) < page:
                break
            after = scopes[-1]
    return found if limit is None else found[:limit]


def budget_batch(
    c: Any, f: Flavor, cut: Cutoffs, limit: int, skip: Callable[[str], bool]
) -> list[str]:
    """Delete at most `limit` past periods' state rows; the scopes deleted."""
    scopes = prunable_scopes(c, f, cut, limit, skip)
    if scopes:
        c.cursor().executemany(f"DELETE FROM state WHERE scope = {f.mark}", [(s,) for s in scopes])
    return scopes
