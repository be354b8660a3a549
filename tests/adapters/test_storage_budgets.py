"""Storage on both backends: project and tenant budget definitions, and `update_states`
(one atomic update over several state rows)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import trio

from adapters.storage.base import Storage
from adapters.storage.records import BudgetRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
State = dict[str, Any] | None


async def test_budgets_are_set_replaced_listed_and_deleted(storage: Storage) -> None:
    await storage.put_budget(BudgetRecord("t1", "p1", Decimal("5.5"), "month", T0))
    await storage.put_budget(BudgetRecord("t1", "", Decimal(100), "total", T0))
    await storage.put_budget(BudgetRecord("t2", "p1", Decimal(1), "day", T0))
    await storage.put_budget(BudgetRecord("t1", "p1", Decimal("7.25"), "day", T0))  # replaces
    assert await storage.list_budgets("t1") == [
        BudgetRecord("t1", "", Decimal("100.0000000000"), "total", T0),
        BudgetRecord("t1", "p1", Decimal("7.2500000000"), "day", T0),
    ]
    assert [(b.tenant, b.project) for b in await storage.list_budgets()] == [
        ("t1", ""), ("t1", "p1"), ("t2", "p1")]
    assert await storage.delete_budget("t1", "p1") is True
    assert await storage.delete_budget("t1", "p1") is False
    assert [b.project for b in await storage.list_budgets("t1")] == [""]


async def test_update_states_sees_and_writes_every_scope_at_once(storage: Storage) -> None:
    scopes = ("budget:a", "key:b", "budget:c")

    def first(states: dict[str, State]) -> tuple[list[str], dict[str, dict[str, Any]]]:
        assert states == dict.fromkeys(scopes)  # never written
        return sorted(states), {s: {"n": i} for i, s in enumerate(scopes)}

    assert await storage.update_states(scopes, first) == sorted(scopes)
    assert await storage.read_state("key:b") == {"n": 1}

    def boom(states: dict[str, State]) -> tuple[None, dict[str, dict[str, Any]]]:
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        await storage.update_states(scopes, boom)
    assert [await storage.read_state(s) for s in scopes] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_update_states_is_atomic_under_concurrency(storage: Storage) -> None:
    """Overlapping scope sets in different orders: no lost update, no deadlock."""
    sets = [("budget:x", "budget:y"), ("budget:y", "budget:z", "budget:x"), ("budget:z", "budget:x")]

    def bump(states: dict[str, State]) -> tuple[None, dict[str, dict[str, Any]]]:
        return None, {s: {"n": (v or {"n": 0})["n"] + 1} for s, v in states.items()}

    async def worker(scopes: tuple[str, ...]) -> None:
        for _ in range(10):
            await storage.update_states(scopes, bump)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(worker, sets[i % 3])
    counts = {s: (await storage.read_state(s) or {})["n"] for s in ("budget:x", "budget:y", "budget:z")}
    assert counts == {"budget:x": 60, "budget:y": 40, "budget:z": 40}
