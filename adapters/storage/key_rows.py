"""API key rows, the same on both backends: insert, lookups, revoke, changes, count.

Owns: the SQL of the `keys` table and what a key write does to the process's key cache
(`keycache.py`), for SQLite and Postgres alike; each backend gives its placeholders and
row codec (`KeyDialect`) and its ways to run a read and a write transaction.

Rules:
- Every write forgets the prefixes it touched in the cache, also when it fails (a
  revoke that raised may still have committed): the next lookup reads the row.
- A key whose id or prefix is taken raises `core.errors.Conflict` (the backend names
  the driver's duplicate error in its dialect).
- `key_by_prefix`, the one lookup on the request path, asks the cache first (a hit
  makes no call into `KeyQueries`); a miss reads through `by_prefix`.

`KeyMethods` is the backends' `Storage` key methods over their `KeyQueries`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from attrs import frozen

from adapters.storage import codec
from adapters.storage.base import key_changes
from adapters.storage.keycache import KeyCache
from adapters.storage.records import KeyRecord
from core.errors import Conflict

Run = Callable[[Callable[[Any], Any]], Awaitable[Any]]

_COLS = ", ".join(codec.columns(KeyRecord))


@frozen
class KeyDialect:
    rows: codec.RowCodec  # the backend's placeholder and row codec
    values: str  # the placeholders of one whole row, for the INSERT
    duplicate: tuple[type[Exception], ...]  # what the driver raises for a taken id or prefix


class KeyQueries:
    def __init__(self, dialect: KeyDialect, *, read: Run, write: Run, cache: KeyCache) -> None:
        self._d = dialect.rows
        self._duplicate = dialect.duplicate
        self._read = read
        self._write = write
        self._cache = cache
        m = dialect.rows.mark
        self._insert = f"INSERT INTO keys ({_COLS}) VALUES ({dialect.values})"
        self._revoke = (
            f"UPDATE keys SET revoked_at = {m}"
            f" WHERE (id = {m} OR prefix = {m}) AND revoked_at IS NULL"
        )
        self._revoked = f"SELECT {_COLS} FROM keys WHERE id = {m} OR prefix = {m} ORDER BY id LIMIT 1"
        self._by_id = f"SELECT {_COLS} FROM keys WHERE id = {m}"

    async def insert(self, rec: KeyRecord) -> None:
        row = self._d.row(rec)
        try:
            await self._write(lambda c: c.execute(self._insert, row))
        except self._duplicate as err:
            raise Conflict("A key with this id or prefix already exists") from err
        finally:
            self._cache.forget(rec.prefix)

    async def where(self, where: str, args: tuple[Any, ...]) -> list[KeyRecord]:
        """The keys matching `where` (written with this dialect's mark), oldest first."""
        sql = f"SELECT {_COLS} FROM keys {where} ORDER BY created_at, id"
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [self._d.record(KeyRecord, r) for r in rows]

    async def by_prefix(self, prefix: str) -> KeyRecord | None:
        """Read from the database (the backend's `key_by_prefix` asks the cache first)."""
        found = await self.where(f"WHERE prefix = {self._d.mark}", (prefix,))
        return found[0] if found else None

    async def by_id(self, key_id: str) -> KeyRecord | None:
        found = await self.where(f"WHERE id = {self._d.mark}", (key_id,))
        return found[0] if found else None

    async def list(self, tenant: str | None) -> list[KeyRecord]:
        if tenant is None:
            return await self.where("", ())
        return await self.where(f"WHERE tenant = {self._d.mark}", (tenant,))

    async def revoke(self, id_or_prefix: str, at: datetime) -> KeyRecord | None:
        def apply(c: Any) -> Any:
            c.execute(self._revoke, (self._d.when(at), id_or_prefix, id_or_prefix))
            return c.execute(self._revoked, (id_or_prefix, id_or_prefix)).fetchone()

        try:
            row = await self._write(apply)
        finally:
            self._cache.forget(id_or_prefix)
        if row is None:
            return None
        record: KeyRecord = self._d.record(KeyRecord, row)
        self._cache.forget(record.prefix)
        return record

    async def count(self) -> int:
        return int(await self._read(lambda c: c.execute("SELECT count(*) FROM keys").fetchone()[0]))

    async def update(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        pairs = key_changes(changes)
        m = self._d.mark

        def apply(c: Any) -> Any:
            if pairs:
                sets = ", ".join(f"{col} = {m}" for col, _ in pairs)
                values = [self._d.value(col, v) for col, v in pairs]
                c.execute(f"UPDATE keys SET {sets} WHERE id = {m}", (*values, key_id))
            return c.execute(self._by_id, (key_id,)).fetchone()

        row = await self._write(apply)
        if row is None:
            return None
        record: KeyRecord = self._d.record(KeyRecord, row)
        self._cache.forget(record.prefix)  # a changed limit applies to the next request
        return record


class KeyMethods:
    """The `Storage` key methods, for a backend that sets `keys` (its cache) and
    `_key_rows` (its `KeyQueries`)."""

    keys: KeyCache
    _key_rows: KeyQueries

    async def insert_key(self, rec: KeyRecord) -> None:
        await self._key_rows.insert(rec)

    async def key_by_prefix(self, prefix: str) -> KeyRecord | None:
        return await self.keys.lookup(prefix, lambda: self._key_rows.by_prefix(prefix))

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        return await self._key_rows.by_id(key_id)

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        return await self._key_rows.list(tenant)

    async def revoke_key(self, id_or_prefix: str, at: datetime) -> KeyRecord | None:
        return await self._key_rows.revoke(id_or_prefix, at)

    async def count_keys(self) -> int:
        return await self._key_rows.count()

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        return await self._key_rows.update(key_id, changes)
