"""Key lookups are cached for a short TTL (adapters/storage/keycache.py), on both backends:
a revoke through this storage applies at once, through another storage (another process)
within the TTL; an unknown prefix is not remembered for longer than the TTL either.
Time is Trio's `MockClock`, so the TTL is crossed exactly, not by waiting."""

from __future__ import annotations

from datetime import timedelta

import trio
import trio.testing

from adapters.storage import open_storage
from adapters.storage.keycache import KEY_CACHE_SECONDS, KeyCache
from tests.adapters.test_storage import T0, make_key


async def test_revoked_here_at_once_elsewhere_within_the_ttl(
    storage_url: str, mock_clock: trio.testing.MockClock
) -> None:
    here, there = open_storage(storage_url), open_storage(storage_url)  # two "processes"
    await here.migrate()
    try:
        for n in (1, 2):
            await here.insert_key(make_key(n))
        for prefix in ("umg_0001", "umg_0002"):
            found = await there.key_by_prefix(prefix)
            assert found is not None and found.revoked_at is None

        # revoked through `there` itself: at once, by prefix or by id
        await there.revoke_key("key_1", T0)
        found = await there.key_by_prefix("umg_0001")
        assert found is not None and found.revoked_at == T0

        # revoked through `here`: `there` keeps its answer until the TTL is over ...
        await here.revoke_key("umg_0002", T0)
        mock_clock.jump(KEY_CACHE_SECONDS * 0.99)
        stale = await there.key_by_prefix("umg_0002")
        assert stale is not None and stale.revoked_at is None
        # ... and no longer
        mock_clock.jump(KEY_CACHE_SECONDS * 0.02)
        fresh = await there.key_by_prefix("umg_0002")
        assert fresh is not None and fresh.revoked_at == T0
    finally:
        await here.close()
        await there.close()


async def test_an_unknown_prefix_is_refused_for_at_most_the_ttl(
    storage_url: str, mock_clock: trio.testing.MockClock
) -> None:
    here, there = open_storage(storage_url), open_storage(storage_url)
    await here.migrate()
    try:
        assert await there.key_by_prefix("umg_0003") is None
        await here.insert_key(make_key(3))
        assert await there.key_by_prefix("umg_0003") is None  # the cached miss
        mock_clock.jump(KEY_CACHE_SECONDS)
        assert await there.key_by_prefix("umg_0003") is not None
        # created through the same storage: found at once
        assert await there.key_by_prefix("umg_0004") is None
        await there.insert_key(make_key(4))
        assert await there.key_by_prefix("umg_0004") is not None
    finally:
        await here.close()
        await there.close()


async def test_a_lookup_in_flight_during_a_revoke_does_not_cache_its_stale_answer(
    mock_clock: trio.testing.MockClock,
) -> None:
    del mock_clock
    cache = KeyCache()
    record = make_key(1)
    revoked = make_key(1, revoked_at=T0)
    reading = trio.Event()
    resume = trio.Event()

    async def slow_read() -> object:
        reading.set()
        await resume.wait()
        return record  # read before the revoke committed

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.lookup, "umg_0001", slow_read)
        await reading.wait()
        cache.forget("umg_0001")  # the revoke
        resume.set()

    async def read_again() -> object:
        return revoked

    assert await cache.lookup("umg_0001", read_again) == revoked  # type: ignore[arg-type]


async def test_the_cache_is_bounded_and_misses_cannot_push_keys_out(
    mock_clock: trio.testing.MockClock,
) -> None:
    del mock_clock
    cache = KeyCache(max_keys=2, max_misses=2)
    for n in (1, 2, 3):
        cache.put(f"umg_{n:04d}", make_key(n), cache.ticket())
    assert cache.get("umg_0001") == (False, None)  # least recently used: out
    assert cache.get("umg_0003")[0] and cache.get("umg_0002")[0]
    for n in range(10, 20):
        cache.put(f"umg_{n:04d}", None, cache.ticket())
    assert cache.get("umg_0019") == (True, None)
    assert cache.get("umg_0010") == (False, None)
    assert cache.get("umg_0003")[1] == make_key(3)  # a flood of misses left it alone
    assert cache.get("umg_0002")[1] == make_key(2)


async def test_a_revoked_key_stays_cached_as_revoked_and_the_ttl_is_per_entry(
    mock_clock: trio.testing.MockClock,
) -> None:
    cache = KeyCache(ttl=2.0)
    revoked = make_key(1, revoked_at=T0 + timedelta(hours=1))
    cache.put("umg_0001", revoked, cache.ticket())
    mock_clock.jump(1.5)
    cache.put("umg_0002", make_key(2), cache.ticket())
    mock_clock.jump(0.6)
    assert cache.get("umg_0001") == (False, None)
    assert cache.get("umg_0002") == (True, make_key(2))


async def test_concurrent_misses_of_one_prefix_make_one_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An entry that expires while many requests use the key: one read, not one each."""
    cache = KeyCache(ttl=1.0)
    record = make_key(1)
    reads = 0

    async def read() -> object:
        nonlocal reads
        reads += 1
        await trio.sleep(0.01)  # in flight while the others arrive
        return record

    got: list[object] = []

    async def lookup() -> None:
        got.append(await cache.lookup("umg_0001", read))  # type: ignore[arg-type]

    for expected_reads in (1, 2):
        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(lookup)
        assert reads == expected_reads and got == [record] * 64
        got.clear()
        autojump_clock.jump(1.5)  # expired: the next burst reads once again


async def test_a_revoke_while_others_wait_for_a_read_sends_them_to_read_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    del mock_clock
    cache = KeyCache()
    stale, revoked = make_key(1), make_key(1, revoked_at=T0)
    answers = [stale, revoked]
    in_flight = trio.Event()
    resume = trio.Event()

    async def read() -> object:
        answer = answers.pop(0)
        if answer is stale:
            in_flight.set()
            await resume.wait()
        return answer

    got: list[object] = []

    async def lookup() -> None:
        got.append(await cache.lookup("umg_0001", read))  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookup)
        await in_flight.wait()
        nursery.start_soon(lookup)  # waits for the read in flight
        await trio.testing.wait_all_tasks_blocked()
        cache.forget("umg_0001")  # the revoke, here
        await trio.testing.wait_all_tasks_blocked()
        resume.set()
    # the first lookup began before the revoke (its own answer is what it read); the
    # waiter read again and got the revoked record, and that is what is cached
    assert sorted(got, key=lambda r: r is revoked) == [stale, revoked]
    assert cache.get("umg_0001") == (True, revoked)
