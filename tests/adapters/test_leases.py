"""adapters/leases.py: processes admit from slices of the shared rate buckets; the shared
row stays the arbiter, so admitted <= limit holds exactly across processes.

Two Storage objects on one database act as two processes (Postgres: two pools). The
epoch `now` given to `take` is fixed, so no bucket refills during a test; Trio's
`MockClock` decides when a slice's hold time is over."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.testing

from adapters.clock import Clock
from adapters.leases import HOLD_SECONDS, RateSlices
from adapters.storage import open_storage
from adapters.storage.base import Storage
from core import ratelimit
from core.lease import LeasePolicy

NOW = 1_800_000_000.0
SCOPE = "rl:key_1"


def rpm(n: int) -> tuple[ratelimit.Need, ...]:
    return (ratelimit.Need("requests", n, 1.0),)


async def level(storage: Storage, kind: str = "requests") -> float:
    state = await storage.read_state(SCOPE)
    assert state is not None
    return ratelimit.buckets_from_dict(state)[kind].level


@pytest.mark.postgres
async def test_two_processes_admit_exactly_the_limit_with_few_transactions(
    postgres_url: str, mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    stores = [open_storage(postgres_url), open_storage(postgres_url)]
    await stores[0].migrate()
    slices = [RateSlices(s, Clock()) for s in stores]
    admitted = [0, 0]

    async def hammer(i: int) -> None:
        for _ in range(60):
            if isinstance(await slices[i].take(SCOPE, rpm(200), NOW), ratelimit.Admitted):
                admitted[i] += 1
            await trio.lowlevel.checkpoint()

    try:
        async with trio.open_nursery() as nursery:
            for i in (0, 1, 0, 1):  # two tasks per process
                nursery.start_soon(hammer, i)
        # every admission came from the one bucket: admitted + what the slices still
        # hold + what the row has left is the limit, exactly (none made up, none lost)
        held = sum(s.held(SCOPE, "requests") for s in slices)
        assert sum(admitted) + held + await level(stores[0]) == pytest.approx(200.0)
        assert sum(admitted) <= 200 and held <= 2 * (200 // 8)
        assert min(admitted) > 0
        # 240 takes: about 14 slices, 32 per-request takes near the end, 40 refusals
        assert slices[0].leases + slices[1].leases < 120
    finally:
        for store in stores:
            await store.close()


async def test_a_small_limit_is_taken_per_request_with_exact_headers(
    storage: Storage, mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    slices = RateSlices(storage, Clock())
    answers = [await slices.take(SCOPE, rpm(4), NOW) for _ in range(6)]
    assert [type(a).__name__ for a in answers] == ["Admitted"] * 4 + ["Refusal"] * 2
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:4]] == ["3", "2", "1", "0"]
    assert slices.leases == 6  # below 32 units a lease is one request: no slice held


async def test_an_unused_slice_is_given_back_after_its_hold_time(
    storage: Storage, mock_clock: trio.testing.MockClock
) -> None:
    slices = RateSlices(storage, Clock(), LeasePolicy(divisor=10))
    first = await slices.take(SCOPE, rpm(100), NOW)  # leases 10, admits 1
    assert isinstance(first, ratelimit.Admitted)
    assert first.headers["x-ratelimit-remaining-requests"] == "99"
    assert await level(storage) == 90.0
    second = await slices.take(SCOPE, rpm(100), NOW)  # local
    assert second.headers["x-ratelimit-remaining-requests"] == "98"
    assert (slices.leases, await level(storage)) == (1, 90.0)
    mock_clock.jump(HOLD_SECONDS)
    await slices.take(SCOPE, rpm(100), NOW)  # gives back 8, leases 9 of the 98
    assert slices.leases == 2
    assert await level(storage) == 98.0 - 9.0


async def test_a_token_debt_on_a_slice_is_charged_with_the_next_lease(
    storage: Storage, mock_clock: trio.testing.MockClock
) -> None:
    policy = LeasePolicy(divisor=4)
    slices = RateSlices(storage, Clock(), policy)
    needs = (ratelimit.Need("requests", 1000, 1.0), ratelimit.Need("tokens", 10_000, 100.0))
    assert isinstance(await slices.take(SCOPE, needs, NOW), ratelimit.Admitted)
    # k = min(1000 // 4, 10_000 // 400) = 25: 25 requests and 2,500 tokens leased
    assert (await level(storage, "requests"), await level(storage, "tokens")) == (975.0, 7500.0)
    assert slices.adjust(SCOPE, "tokens", 3000.0)  # the call used far more than estimated
    assert not slices.adjust("rl:other", "tokens", 1.0)  # no slice: the caller goes direct
    # 2,400 - 3,000 left: the next request does not fit the slice, so it leases again
    # and gives back the unused 24 requests and the 600-token debt first
    assert isinstance(await slices.take(SCOPE, needs, NOW), ratelimit.Admitted)
    assert slices.leases == 2
    requests_left = 975.0 + 24.0
    tokens_left = 7500.0 - 600.0
    k = min(int(requests_left // 4), int(tokens_left // 400))
    assert await level(storage, "requests") == requests_left - k
    assert await level(storage, "tokens") == tokens_left - 100.0 * k
    del mock_clock


async def test_a_refusal_after_slices_is_the_shared_rows_refusal(
    storage: Storage, mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    slices = RateSlices(storage, Clock())
    answers: list[Any] = [await slices.take(SCOPE, rpm(64), NOW) for _ in range(70)]
    assert sum(isinstance(a, ratelimit.Admitted) for a in answers) == 64
    refused = answers[-1]
    assert isinstance(refused, ratelimit.Refusal)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.retry_after > 0


class _Row:
    """The shared rows in memory, with a gate every lease waits at (to hold leases in
    flight) and a count of the leases in flight at once. `fail` leases raise instead."""

    errors = (OSError,)

    def __init__(self) -> None:
        self.states: dict[str, Any] = {}
        self.gate = trio.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail = 0

    async def update_state(self, scope: str, fn: Any) -> Any:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            await trio.lowlevel.checkpoint()
            if self.fail:
                self.fail -= 1
                raise OSError("the database is gone")
            result, self.states[scope] = fn(self.states.get(scope))
            return result
        finally:
            self.in_flight -= 1

    def level(self, kind: str = "requests") -> float:
        return ratelimit.buckets_from_dict(self.states[SCOPE])[kind].level


def _slices(row: _Row) -> RateSlices:
    return RateSlices(cast(Storage, row), Clock())


async def test_a_burst_of_first_requests_makes_one_lease(
    storage: Storage, mock_clock: trio.testing.MockClock
) -> None:
    del mock_clock
    slices = RateSlices(storage, Clock())
    answers: list[Any] = []

    async def one() -> None:
        answers.append(await slices.take(SCOPE, rpm(10_000), NOW))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert all(isinstance(a, ratelimit.Admitted) for a in answers) and len(answers) == 50
    # the first miss leased 1,024 (the cap); the other 49 waited for it and were served
    # from its slice instead of each making a lease of its own
    assert slices.leases == 1
    assert await level(storage) == 10_000 - 1024
    assert slices.held(SCOPE, "requests") == 1024 - 50


async def test_a_burst_larger_than_a_slice_leases_one_slice_at_a_time_and_stays_exact(
    mock_clock: trio.testing.MockClock,
) -> None:
    del mock_clock
    row = _Row()
    slices = _slices(row)
    answers: list[Any] = []

    async def one() -> None:
        answers.append(await slices.take(SCOPE, rpm(200), NOW))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(one)
    assert sum(isinstance(a, ratelimit.Admitted) for a in answers) == 100
    # slices of 25, 21, 19, 16, 14, 13 (1/8 of what is left each) cover 100 in 6 leases:
    # the misses of each round wait for the next lease rather than each taking one
    assert row.most_in_flight == 1
    assert slices.leases == 6 and row.level() == 200 - 108
    assert 100 + slices.held(SCOPE, "requests") + row.level() == 200.0


async def test_cancelling_the_leaser_strands_none_of_its_waiters(
    mock_clock: trio.testing.MockClock,
) -> None:
    del mock_clock
    row = _Row()
    row.gate = trio.Event()  # the first lease stays in flight until the gate opens
    slices = _slices(row)
    answers: list[Any] = []

    async def one() -> None:
        answers.append(await slices.take(SCOPE, rpm(1000), NOW))

    async with trio.open_nursery() as nursery:
        leaser = trio.CancelScope()

        async def lease_then_be_cancelled() -> None:
            with leaser:
                await slices.take(SCOPE, rpm(1000), NOW)
                await trio.sleep_forever()

        nursery.start_soon(lease_then_be_cancelled)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(5):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        leaser.cancel()  # the lease is shielded: it still ends, and wakes the waiters
        await trio.testing.wait_all_tasks_blocked()
        row.gate.set()
    assert len(answers) == 5 and all(isinstance(a, ratelimit.Admitted) for a in answers)
    assert slices.leases == 1 and row.level() == 1000 - 125


async def test_a_failed_lease_sends_its_waiters_to_lease_at_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    del mock_clock
    row = _Row()
    row.gate = trio.Event()
    row.fail = 1
    slices = _slices(row)
    answers: list[Any] = []

    async def one() -> None:
        try:
            answers.append(await slices.take(SCOPE, rpm(1000), NOW))
        except OSError as err:
            answers.append(err)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        in_flight = row.in_flight
        row.gate.set()
    assert in_flight == 1  # one lease in flight, five waiting for it
    assert sum(isinstance(a, OSError) for a in answers) == 1
    assert sum(isinstance(a, ratelimit.Admitted) for a in answers) == 5
    # the five did not queue one behind another after the failure: they leased together
    assert row.most_in_flight == 5


async def test_near_the_limit_misses_take_per_request_without_waiting(
    mock_clock: trio.testing.MockClock,
) -> None:
    del mock_clock
    row = _Row()
    slices = _slices(row)
    assert isinstance(await slices.take(SCOPE, rpm(8), NOW), ratelimit.Admitted)  # no slice
    row.gate = trio.Event()
    answers: list[Any] = []

    async def one() -> None:
        answers.append(await slices.take(SCOPE, rpm(8), NOW))

    async with trio.open_nursery() as nursery:
        for _ in range(9):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        in_flight = row.in_flight
        row.gate.set()
    assert in_flight == 9  # each a per-request take at once, none queued behind another
    assert sum(isinstance(a, ratelimit.Admitted) for a in answers) == 7
    assert sum(isinstance(a, ratelimit.Refusal) for a in answers) == 2
    assert slices.leases == 10 and row.level() == 0.0


async def test_after_a_hold_time_without_per_request_takes_misses_wait_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    row = _Row()
    slices = _slices(row)
    assert isinstance(await slices.take(SCOPE, rpm(8), NOW), ratelimit.Admitted)  # no slice
    row.states.clear()  # as if the row had refilled, now under a larger limit
    mock_clock.jump(HOLD_SECONDS)
    answers: list[Any] = []

    async def one() -> None:
        answers.append(await slices.take(SCOPE, rpm(1000), NOW))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert sum(isinstance(a, ratelimit.Admitted) for a in answers) == 20
    assert slices.leases == 2 and row.level() == 1000 - 125


class _Committing(_Row):
    """`_Row`, whose update, once its function has run, waits at `committing` before it
    returns (a commit in flight); `applied` is set when the function has run."""

    def __init__(self) -> None:
        super().__init__()
        self.committing = trio.Event()
        self.committing.set()
        self.applied = trio.Event()
        self.updates = 0

    async def update_state(self, scope: str, fn: Any) -> Any:
        result = await super().update_state(scope, fn)
        self.updates += 1
        self.applied.set()
        await self.committing.wait()
        return result


TOKEN_NEEDS = (ratelimit.Need("requests", 1000, 1.0), ratelimit.Need("tokens", 10_000, 100.0))


async def _lease_with_a_late_correction(row: _Committing, slices: RateSlices, before: Any = None) -> None:
    """A slice leased and put into a 600-token debt (so the next take leases again); that
    lease in flight, after it read what it gives back, a correction of 500 more tokens."""
    assert isinstance(await slices.take(SCOPE, TOKEN_NEEDS, NOW), ratelimit.Admitted)
    assert slices.adjust(SCOPE, "tokens", 3000.0)  # 2,400 - 3,000 left: the next take leases
    if before is not None:
        before()
    row.committing, row.applied = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slices.take, SCOPE, TOKEN_NEEDS, NOW)
        try:
            await row.applied.wait()  # the lease gave back 24 requests and the debt
            assert slices.adjust(SCOPE, "tokens", 500.0)  # still charged here, not on the row
        finally:
            row.committing.set()


async def test_a_correction_while_a_lease_gives_its_slice_back_is_carried_into_the_fresh_slice(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A token correction that comes while the lease giving its slice back is in flight
    is no transaction of its own: the fresh slice starts with it as a debt. What the
    row has plus what the slice holds is what it would be had the correction gone to
    the row."""
    del mock_clock
    row = _Committing()
    slices = RateSlices(cast(Storage, row), Clock(), LeasePolicy(divisor=4))
    await _lease_with_a_late_correction(row, slices)
    assert slices.leases == 2 and row.updates == 2
    tokens_left = 7500.0 - 600.0  # the first lease's 2,500 out, its debt of 600 back
    k = min(int((975.0 + 24.0) // 4), int(tokens_left // 400))
    assert row.level("tokens") == tokens_left - 100.0 * k
    assert slices.held(SCOPE, "tokens") == 100.0 * (k - 1) - 500.0
    # the second request used 100 tokens from the slice; the 500 are owed in it
    assert row.level("tokens") + slices.held(SCOPE, "tokens") == 10_000 - 2500 - 600 - 100 - 500


async def test_a_late_correction_goes_to_the_row_when_the_lease_holds_no_slice(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The same late correction, the lease this time holding no slice (the row nearly
    empty: a per-request take): the correction is charged to the row in one update
    after the lease, as it would have been without it."""
    del mock_clock
    row = _Committing()
    slices = RateSlices(cast(Storage, row), Clock(), LeasePolicy(divisor=4))

    def drained() -> None:  # another process took all but 5 of the row's requests
        state = ratelimit.buckets_from_dict(row.states[SCOPE])
        state["requests"] = ratelimit.Bucket(5.0, state["requests"].updated_at)
        row.states[SCOPE] = ratelimit.buckets_to_dict(state)

    await _lease_with_a_late_correction(row, slices, drained)
    assert slices.leases == 2 and row.updates == 3  # the lease, then the row's charge
    assert slices.held(SCOPE, "tokens") == 0.0
    # 7,500 after the first lease; its debt of 600 back; 100 taken; then the 500
    assert row.level("tokens") == 7500.0 - 600.0 - 100.0 - 500.0
