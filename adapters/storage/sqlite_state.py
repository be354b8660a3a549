"""SQLite's state scopes: held in the owning process's memory, committed behind or through.

Owns: `update_state`, `update_states`, `read_state` and `read_states` on SQLite, and who
may use them: one process owns a file's state.

Rules:
- The first `update_state` / `read_state` (or `migrate` when opened with `owner=True`,
  as `umg serve` does) takes `<database>.lock` (`owner.py`); a second process gets
  `StorageBusy`.
- A scope is read from the file once, the first time it is used; requests that need it
  while it is being read wait for that read (`_loaded`).
- The owner applies `update_state` to its in-memory copy on the Trio thread, without a
  thread hop or an await between reading and writing: `rl:*`, `key:*` and `budget:*`
  scopes are committed behind, with the next ledger batch (`sqlite_writer.py`, see
  `memstate.py`); every other scope is committed before `update_state` returns, one
  at a time, shielded so memory and file never disagree.
- Callers' functions run on the Trio thread.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import trio

from adapters.storage import codec
from adapters.storage.base import State, StateFn, StatesFn
from adapters.storage.memstate import write_behind
from adapters.storage.owner import FileOwner
from adapters.storage.sqlite_writer import UPSERT_STATE, SQLiteWriter

T = TypeVar("T")

_READ_STATE = "SELECT data FROM state WHERE scope = ?"


def _state_value(row: tuple[Any, ...] | None) -> State | None:
    return None if row is None or row[0] is None else dict(json.loads(row[0]))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class SQLiteState(SQLiteWriter):
    def __init__(
        self, path: str, *, owner: bool, flush_seconds: float, queue_rows: int, rollup_seconds: float
    ) -> None:
        super().__init__(path, flush_seconds=flush_seconds, queue_rows=queue_rows, rollup_seconds=rollup_seconds)
        self._owner_at_migrate = owner
        self._owner = None if path == ":memory:" else FileOwner(path)
        self._reading: dict[str, trio.Event] = {}  # scopes being read into memory now
        self._through = trio.Lock()  # write-through scopes, one at a time

    def _own(self) -> None:
        if self._closing:
            raise RuntimeError("storage is closed")
        if self._owner is not None:
            self._owner.acquire()

    def _own_ledger(self) -> None:
        self._own()  # the rollups' rows kept behind are this process's memory too

    def _disown(self) -> None:
        if self._owner is not None:
            self._owner.release()

    async def _loaded(self, scope: str) -> None:
        """Bring `scope` into memory (one read the first time it is used). Requests that
        need it while it is being read wait for that read instead of queueing their own
        (1,000 streams opened at once on a fresh process made 1,000 reads, one after
        another, each a thread hop)."""
        self._own()
        while not self._states.loaded(scope):
            reading = self._reading.get(scope)
            if reading is not None:
                await reading.wait()  # then loaded, unless that read failed or was cancelled
                continue
            self._reading[scope] = done = trio.Event()
            try:
                row = await self._run(lambda c: c.execute(_READ_STATE, (scope,)).fetchone())
                self._states.load(scope, _state_value(row))
            finally:
                del self._reading[scope]
                done.set()

    async def update_state(self, scope: str, fn: StateFn[T]) -> T:
        await self._loaded(scope)
        if write_behind(scope):  # no await from here on: atomic on the Trio thread
            result, new = fn(self._states.value(scope))
            self._states.set(scope, new, dirty=True)
            self.writer.poke()
            return result
        async with self._through:
            await self._loaded(scope)  # it may have been dropped while we waited
            result, new = fn(self._states.value(scope))
            text = codec.dumps(new)
            with trio.CancelScope(shield=True):  # memory and file must not disagree
                await self._tx(lambda c: c.execute(UPSERT_STATE, (scope, text)))
                self._states.set(scope, new, dirty=False)
            return result

    async def read_state(self, scope: str) -> State | None:
        """A shallow copy of the state in memory (treat nested values as read-only)."""
        await self._loaded(scope)
        value = self._states.value(scope)
        return None if value is None else dict(value)

    async def read_states(self, scopes: list[str]) -> dict[str, State | None]:
        """Those not in memory are read in one query (then kept, as `read_state` does)."""
        self._own()
        missing = sorted({s for s in scopes if not self._states.loaded(s)})
        if missing:
            sql = f"SELECT scope, data FROM state WHERE scope IN ({_marks(len(missing))})"
            found = dict(await self._run(lambda c: c.execute(sql, missing).fetchall()))
            for scope in missing:  # one that got into memory meanwhile keeps its value
                self._states.load(scope, _state_value((found[scope],)) if scope in found else None)
        out: dict[str, State | None] = {}
        for scope in scopes:
            value = self._states.value(scope)
            out[scope] = None if value is None else dict(value)
        return out

    async def update_states(self, scopes: tuple[str, ...], fn: StatesFn[T]) -> T:
        """Write-behind scopes only (budgets): applied in memory with no await between
        reading and writing them, so atomic on the Trio thread."""
        wanted = tuple(dict.fromkeys(scopes))
        if not all(write_behind(s) for s in wanted):
            raise ValueError(f"update_states takes write-behind scopes only, not {wanted}")
        self._own()
        while not all(self._states.loaded(s) for s in wanted):  # a load may evict another
            for scope in wanted:
                await self._loaded(scope)
        result, new = fn({s: self._states.value(s) for s in wanted})
        for scope in wanted:
            self._states.set(scope, new[scope], dirty=True)
        self.writer.poke()
        return result
