"""Reading ledger rows by the id a client sent in `x-request-id` (`LedgerFilter.
client_request_id`, adapters/storage/ledger.py), on SQLite and Postgres: only that id's
rows, newest first, within the tenant when one is set, paged like any read; the lookup
goes through migration 013's index; and a series refuses the filter (the rollups do not
keep the id).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from attrs import evolve

from adapters.storage import ledger, sources
from adapters.storage.base import Storage
from adapters.storage.ledger import LedgerFilter
from tests.adapters.test_ledger_queries import T0, WIDE, row


def by_client(client_request_id: str, **changes: Any) -> LedgerFilter:
    return evolve(WIDE, client_request_id=client_request_id, **changes)


async def fill(storage: Storage) -> None:
    rows = [
        row(1, at=T0, client_request_id="order-1"),
        row(2, at=T0 + timedelta(minutes=1), client_request_id="order-2"),
        row(3, at=T0 + timedelta(minutes=2), client_request_id="order-1", tenant="other"),
        row(4, at=T0 + timedelta(minutes=3)),  # the client sent no id
        row(5, at=T0 + timedelta(minutes=4), client_request_id="order-1"),  # a retry, same id
    ]
    for r in rows:
        await storage.insert_usage(r)


async def test_a_page_by_client_request_id_holds_only_that_ids_rows(storage: Storage) -> None:
    await fill(storage)
    ids = [r.id for r in await storage.ledger_page(by_client("order-1"), 10, None)]
    assert ids == ["use_5", "use_3", "use_1"]  # every tenant's (an admin read), newest first
    ids = [r.id for r in await storage.ledger_page(by_client("order-1", tenant="t1"), 10, None)]
    assert ids == ["use_5", "use_1"]  # a tenant's read: its own rows only
    first = await storage.ledger_page(by_client("order-1", tenant="t1"), 1, None)
    rest = await storage.ledger_page(by_client("order-1", tenant="t1"), 10, first[-1].id)
    assert [r.id for r in first + rest] == ["use_5", "use_1"]  # pages as any read does
    assert [r.client_request_id for r in first] == ["order-1"]
    assert await storage.ledger_page(by_client("order-3"), 10, None) == []
    narrow = by_client("order-1", start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3))
    assert [r.id for r in await storage.ledger_page(narrow, 10, None)] == ["use_3"]  # the window holds


@pytest.mark.parametrize("source", [sources.HOURLY, sources.HOURLY_ALL, sources.HOURLY_MODEL, sources.DAILY])
def test_a_rollup_read_refuses_the_filter(source: sources.Source) -> None:
    part = sources.Part(source, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="client_request_id"):
        ledger.where(ledger.SQLITE, by_client("order-1"), part)


async def test_the_lookup_goes_through_its_index(storage_url: str, storage: Storage) -> None:
    await fill(storage)
    for f in (by_client("order-1"), by_client("order-1", tenant="t1")):
        sql, args = ledger.page_query(
            ledger.SQLITE if storage_url.startswith("sqlite") else ledger.POSTGRES, "id", f, 50, None
        )
        assert "usage_client_request_id" in plan_indexes(storage_url, sql, args), sql


def plan_indexes(storage_url: str, sql: str, args: list[Any]) -> str:
    """The index names in the plan the database chooses for `sql` (Postgres with
    sequential scans priced out, so that a small table is still read through an index)."""
    if storage_url.startswith("sqlite"):
        conn = sqlite3.connect(storage_url.removeprefix("sqlite:///"))
        try:
            return " | ".join(r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        finally:
            conn.close()
    with psycopg.connect(storage_url) as pg, pg.transaction():
        pg.execute("SET LOCAL enable_seqscan = off")
        found = pg.execute(f"EXPLAIN {sql}", args).fetchall()
    return " | ".join(str(r[0]) for r in found)
