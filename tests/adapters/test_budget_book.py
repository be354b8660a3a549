"""The budget definitions cache (adapters/budgets.BudgetBook) on a real SQLite storage:
an expiry under load costs one read of the tenant's budgets, not one per request in
flight, and a change through this process while a read is in flight is not lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing

from adapters.budgets import BudgetBook
from adapters.clock import Clock
from adapters.storage import open_storage
from adapters.storage.records import BudgetRecord
from adapters.storage.sqlite import SQLiteStorage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class CountedReads(SQLiteStorage):
    """The real SQLite storage, counting `list_budgets`; with `release`, a read's answer
    is held back until it is set (so concurrent requests overlap the read)."""

    reads = 0
    release: trio.Event | None = None

    async def list_budgets(self, tenant: str | None = None) -> list[BudgetRecord]:
        self.reads += 1
        release = self.release  # the one in place when the read began
        found = await super().list_budgets(tenant)
        if release is not None:
            await release.wait()
        return found


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[CountedReads]:
    opened = open_storage(f"sqlite:///{tmp_path}/budgets.db")
    assert isinstance(opened, SQLiteStorage)
    opened.__class__ = CountedReads
    await opened.migrate()
    await opened.put_budget(BudgetRecord("t1", "", Decimal(100), "total", T0))
    yield opened  # type: ignore[misc]
    await opened.close()


async def test_concurrent_misses_of_one_tenant_make_one_read(
    storage: CountedReads, mock_clock: trio.testing.MockClock
) -> None:
    book = BudgetBook(storage, Clock(), ttl=1.0)
    got: list[tuple[BudgetRecord, ...]] = []

    async def ask() -> None:
        got.append(await book.definitions("t1"))

    for expected_reads in (1, 2):
        storage.release = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            storage.release.set()
        assert storage.reads == expected_reads
        assert len(got) == 64 and all(g == got[0] for g in got) and got[0][0].tenant == "t1"
        got.clear()
        mock_clock.jump(1.5)  # expired: the next burst reads once again


async def test_a_budget_set_here_while_a_read_is_in_flight_is_seen_by_the_waiters(
    storage: CountedReads, mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    book = BudgetBook(storage, Clock(), ttl=60.0)
    held = storage.release = trio.Event()
    got: dict[str, tuple[BudgetRecord, ...]] = {}

    async def ask(name: str) -> None:
        got[name] = await book.definitions("t1")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "first")
        await trio.testing.wait_all_tasks_blocked()  # its read is done, its answer held
        nursery.start_soon(ask, "waiter")
        await trio.testing.wait_all_tasks_blocked()  # waits for that read
        storage.release = None
        await book.put(BudgetRecord("t1", "p1", Decimal(5), "day", T0))  # forgets "t1"
        await trio.testing.wait_all_tasks_blocked()  # the waiter read again, at once
        held.set()
    projects = {name: sorted(r.project for r in found) for name, found in got.items()}
    assert projects == {"first": [""], "waiter": ["", "p1"]}  # the first read before the put
    assert storage.reads == 2
    assert sorted(r.project for r in await book.definitions("t1")) == ["", "p1"]  # cached:
    assert storage.reads == 2  # the stale answer was not stored, the waiter's was
