"""Storage on both backends: keys, the usage ledger, atomic state, idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import trio

from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord, UsageRecord
from core import idempotency as idem
from core.errors import Conflict

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_key(n: int, tenant: str = "t1", **changes: Any) -> KeyRecord:
    values: dict[str, Any] = {
        "id": f"key_{n}",
        "prefix": f"umg_{n:04d}",
        "secret_hash": f"{n:064x}",
        "tenant": tenant,
        "project": "p1",
        "name": None,
        "rpm": 60,
        "tpm": None,
        "budget_usd": Decimal("12.5"),
        "budget_period": "month",
        "created_at": T0 + timedelta(seconds=n),
        "revoked_at": None,
    }
    return KeyRecord(**{**values, **changes})


def make_usage(n: int, at: datetime, tenant: str = "t1", **changes: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "id": f"use_{n}",
        "request_id": f"req_{n}",
        "at": at,
        "tenant": tenant,
        "project": "p1",
        "key_id": "key_1",
        "endpoint": "responses",
        "model": "gpt-4.1",
        "provider": "openai",
        "deployment": "openai/gpt-4.1",
        "input_tokens": 10,
        "output_tokens": 20,
        "cached_input_tokens": 3,
        "cache_write_tokens": 0,
        "reasoning_tokens": 5,
        "cost": Decimal("0.0000012345"),
        "price_version": "2026-01",
        "status": "ok",
        "error_code": None,
        "latency_ms": 120,
        "ttft_ms": None,
        "attempts": 1,
        "stream": True,
    }
    return UsageRecord(**{**values, **changes})


async def test_migrate_is_idempotent_and_health(storage: Storage) -> None:
    await storage.migrate()
    await storage.migrate()
    assert await storage.health() is True
    assert await storage.count_keys() == 0


async def test_keys_round_trip_and_revocation(storage: Storage) -> None:
    first, second = make_key(1, name="ci"), make_key(2, tenant="t2", budget_usd=None, tpm=1000)
    await storage.insert_key(first)
    await storage.insert_key(second)
    assert await storage.key_by_prefix("umg_0001") == first
    assert await storage.key_by_id("key_2") == second
    assert await storage.key_by_prefix("umg_9999") is None
    assert await storage.list_keys() == [first, second]
    assert await storage.list_keys("t2") == [second]
    assert await storage.count_keys() == 2

    at = T0 + timedelta(days=1)
    revoked = await storage.revoke_key("umg_0001", at)  # by prefix
    assert revoked is not None and revoked.revoked_at == at and revoked.id == "key_1"
    again = await storage.revoke_key("key_1", at + timedelta(hours=1))  # by id: kept
    assert again is not None and again.revoked_at == at
    assert await storage.revoke_key("nope", at) is None
    fetched = await storage.key_by_prefix("umg_0001")
    assert fetched is not None and fetched.revoked_at == at
    assert fetched.revoked_at.tzinfo is not None
    assert (await storage.key_by_id("key_2")) == second  # untouched


async def test_key_prefix_and_id_are_unique(storage: Storage) -> None:
    await storage.insert_key(make_key(1))
    with pytest.raises(Conflict):
        await storage.insert_key(make_key(2, prefix="umg_0001"))
    with pytest.raises(Conflict):
        await storage.insert_key(make_key(1, prefix="umg_other"))
    assert await storage.count_keys() == 1


async def test_ledger_is_idempotent_on_request_id_and_money_is_exact(storage: Storage) -> None:
    row = make_usage(1, T0)
    assert await storage.insert_usage(row) is True
    retry = make_usage(2, T0 + timedelta(seconds=5), request_id="req_1", cost=Decimal("9"))
    assert await storage.insert_usage(retry) is False
    assert await storage.insert_usage(row) is False
    assert await storage.usage_count() == 1
    [stored] = await storage.usage_rows("t1", T0, T0 + timedelta(seconds=1))
    assert stored == row
    assert stored.cost == Decimal("0.0000012345") and str(stored.cost) == "0.0000012345"
    assert isinstance(stored.cost, Decimal) and stored.stream is True


async def test_a_row_that_cannot_be_stored_fails_alone_and_the_writer_keeps_going(
    storage: Storage,
) -> None:
    """A token count beyond 64 bits in a batch of 8 (SQLite fails to bind it with an
    OverflowError, Postgres refuses it): only that row's caller gets an error, one of
    `storage.errors` (which the driver logs on umg.ledger), the other rows are committed,
    and the writer takes the next row as before."""
    answers: dict[int, bool | BaseException] = {}

    async def record(n: int, **changes: Any) -> None:
        try:
            answers[n] = await storage.insert_usage(make_usage(n, T0, **changes))
        except storage.errors as err:
            answers[n] = err

    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, 0)  # a batch alone
        await trio.testing.wait_all_tasks_blocked()
        for n in range(1, 9):  # queued meanwhile: the next batch, together
            nursery.start_soon(lambda n=n: record(n, **({"input_tokens": 2**63} if n == 4 else {})))
    assert isinstance(answers.pop(4), storage.errors)
    assert answers == {n: True for n in range(9) if n != 4}
    await record(9)
    assert answers[9] is True
    assert await storage.usage_count() == 9


async def test_money_values_are_canonical_on_both_backends(storage: Storage) -> None:
    costs = [Decimal("0"), Decimal("1.5"), Decimal("0.0000000001"), Decimal("99999999999999999999.9999999999")]
    for n, cost in enumerate(costs):
        await storage.insert_usage(make_usage(n, T0 + timedelta(seconds=n), cost=cost))
    rows = await storage.usage_rows("t1", T0, T0 + timedelta(minutes=1))
    assert [r.cost for r in rows] == costs
    assert [str(r.cost) for r in rows] == [
        "0E-10", "1.5000000000", "1E-10", "99999999999999999999.9999999999"
    ]


async def test_money_that_would_be_rounded_is_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="NUMERIC"):
        await storage.insert_usage(make_usage(1, T0, cost=Decimal("0.00000000001")))
    with pytest.raises(ValueError, match="NUMERIC"):
        await storage.insert_usage(make_usage(2, T0, cost=Decimal("1E20")))
    assert await storage.usage_count() == 0


async def test_usage_rows_window_is_start_inclusive_end_exclusive(storage: Storage) -> None:
    times = [T0 - timedelta(microseconds=1), T0, T0 + timedelta(minutes=30), T0 + timedelta(hours=1)]
    for n, at in enumerate(times):
        await storage.insert_usage(make_usage(n, at))
    await storage.insert_usage(make_usage(9, T0 + timedelta(minutes=1), tenant="t2"))
    rows = await storage.usage_rows("t1", T0, T0 + timedelta(hours=1))
    assert [r.request_id for r in rows] == ["req_1", "req_2"]
    assert all(r.at.utcoffset() == timedelta(0) for r in rows)
    # the same instants given in another zone select the same rows
    plus2 = timezone(timedelta(hours=2))
    shifted = await storage.usage_rows("t1", T0.astimezone(plus2), (T0 + timedelta(hours=1)).astimezone(plus2))
    assert shifted == rows
    assert [r.request_id for r in await storage.usage_rows("t2", T0, T0 + timedelta(hours=1))] == ["req_9"]


def _increment(state: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    count = (state or {}).get("count", 0) + 1
    return count, {"count": count}


async def test_update_state_concurrent_increments(storage: Storage) -> None:
    seen: list[int] = []

    async def bump() -> None:
        seen.append(await storage.update_state("counter", _increment))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(bump)
    assert await storage.read_state("counter") == {"count": 20}
    assert sorted(seen) == list(range(1, 21))


async def test_update_state_across_two_storage_instances(storage_url: str) -> None:
    """Two Storage objects (two pools / two connections) act like two gateway processes.
    On SQLite one process owns the state: the second is refused (see test_storage_sqlite)."""
    if storage_url.startswith("sqlite"):
        pytest.skip("SQLite state has one owner: tests/adapters/test_storage_sqlite.py")
    stores = [open_storage(storage_url), open_storage(storage_url)]
    await stores[0].migrate()
    await stores[1].migrate()
    try:
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(stores[n % 2].update_state, "shared", _increment)
        assert await stores[0].read_state("shared") == {"count": 40}
        assert await stores[1].read_state("shared") == {"count": 40}
    finally:
        for store in stores:
            await store.close()


async def test_update_state_failure_rolls_back(storage: Storage) -> None:
    await storage.update_state("s", lambda state: (None, {"v": "1", "nested": [1, 2]}))

    def broken(state: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
        raise RuntimeError("rule failed")

    with pytest.raises(RuntimeError, match="rule failed"):
        await storage.update_state("s", broken)
    assert await storage.read_state("s") == {"v": "1", "nested": [1, 2]}
    assert await storage.read_state("missing") is None
    first_seen = await storage.update_state("new", lambda state: (state, {"n": 1}))
    assert first_seen is None


async def test_update_state_fn_runs_on_the_trio_thread(storage: Storage) -> None:
    """Functions may read a Trio clock (the job service's do)."""
    now = await storage.update_state("clock", lambda s: (trio.current_time(), {}))
    assert isinstance(now, float)


async def test_idempotency_keys_claim_replay_release_per_tenant(storage: Storage) -> None:
    policy = idem.Policy(ttl_seconds=60.0, lock_seconds=5.0)
    answer = idem.Answer(200, (("content-type", "text/event-stream"),), (b"data: 1\n\n", b"\x00\xff"))

    async def step(tenant: str, key: str, event: idem.Event) -> idem.Decision:
        return await storage.idempotency_step(tenant, key, lambda r: idem.step(r, event, policy)[::-1])

    assert await step("t1", "k", idem.Arrive("fp", "o1", 100.0)) == idem.Claimed("o1")
    assert await step("t1", "k", idem.Arrive("fp", "o2", 101.0)) == idem.InProgress(1.0)
    assert await step("t2", "k", idem.Arrive("fp", "o3", 101.0)) == idem.Claimed("o3")  # per tenant
    assert await step("t1", "k", idem.Finish("o1", answer, True, 102.0)) == idem.Kept()
    assert await step("t1", "k", idem.Arrive("fp", "o4", 103.0)) == idem.Replay(answer)  # bytes intact
    assert await step("t1", "k", idem.Arrive("other", "o4", 103.0)) == idem.Mismatch()
    assert await step("t1", "k", idem.Arrive("fp", "o5", 162.0)) == idem.Claimed("o5")  # expired
    assert await step("t1", "k", idem.Finish("o5", answer, False, 163.0)) == idem.Released()
    assert await step("t1", "k", idem.Arrive("other", "o6", 163.0)) == idem.Claimed("o6")


async def test_idempotency_claims_race_to_one_winner(storage: Storage) -> None:
    policy = idem.Policy()
    decisions: list[idem.Decision] = []

    async def arrive(owner: str) -> None:
        event = idem.Arrive("fp", owner, 1.0)
        decisions.append(
            await storage.idempotency_step("t1", "race", lambda r: idem.step(r, event, policy)[::-1])
        )

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(arrive, f"o{n}")
    assert sum(isinstance(d, idem.Claimed) for d in decisions) == 1
    assert sum(isinstance(d, idem.InProgress) for d in decisions) == 7


async def test_naive_datetimes_are_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await storage.insert_usage(make_usage(1, datetime(2026, 1, 1)))


async def test_read_states_is_read_state_of_each_scope(storage: Storage, storage_url: str) -> None:
    await storage.update_state("key:a", lambda state: (None, {"spent": "1"}))
    await storage.update_state("other", lambda state: (None, {"n": 2}))
    await storage.close()
    reopened = open_storage(storage_url)  # nothing in memory: the values come from the file
    try:
        scopes = ["key:a", "missing", "other", "key:a"]
        got = await reopened.read_states(scopes)
        assert got == {"key:a": {"spent": "1"}, "missing": None, "other": {"n": 2}}
        assert got == {s: await reopened.read_state(s) for s in scopes}
        await reopened.update_state("key:a", lambda state: (None, {"spent": "5"}))
        assert (await reopened.read_states(["key:a"]))["key:a"] == {"spent": "5"}
        assert await reopened.read_states([]) == {}
    finally:
        await reopened.close()


def test_a_sqlite_row_is_each_column_as_to_sqlite_writes_it() -> None:
    """`codec.sqlite_row` works out each class's columns once; the values stay the rule's."""
    from adapters.storage import codec
    from tests.adapters.test_storage_jobs import make_job

    records: list[Any] = [
        make_usage(1, T0), make_usage(2, T0, cost=Decimal("1.5"), error_code="rate_limited"),
        make_key(1), make_key(2, revoked_at=T0 + timedelta(hours=1), budget_usd=Decimal("7")),
        make_job(1),
    ]
    for rec in records:
        expected = tuple(codec.to_sqlite(n, getattr(rec, n)) for n in codec.columns(type(rec)))
        assert codec.sqlite_row(rec) == expected
    with pytest.raises(ValueError, match="10"):
        codec.sqlite_row(make_usage(3, T0, cost=Decimal("0.00000000001")))  # money still checked


def test_codec_dumps_is_json_dumps_with_its_options() -> None:
    """The encoder made once writes what `json.dumps(separators, allow_nan=False)` does."""
    import json

    from adapters.storage import codec

    values: list[Any] = [(), [], {}, "é\u2028\"x\"", 1.5, 1e16, -0.0, 10**30, None, True,
                         [{"deployment": "a", "status": "ok", "attempt": 1, "ms": 12.25}],
                         {"b": [1, {"c": None}], "a": "z"}]
    for value in values:
        assert codec.dumps(value) == json.dumps(value, separators=(",", ":"), allow_nan=False)
    for bad in (float("nan"), [float("inf")], {1.0: object()}):
        with pytest.raises((ValueError, TypeError)):
            codec.dumps(bad)
