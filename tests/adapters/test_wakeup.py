"""What wakes idle workers: `Wakeup` on a fake clock, and LISTEN/NOTIFY on a real
Postgres (a job queued or a webhook message enqueued by another storage, i.e. another
process, wakes the listener once it is committed)."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from attrs import evolve

from adapters.clock import Clock
from adapters.storage import open_storage
from adapters.wakeup import Wakeup, listen
from tests.adapters.test_webhook_delivery import a_job, finished


async def test_wakeup_returns_when_set_when_due_or_after_the_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    del autojump_clock
    clock = Clock()
    wake = Wakeup(clock)
    start = trio.current_time()
    await wake.wait(5.0)
    assert trio.current_time() - start == pytest.approx(5.0)  # nothing: the whole wait
    wake.at(clock.epoch() + 2.0)
    wake.at(clock.epoch() + 3.0)  # the earliest due time wins
    start = trio.current_time()
    await wake.wait(5.0)
    assert trio.current_time() - start == pytest.approx(2.0, abs=1e-6)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.sleep, 1.0))
        start = trio.current_time()
        nursery.start_soon(wake.wait, 5.0)
        await trio.sleep(0.5)
        wake.set()
    assert trio.current_time() - start == pytest.approx(1.0)  # set at 0.5, the sleep 1.0
    start = trio.current_time()
    await wake.wait(5.0)  # the set was consumed, the due time passed
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_an_earlier_due_time_shortens_a_wait_already_begun(
    autojump_clock: trio.testing.MockClock,
) -> None:
    del autojump_clock
    clock = Clock()
    wake = Wakeup(clock)
    returned: list[float] = []

    async def waiter() -> None:
        await wake.wait(5.0)
        returned.append(trio.current_time() - start)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.sleep(0.5)
        wake.at(clock.epoch() + 1.0)  # a retry this process scheduled, while both wait
        wake.at(clock.epoch() + 4.0)  # later than the one known: changes nothing
    # both woke at 1.5 (not at 0.5, when the due time moved, and not at 5.0)
    assert returned == [pytest.approx(1.5, abs=1e-6)] * 2
    start = trio.current_time()
    await wake.wait(5.0)  # no set() was made, the due time passed: the whole wait
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_a_set_while_nobody_waits_is_kept_for_the_next_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    del autojump_clock
    wake = Wakeup(Clock())
    wake.set()
    start = trio.current_time()
    await wake.wait(5.0)
    assert trio.current_time() == start  # at once
    await wake.wait(5.0)
    assert trio.current_time() - start == pytest.approx(5.0)  # consumed


@pytest.mark.postgres
async def test_another_storages_work_wakes_the_listener(postgres_url: str) -> None:
    writer = open_storage(postgres_url)
    await writer.migrate()
    woken = trio.Event()
    count = 0

    def wake() -> None:
        nonlocal count
        count += 1
        woken.set()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(listen, postgres_url, wake)
            with trio.fail_after(5):
                await woken.wait()  # the wake on (re)connect, for work queued meanwhile
            for change in ("insert", "finish"):
                woken = trio.Event()
                if change == "insert":
                    await writer.insert_job(a_job("job_w", "https://h.example/x"))
                else:  # the job's end enqueues a webhook message: NOTIFY again
                    await writer.update_job("job_w", lambda j: evolve(finished(j)))
                with trio.fail_after(5):
                    await woken.wait()
            nursery.cancel_scope.cancel()
        assert count == 3
    finally:
        await writer.close()
