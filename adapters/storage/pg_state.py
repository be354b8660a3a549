"""Postgres state scopes: read and changed under row locks, each change one transaction.

Owns: the SQL of `update_state`, `update_states`, `read_state` and `read_states` on
Postgres, and how few round trips each takes: the statements go as pipelines on a
Trio-driven connection (`pg_line.py`, lent by `pg_lines.py`), so the caller's function
runs on the Trio thread between them, with no worker thread and no thread hop.

Rules:
- Row locks, not process locks: a change is `INSERT ... ON CONFLICT DO NOTHING` (the row
  exists from then on) then `SELECT ... FOR UPDATE`, the caller's function, and the
  `UPDATE`, so every process using the database sees the change whole or not at all.
- Two round trips a change: BEGIN, the INSERTs and the SELECTs in one pipeline; the
  caller's function; the UPDATEs and COMMIT in a second. A read is one round trip (its
  statements are one implicit transaction, committed at its sync).
- Several scopes are locked in sorted order (one `SELECT ... FOR UPDATE` each, run in
  turn), so two callers over overlapping scopes cannot deadlock.
- The caller's function raising (or its new state not being JSON) rolls the transaction
  back (one more round trip) and the error goes to the caller; a failed statement is
  rolled back by `pg_line.py`. Keep the functions quick: the rows stay locked meanwhile.
- Values go as text: the scope as itself, the state as its JSON (`codec.dumps`, read
  back with `json.loads`, as psycopg's own `jsonb` loader does).
"""

from __future__ import annotations

import json
from typing import TypeVar

import psycopg

from adapters.storage import codec
from adapters.storage.base import State, StateFn, StatesFn
from adapters.storage.pg_line import Line, Step

T = TypeVar("T")

_BEGIN = Step(None, b"BEGIN")
_COMMIT = Step(None, b"COMMIT")
_ROLLBACK = Step(None, b"ROLLBACK")
_CREATE = b"INSERT INTO state (scope, data) VALUES ($1, NULL) ON CONFLICT (scope) DO NOTHING"
_LOCK = b"SELECT data FROM state WHERE scope = $1 FOR UPDATE"
_READ = b"SELECT data FROM state WHERE scope = $1"
_STORE = b"UPDATE state SET data = $1::jsonb, updated_at = now() WHERE scope = $2"


def _create(scope: bytes) -> Step:
    return Step(b"umg_state_create", _CREATE, (scope,))


def _lock(scope: bytes) -> Step:
    return Step(b"umg_state_lock", _LOCK, (scope,))


def _read(scope: bytes) -> Step:
    return Step(b"umg_state_read", _READ, (scope,))


def _store(scope: bytes, new: State) -> Step:
    return Step(b"umg_state_store", _STORE, (codec.dumps(new).encode(), scope))


def _data(value: bytes | None) -> State | None:
    """A `data` column as text: the state it holds (None: NULL, never written)."""
    return None if value is None else dict(json.loads(value))


async def _locked(line: Line, scopes: list[bytes]) -> list[State | None]:
    """Open a transaction holding the rows of `scopes` (made if missing), locked in
    this order: their states."""
    found = await line.pipeline([_BEGIN, *map(_create, scopes), *map(_lock, scopes)])
    return [_data(res.get_value(0, 0) if res.ntuples else None) for res in found[1 + len(scopes):]]


async def _abandon(line: Line) -> None:
    """Roll the open transaction back (the caller's function failed); if even that
    fails, close the connection (the server rolls back) and leave the first error be."""
    try:
        await line.pipeline([_ROLLBACK])
    except psycopg.Error:
        line.reset()


async def _store_all(line: Line, stores: list[Step]) -> None:
    """End the open transaction: `stores` and COMMIT."""
    await line.pipeline([*stores, _COMMIT])


async def update(line: Line, scope: str, fn: StateFn[T]) -> T:
    key = scope.encode()
    (current,) = await _locked(line, [key])
    try:
        result, new = fn(current)
        store = _store(key, new)
    except BaseException:
        await _abandon(line)
        raise
    await _store_all(line, [store])
    return result


async def update_many(line: Line, scopes: tuple[str, ...], fn: StatesFn[T]) -> T:
    ordered = sorted(set(scopes))  # one lock order for every caller: no deadlock
    keys = [scope.encode() for scope in ordered]
    states = await _locked(line, keys)
    current: dict[str, State | None] = dict(zip(ordered, states, strict=True))
    try:
        result, new = fn(current)
        stores = [_store(key, new[scope]) for scope, key in zip(ordered, keys, strict=True)]
    except BaseException:
        await _abandon(line)
        raise
    await _store_all(line, stores)
    return result


async def read(line: Line, scope: str) -> State | None:
    (res,) = await line.pipeline([_read(scope.encode())])
    return _data(res.get_value(0, 0) if res.ntuples else None)


async def read_many(line: Line, scopes: list[str]) -> dict[str, State | None]:
    found = await line.pipeline([_read(scope.encode()) for scope in scopes])
    return {s: _data(res.get_value(0, 0) if res.ntuples else None) for s, res in zip(scopes, found, strict=True)}
