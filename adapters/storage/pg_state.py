"""Postgres state scopes: read and changed under row locks, inside the caller's transaction.

Owns: the SQL of `update_state`, `update_states`, `read_state` and `read_states` on
Postgres (the backend runs each function here as one transaction, `pg_pool.py`).

Rules:
- Row locks, not process locks: a change is `INSERT ... ON CONFLICT DO NOTHING` (the row
  exists from then on) then `SELECT ... FOR UPDATE`, the caller's function, and the
  `UPDATE`, so every process using the database sees the change whole or not at all.
- Several scopes are locked in sorted order, so two callers over overlapping scopes
  cannot deadlock.
- Callers' functions run on the Trio thread (`trio.from_thread.run_sync`) while the
  transaction holds the lock; keep them quick.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
import trio

from adapters.storage import codec
from adapters.storage.base import State, StateFn, StatesFn

T = TypeVar("T")
Conn = psycopg.Connection[Any]

_CREATE = "INSERT INTO state (scope, data) VALUES (%s, NULL) ON CONFLICT (scope) DO NOTHING"
_STORE = "UPDATE state SET data = %s::jsonb, updated_at = now() WHERE scope = %s"


def update(c: Conn, scope: str, fn: StateFn[T]) -> T:
    c.execute(_CREATE, (scope,))
    row = c.execute("SELECT data FROM state WHERE scope = %s FOR UPDATE", (scope,)).fetchone()
    current = None if row is None else row[0]
    result, new = trio.from_thread.run_sync(fn, current)
    c.execute(_STORE, (codec.dumps(new), scope))
    return result


def update_many(c: Conn, scopes: tuple[str, ...], fn: StatesFn[T]) -> T:
    ordered = sorted(set(scopes))  # one lock order for every caller: no deadlock
    for scope in ordered:
        c.execute(_CREATE, (scope,))
    rows = c.execute(
        "SELECT scope, data FROM state WHERE scope = ANY(%s) ORDER BY scope FOR UPDATE",
        (ordered,),
    ).fetchall()
    current: dict[str, State | None] = {scope: data for scope, data in rows}
    result, new = trio.from_thread.run_sync(fn, current)
    for scope in ordered:
        c.execute(_STORE, (codec.dumps(new[scope]), scope))
    return result


def read(c: Conn, scope: str) -> State | None:
    row = c.execute("SELECT data FROM state WHERE scope = %s", (scope,)).fetchone()
    return None if row is None or row[0] is None else dict(row[0])


def read_many(c: Conn, scopes: list[str]) -> dict[str, State | None]:
    rows = c.execute("SELECT scope, data FROM state WHERE scope = ANY(%s)", (list(scopes),)).fetchall()
    found = {str(scope): data for scope, data in rows}
    return {s: None if found.get(s) is None else dict(found[s]) for s in scopes}
