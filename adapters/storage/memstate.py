"""The `state` rows a SQLite storage owns, held in memory (no I/O here).

Owns: which scopes are in memory, which have changes not yet committed, which may be
persisted after `update_state` returns, and which are dropped when the table is full.

Rules:
- Write-behind scopes: `rl:*` (rate buckets), `key:*` (key budgets) and `budget:*`
  (project and tenant budgets), the ones every request changes. A change to them is in memory at once and committed by the storage
  writer later (`group_commit.py`): with the next ledger batch, or within the writer's
  `flush_seconds`, or on close. Every other scope (webhook secrets, the dev-key flag,
  ...) is written through: committed before `update_state` returns.
- `take_dirty()` hands the writer every changed scope and marks them clean; a failed
  commit puts them back (`mark_dirty`). A scope that is changed again while its commit
  runs is simply dirty again.
- Bounded: beyond `max_rows`, the least recently used clean scopes are dropped (their
  committed value is read again on next use); dirty scopes are never dropped.
- Values are stored as the caller's function returned them, never copied: functions
  must not mutate the state they are given or return (every caller builds a new dict).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

State = dict[str, Any]
WRITE_BEHIND_PREFIXES = ("rl:", "key:", "budget:")


def write_behind(scope: str) -> bool:
    return scope.startswith(WRITE_BEHIND_PREFIXES)


class StateTable:
    def __init__(self, max_rows: int = 100_000) -> None:
        self._rows: OrderedDict[str, State | None] = OrderedDict()
        self._dirty: set[str] = set()
        self._max_rows = max_rows

    def __len__(self) -> int:
        return len(self._rows)

    def loaded(self, scope: str) -> bool:
        return scope in self._rows

    def value(self, scope: str) -> State | None:
        self._rows.move_to_end(scope)
        return self._rows[scope]

    def load(self, scope: str, value: State | None) -> None:
        """A value read from the database; ignored if the scope got into memory meanwhile."""
        self._rows.setdefault(scope, value)

    def set(self, scope: str, value: State, *, dirty: bool) -> None:
        self._rows[scope] = value
        self._rows.move_to_end(scope)
        if dirty:
            self._dirty.add(scope)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def take_dirty(self) -> list[tuple[str, State | None]]:
        taken = [(scope, self._rows[scope]) for scope in self._dirty]
        self._dirty.clear()
        return taken

    def mark_dirty(self, scopes: list[str]) -> None:
        self._dirty.update(s for s in scopes if s in self._rows)

    def dirty_scopes(self) -> frozenset[str]:
        return frozenset(self._dirty)

    def drop(self, scope: str) -> None:
        """Forget a scope (its committed value is read again on next use)."""
        self._rows.pop(scope, None)
        self._dirty.discard(scope)

    def evict(self) -> None:
        """Drop least recently used clean scopes while over `max_rows`."""
        excess = len(self._rows) - self._max_rows
        victims: list[str] = []
        for scope in self._rows:  # oldest first
            if len(victims) >= excess:
                break
            if scope not in self._dirty:
                victims.append(scope)
        for scope in victims:
            del self._rows[scope]
