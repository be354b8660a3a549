"""Retention in a running gateway: one prune of every store, and the periodic prune.

Owns: running a prune (`prune_once`, what `umg prune` and the periodic task both run):
the cut-offs of `core.retention` at the wall clock's now, then every store in
`core.retention.STORES` order, batch after batch (`Storage.prune`, `batch_rows` rows a
table per transaction, a checkpoint between batches) until a batch finds nothing; and
the periodic task (`run_periodic`), which prunes once every `interval_seconds`.

Rules:
- One process at a time: before a periodic prune a process claims the run in the
  `state` row `retention:prune` (`update_state`, atomic across processes on Postgres;
  on SQLite only the serving process owns the state): it runs only when no process
  ran one in the last `interval_seconds` (`core.retention.due`). A prune that outlasts
  the interval may meet the next one: batches lock their rows with SKIP LOCKED on
  Postgres, so two prunes never delete the same row twice or wait on each other.
- Each run is one JSON log line (`umg.retention`, `"event": "prune"`): the rows
  deleted per store and how long it took. A storage error ends that run with a
  warning line; the next interval tries again. Nothing else is caught.
- `interval_seconds` 0 turns the periodic prune off (`umg prune` still works).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from adapters.clock import Clock
from adapters.storage.base import Storage
from core import retention
from core.retention import STORES, RetentionPolicy

log = logging.getLogger("umg.retention")
LEASE_SCOPE = "retention:prune"


async def prune_once(
    storage: Storage,
    policy: RetentionPolicy,
    ttl_seconds: float,
    now: float,
    *,
    dry_run: bool = False,
) -> dict[str, int]:
    """Prune every store at `now` (epoch seconds); rows deleted (or, `dry_run`, that
    would be) per store, in `STORES` order."""
    cut = retention.cutoffs(policy, ttl_seconds, now)
    counts: dict[str, int] = {}
    for store in STORES:
        if dry_run:
            counts[store] = await storage.prunable(store, cut)
            continue
        total = 0
        while (n := await storage.prune(store, cut, policy.batch_rows)) > 0:
            total += n
            await trio.sleep(0)  # let requests in between batches
        counts[store] = total
    return counts


async def claim_run(storage: Storage, now: float, interval: float) -> tuple[bool, float]:
    """Whether this process runs the prune now, and when the next one is due."""

    def fn(state: dict[str, Any] | None) -> tuple[tuple[bool, float], dict[str, Any]]:
        last = None if state is None else state.get("last_run")
        last = float(last) if isinstance(last, int | float) else None
        if retention.due(last, now, interval):
            return (True, now + interval), {"last_run": now}
        assert last is not None
        return (False, last + interval), {"last_run": last}

    return await storage.update_state(LEASE_SCOPE, fn)


async def run_periodic(
    storage: Storage, clock: Clock, policy: RetentionPolicy, ttl_seconds: float
) -> None:
    """Prune every `policy.interval_seconds` (0: never), until cancelled."""
    interval = policy.interval_seconds
    if interval == 0:
        return
    while True:
        next_at = clock.epoch() + interval
        try:
            ran, next_at = await claim_run(storage, clock.epoch(), interval)
            if ran:
                await _logged_run(storage, clock, policy, ttl_seconds)
        except storage.errors as err:  # the database's own: tried again next interval
            log.warning("prune failed: %s", err, extra={"event": "prune", "error": str(err)})
        await trio.sleep(max(next_at - clock.epoch(), min(interval, 1.0)))


async def _logged_run(
    storage: Storage, clock: Clock, policy: RetentionPolicy, ttl_seconds: float
) -> None:
    started = clock.now()
    counts = await prune_once(storage, policy, ttl_seconds, clock.epoch())
    log.info(
        "prune: %d rows deleted", sum(counts.values()),
        extra={"event": "prune", "pruned": counts,
               "duration_ms": round((clock.now() - started) * 1000, 1)},
    )  # fmt: skip
