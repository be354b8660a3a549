"""adapters/budget_slices.py: processes grant and settle from slices of the shared budget
rows; the rows stay exact (spent + reserved <= limit at every moment), charges reach the
row's spent in bounded time, a dead process's slice is freed when its lease expires.

Two Storage objects on one Postgres database act as two processes. Trio's `MockClock`
(it moves only when a test jumps it) decides when holds and leases are over; the epoch
follows it, so the rows' lease expiries do too."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
import trio.testing

from adapters.budget_slices import HOLD_SECONDS, LEASE_SECONDS, BudgetSlices
from adapters.budgets import Covering
from adapters.clock import Clock
from adapters.storage import open_storage
from adapters.storage.base import Storage
from core import budget, grants
from core.billing import worst_case_cost
from core.catalog import Price

pytestmark = pytest.mark.postgres

SCOPE = "key:key_1:total"
PRICE = Price(input=Decimal("10"), output=Decimal("40"))  # USD per 1M tokens
UNIT = worst_case_cost(100, 20, PRICE)  # 0.0018: one request's worst case


def cover(limit: Decimal) -> tuple[Covering, ...]:
    return (Covering("key", grants.KEY_BUDGET_LABEL, "t1", None, limit, "total", SCOPE),)


def ask(rid: str) -> grants.Ask:
    return grants.Ask(rid=rid, price=PRICE, input_tokens=100, wanted=20, capped=True,
                      request_remaining=None)


async def row(storage: Storage) -> budget.BudgetState:
    state = await storage.read_state(SCOPE)
    assert state is not None
    return budget.BudgetState.from_dict(state)


async def settle(slices: BudgetSlices, storage: Storage, rid: str, actual: Decimal) -> None:
    """As `Limits.settle`: in the slice when it holds `rid`, else in the row."""
    rest = await slices.close_locally((SCOPE,), rid, actual)
    if rest:

        def apply(states: dict[str, dict[str, Any] | None]) -> tuple[None, dict[str, dict[str, Any]]]:
            (after,) = grants.settle_all([budget.BudgetState.from_dict(states[SCOPE] or {})], rid, actual)
            return None, {SCOPE: after.to_dict()}

        await storage.update_states(rest, apply)


@pytest.fixture
async def stores(postgres_url: str) -> list[Storage]:
    made = [open_storage(postgres_url), open_storage(postgres_url)]
    await made[0].migrate()
    yield made  # type: ignore[misc]
    for s in made:
        await s.close()


async def test_two_processes_run_a_budget_down_exactly_with_few_transactions(
    stores: list[Storage], mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    limit = Decimal("0.5")  # about 277 worst cases
    slices = [BudgetSlices(s, Clock()) for s in stores]
    charged = [Decimal(0), Decimal(0)]
    granted = [0, 0]
    refused: list[grants.Refused] = []
    seen: list[budget.BudgetState] = []
    early: list[int] = []  # transactions made by the 150th grant

    async def stream(i: int, n: int) -> None:
        decision = await slices[i].grant(cover(limit), ask(f"r{i}:{n}"))
        if isinstance(decision, grants.Refused):
            refused.append(decision)
            return
        assert decision.reserved is not None and decision.reserved <= UNIT  # less: capped, near the end
        granted[i] += 1
        if sum(granted) == 150:  # far from the limit still (150 of about 370)
            early.append(slices[0].leases + slices[1].leases)
        await trio.lowlevel.checkpoint()
        actual = decision.reserved * Decimal("0.75")  # a real cost below the worst case
        await settle(slices[i], stores[i], f"r{i}:{n}", actual)
        charged[i] += actual
        seen.append(await row(stores[i]))

    async def process(i: int) -> None:
        for wave in range(40):
            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(stream, i, wave * 10 + n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(process, 0)
        nursery.start_soon(process, 1)
    for s in slices:
        await s.aclose()
    final = await row(stores[0])
    # exact: every settled cent is in the row, nothing is still held, never over the limit
    assert final.spent == sum(charged) and final.reserved == 0 and final.leases == ()
    assert final.spent <= limit
    assert all(s.spent + s.reserved <= s.limit for s in seen)
    assert min(granted) > 0 and refused
    assert all("The key's budget cannot pay" in r.error.message for r in refused)
    # run to the end: what is left cannot pay for one more worst case (actual is 3/4 of it)
    assert limit - final.spent < UNIT * 2
    # slices while far from the limit: a transaction per about 10 grants, not per grant
    print(granted, len(refused), early, slices[0].leases + slices[1].leases)
    assert early[0] < 150 / 5
    # per request near the end (and each refusal is one), so in all fewer than grants + refusals
    assert slices[0].leases + slices[1].leases < sum(granted) // 2 + len(refused)


async def test_settles_reach_the_rows_spent_within_two_hold_times(
    stores: list[Storage], mock_clock: trio.testing.MockClock
) -> None:
    slices = BudgetSlices(stores[0], Clock())
    decision = await slices.grant(cover(Decimal(1)), ask("r1"))
    assert isinstance(decision, grants.Granted)
    leased = await row(stores[0])
    assert leased.leased > UNIT and leased.spent == 0  # a slice, not one reservation
    await slices.close_locally((SCOPE,), "r1", Decimal("0.001"))
    assert (await row(stores[0])).spent == 0  # charged in the slice only
    mock_clock.jump(2 * HOLD_SECONDS)
    with trio.fail_after(5):  # the give-back task runs (its transaction takes real time)
        while (await row(stores[0])).spent == 0:
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0)
    after = await row(stores[0])
    assert (after.spent, after.reserved) == (Decimal("0.001"), Decimal(0))  # given back whole
    assert slices.held(SCOPE) is None


async def test_a_dead_processes_slice_is_freed_when_its_lease_expires(
    stores: list[Storage], mock_clock: trio.testing.MockClock
) -> None:
    dead = BudgetSlices(stores[0], Clock(), hold_seconds=10 * LEASE_SECONDS)  # asleep till after
    alive = BudgetSlices(stores[1], Clock())
    big = Decimal(1)
    decision = await dead.grant(cover(big), ask("d1"))  # leases a slice of the $1 budget
    assert isinstance(decision, grants.Granted)
    leased = await row(stores[0])
    held, (dead_lease,) = leased.reserved, [lid for lid, _, _ in leased.leases]
    assert held >= 32 * UNIT / 8  # then the process is gone: it never renews nor gives back
    # another process sees the slice as held until the lease's time is over
    assert (await row(stores[1])).available == big - held
    mock_clock.jump(LEASE_SECONDS + 1)
    decision = await alive.grant(cover(big), ask("a1"))  # any lease operation sweeps it
    assert isinstance(decision, grants.Granted)
    state = await row(stores[1])
    assert dead_lease not in [lid for lid, _, _ in state.leases]  # swept
    assert len(state.leases) == 1 and state.reserved <= big / 8 + UNIT  # the live one's
    await settle(alive, stores[1], "a1", UNIT)
    await alive.aclose()
    final = await row(stores[1])
    assert (final.spent, final.reserved) == (UNIT, 0)  # the dead one's open d1 is freed too


async def test_a_lowered_limit_applies_at_once_and_refuses_naming_the_budget(
    stores: list[Storage], mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    slices = BudgetSlices(stores[0], Clock())
    assert isinstance(await slices.grant(cover(Decimal(1)), ask("r1")), grants.Granted)
    before = slices.leases
    assert isinstance(await slices.grant(cover(Decimal(1)), ask("r2")), grants.Granted)
    assert slices.leases == before  # from the slice
    # the admin lowers the limit below what is held: the slice is not used, the row refuses
    lowered = await slices.grant(cover(Decimal("0.001")), ask("r3"))
    assert isinstance(lowered, grants.Refused)
    assert lowered.error.message.startswith("The key's budget cannot pay for this request")
    assert "of 0.001 USD" in lowered.error.message
    assert slices.leases == before + 1
    await slices.close_locally((SCOPE,), "r1", UNIT)
    await slices.close_locally((SCOPE,), "r2", UNIT)
    await slices.aclose()
    final = await row(stores[0])
    assert (final.limit, final.spent, final.reserved) == (Decimal("0.001"), 2 * UNIT, Decimal(0))


async def test_shutdown_moves_open_reservations_to_the_row(
    stores: list[Storage], mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    slices = BudgetSlices(stores[0], Clock())
    assert isinstance(await slices.grant(cover(Decimal(1)), ask("r1")), grants.Granted)
    await slices.aclose()  # r1 is still open (a stream in flight)
    state = await row(stores[0])
    assert state.reservations == (("r1", UNIT),) and state.leases == ()
    assert await slices.close_locally((SCOPE,), "r1", UNIT) == (SCOPE,)  # now the row's
