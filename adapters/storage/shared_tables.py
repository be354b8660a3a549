"""Table operations both backends run the same way: usage reads, budgets, idempotency
keys, stored stream events.

Owns: those `Storage` methods, written once over a backend's placeholder and row codec
(`_rows`, a `codec.RowCodec`), its idempotency dialect (`_idem`) and its two ways to run
a transaction: `_run` (reads; on Postgres every call) and `_tx` (writes: `BEGIN
IMMEDIATE` on SQLite, the same `_run` on Postgres).

Rules:
- Each method is one transaction; what runs inside it is the SQL of `base.py`,
  `idem_rows.py` and `streams.py`, shared by both backends already.
- No method here adds a call between its caller and the backend's transaction: the
  backends inherit them (a mixin), they do not delegate to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from adapters.storage import codec, idem_rows
from adapters.storage import streams as stream_sql
from adapters.storage.base import JOB_COUNTS, budget_list_sql, budget_upsert_sql
from adapters.storage.idem_rows import StepFn
from adapters.storage.ledger import Query
from adapters.storage.records import BudgetRecord, UsageRecord
from adapters.storage.streams import StoredEvent, StreamHead, StreamWrite

T = TypeVar("T")

_USAGE_COLS = ", ".join(codec.columns(UsageRecord))


class SharedTables:
    _rows: codec.RowCodec
    _idem: idem_rows.Dialect

    async def _run(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    # -- the usage ledger (the ledger reads: base.LedgerReads) -------------------------

    async def usage_rows(self, tenant: str, start: datetime, end: datetime) -> list[UsageRecord]:
        m = self._rows.mark
        sql = (
            f"SELECT {_USAGE_COLS} FROM usage WHERE tenant = {m} AND at >= {m} AND at < {m}"
            " ORDER BY at, id"
        )
        args = (tenant, self._rows.when(start), self._rows.when(end))
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [self._rows.record(UsageRecord, r) for r in rows]

    async def usage_count(self) -> int:
        return int(await self._run(lambda c: c.execute("SELECT count(*) FROM usage").fetchone()[0]))

    async def job_counts(self) -> dict[str, int]:
        rows = await self._run(lambda c: c.execute(JOB_COUNTS).fetchall())
        return {str(status): int(n) for status, n in rows}

    async def _fetch(self, query: Query) -> list[tuple[Any, ...]]:
        sql, args = query
        return await self._run(lambda c: c.execute(sql, args).fetchall())

    def _usage_record(self, row: tuple[Any, ...]) -> UsageRecord:
        record: UsageRecord = self._rows.record(UsageRecord, row)
        return record

    # -- project and tenant budgets ----------------------------------------------------

    async def put_budget(self, rec: BudgetRecord) -> None:
        row = self._rows.row(rec)
        await self._tx(lambda c: c.execute(budget_upsert_sql(self._rows.mark), row))

    async def delete_budget(self, tenant: str, project: str) -> bool:
        m = self._rows.mark
        sql = f"DELETE FROM budgets WHERE tenant = {m} AND project = {m}"
        return bool(await self._tx(lambda c: c.execute(sql, (tenant, project)).rowcount))

    async def list_budgets(self, tenant: str | None = None) -> list[BudgetRecord]:
        sql, args = budget_list_sql(self._rows.mark, tenant)
        rows = await self._run(lambda c: c.execute(sql, args).fetchall())
        return [self._rows.record(BudgetRecord, r) for r in rows]

    # -- idempotency keys (idem_rows.py) ------------------------------------------------

    async def idempotency_step(self, tenant: str, key: str, fn: StepFn[T]) -> T:
        return await self._tx(lambda c: idem_rows.step_in(c, self._idem, tenant, key, fn))

    # -- stored response events (streams.py) --------------------------------------------

    async def stream_write(self, writes: Sequence[StreamWrite]) -> None:
        await self._tx(lambda c: stream_sql.write(c, self._rows.mark, writes))

    async def stream_read(
        self, tenant: str, stream_id: str, after: int
    ) -> tuple[StreamHead | None, list[StoredEvent]]:
        return await self._run(lambda c: stream_sql.read(c, self._rows.mark, tenant, stream_id, after))

    async def stream_prune(self, now: float) -> int:
        return await self._tx(lambda c: stream_sql.prune(c, self._rows.mark, now))
