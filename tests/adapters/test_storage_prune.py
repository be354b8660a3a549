"""Retention on SQLite and Postgres (`Storage.prune`, adapters/storage/prune.py).

- Ledger and rollup: rows before the cut-off's midnight are gone, newer ones stay, and
  for the kept days `usage_series` (rollup for whole hours, ledger for the edges) and
  `usage_rows` equal the sums of the kept raw rows, money exactly (Hypothesis: ledgers
  spanning the cut-off).
- Jobs: only terminal jobs finished before the cut-off go; an old running or queued
  job, a recent finished one and one whose webhook is still pending stay.
- Outbox: only finished deliveries older than the cut-off go.
- Idempotency: expired answers and claims lapsed a ttl ago go; a held claim stays.
- Streams: expired buffers (head and events) go; a live stream stays.
- Budget periods: past periods' state goes; the current period, `total` and other
  scopes stay; on SQLite the owner's memory forgets a pruned period.
- Batches: a prune in batches of 3 deletes everything it may, each batch at most 3 rows
  a table; `prunable` counts what a prune would delete and deletes nothing.
- Migration 015: the idempotency prune never reads 004's `idempotency_keys_expires`;
  015 drops it on a database 014 left, and keys are pruned as before.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.retention import prune_once
from adapters.storage import ledger, open_storage, prune
from adapters.storage.base import Storage
from adapters.storage.ledger import LedgerFilter, SeriesRow
from adapters.storage.migrations import migrations
from adapters.storage.records import UsageRecord
from adapters.storage.streams import StoredEvent, StreamHead, StreamWrite
from core import idempotency, retention
from core.idempotency import Answer, Record
from core.retention import DAY, RetentionPolicy
from tests.adapters.test_storage import make_usage
from tests.adapters.test_storage_jobs import make_job

NOW = datetime(2031, 3, 10, 15, 30, tzinfo=UTC).timestamp()
POLICY = RetentionPolicy(ledger_days=10, jobs_days=5, outbox_days=5, budget_periods_days=20)
TTL = 3600.0


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def cut(policy: RetentionPolicy = POLICY, now: float = NOW) -> retention.Cutoffs:
    return retention.cutoffs(policy, TTL, now)


async def prune_all(
    storage: Storage, policy: RetentionPolicy = POLICY, now: float = NOW
) -> dict[str, int]:
    return await prune_once(storage, policy, TTL, now)


# -- ledger and rollup ------------------------------------------------------------------

# offsets in seconds around the ledger cut-off (a midnight), up to 3 days either side
offsets = st.one_of(
    st.integers(-3 * 86400, 3 * 86400),
    st.integers(-72, 72).map(lambda h: h * 3600),  # on hour edges, the cut-off's too
    st.just(0), st.just(-1),
)  # fmt: skip
rows = st.lists(
    st.tuples(offsets, st.sampled_from(["a", "b"]), st.integers(0, 10**12), st.integers(0, 900)),
    max_size=30,
)
counter = itertools.count()


def _sums(records: list[UsageRecord]) -> dict[str, tuple[int, int, Decimal]]:
    """Per UTC day: requests, input tokens, cost."""
    out: dict[str, tuple[int, int, Decimal]] = {}
    for r in records:
        day = r.at.strftime("%Y-%m-%d")
        n, tokens, cost = out.get(day, (0, 0, Decimal(0)))
        out[day] = (n + 1, tokens + r.input_tokens, cost + r.cost)
    return out


def _series_sums(series: list[SeriesRow]) -> dict[str, tuple[int, int, Decimal]]:
    return {s.bucket: (s.requests, s.input_tokens, s.cost) for s in series if s.requests}


@settings(max_examples=15)
@given(found=rows)
async def test_usage_totals_of_kept_days_equal_the_kept_rows(
    storage_url: str, found: list[tuple[int, str, int, int]]
) -> None:
    storage = open_storage(storage_url)
    await storage.migrate()
    try:
        cutoff = cut().ledger
        assert cutoff is not None
        run = next(counter)
        records = [
            make_usage(run * 1000 + i, at(cutoff + off), tenant, cost=Decimal(units).scaleb(-10),
                       input_tokens=tokens)
            for i, (off, tenant, units, tokens) in enumerate(found)
        ]  # fmt: skip
        for r in records:
            await storage.insert_usage(r)
        counts = await prune_all(storage)
        kept = [r for r in records if r.at.timestamp() >= cutoff]
        assert counts["ledger"] == len(records) - len(kept)
        window = LedgerFilter(start=at(cutoff - 4 * DAY), end=at(cutoff + 4 * DAY))
        # the rollup (whole hours) and the ledger (edges) agree with the kept raw rows
        assert _series_sums(await storage.usage_series(window, "day", None)) == _sums(kept)
        for tenant in ("a", "b"):
            window_rows = await storage.usage_rows(tenant, window.start, window.end)
            assert {r.id for r in window_rows} == {r.id for r in kept if r.tenant == tenant}
        # a window starting inside a pruned day reads only what is kept
        late = LedgerFilter(start=at(cutoff - 7200 + 1), end=at(cutoff + 3 * DAY + 1))
        expected = [r for r in kept if r.at < late.end]
        assert _series_sums(await storage.usage_series(late, "day", None)) == _sums(expected)
        assert (
            await storage.prunable("ledger", cut()) == await storage.prunable("rollup", cut()) == 0
        )
    finally:
        await delete_everything(storage)
        await storage.close()


async def delete_everything(storage: Storage) -> None:
    """Leave the next example an empty ledger (a prune with a cut-off past every row)."""
    later = NOW + 400 * DAY
    await prune_once(storage, RetentionPolicy(ledger_days=1), TTL, later)


# -- jobs and the outbox ----------------------------------------------------------------


async def test_only_terminal_jobs_finished_before_the_cutoff_go(storage: Storage) -> None:
    old, recent = at(NOW - 6 * DAY), at(NOW - 4 * DAY)
    jobs = {
        "old_done": make_job(1, status="succeeded", created_at=old, completed_at=old),
        "old_failed_no_end": make_job(2, status="failed", created_at=old),
        "old_canceled": make_job(3, status="canceled", created_at=old, completed_at=old),
        "recent_done": make_job(4, status="succeeded", created_at=old, completed_at=recent),
        "old_running": make_job(5, status="running", created_at=old, started_at=old,
                                lease_owner="w", lease_expires=NOW - 5 * DAY),
        "old_queued": make_job(6, status="queued", created_at=old),
    }  # fmt: skip
    for job in jobs.values():
        await storage.insert_job(job)
    assert await storage.prunable("jobs", cut()) == 3
    assert (await prune_all(storage))["jobs"] == 3
    left = {j.id for j in await storage.list_jobs("t1", None, 100, None)}
    assert left == {jobs[n].id for n in ("recent_done", "old_running", "old_queued")}
    # a pruned job's event stream (written with each job change) goes with it
    for name, job in jobs.items():
        head, events = await storage.stream_read("t1", job.id, -1)
        kept = name in ("recent_done", "old_running", "old_queued")
        assert (head is not None, bool(events)) == (kept, kept), name


async def test_a_finished_job_whose_webhook_is_pending_stays(storage: Storage) -> None:
    old, older = at(NOW - 7 * DAY), at(NOW - 8 * DAY)
    delivered = make_job(1, status="running", created_at=older, webhook_url="https://h.example/")
    pending = make_job(2, status="running", created_at=older, webhook_url="https://h.example/")
    for job in (delivered, pending):
        await storage.insert_job(job)
        await storage.update_job(job.id, lambda j: evolve(j, status="succeeded", completed_at=old))
    (sent,) = await storage.deliveries_of_job(delivered.id)
    await storage.update_delivery(sent.id, lambda d: evolve(d, status="delivered", finished_at=old))
    (waiting,) = await storage.deliveries_of_job(pending.id)
    assert waiting.status == "pending"
    counts = await prune_all(storage)
    assert (counts["jobs"], counts["outbox"]) == (1, 1)
    assert await storage.get_job("t1", delivered.id) is None
    assert await storage.deliveries_of_job(delivered.id) == []
    assert await storage.get_job("t1", pending.id) is not None
    assert [d.status for d in await storage.deliveries_of_job(pending.id)] == ["pending"]


async def test_only_finished_deliveries_older_than_the_cutoff_go(storage: Storage) -> None:
    old, recent = at(NOW - 6 * DAY), at(NOW - 1 * DAY)
    for n, finished in ((1, old), (2, recent)):
        job = make_job(n, status="running", created_at=old, webhook_url="https://h.example/")
        await storage.insert_job(job)
        await storage.update_job(job.id, lambda j: evolve(j, status="failed", completed_at=recent))
        (d,) = await storage.deliveries_of_job(job.id)
        await storage.update_delivery(
            d.id,
            lambda d, f=finished: evolve(d, status="given_up", finished_at=f),  # type: ignore[misc]
        )
    assert (await prune_all(storage))["outbox"] == 1
    assert await storage.deliveries_of_job("job_001") == []
    assert len(await storage.deliveries_of_job("job_002")) == 1


# -- idempotency keys and streams -------------------------------------------------------

ANSWER = Answer(200, (("content-type", "application/json"),), (b"{}",))


async def _put(storage: Storage, key: str, record: Record) -> None:
    await storage.idempotency_step("t1", key, lambda current: (None, record))


async def _get(storage: Storage, key: str) -> Record | None:
    return await storage.idempotency_step("t1", key, lambda current: (current, current))


async def test_expired_answers_and_long_lapsed_claims_go_a_held_claim_stays(
    storage: Storage,
) -> None:
    records = {
        "expired": Record("f", "done", "o", NOW - 100, NOW - 1, ANSWER),
        "kept": Record("f", "done", "o", NOW - 100, NOW + 1, ANSWER),
        "held": Record("f", "running", "o", NOW + 60),
        "just_lapsed": Record("f", "running", "o", NOW - 60),  # its holder may still finish
        "long_lapsed": Record("f", "running", "o", NOW - TTL - 1),
    }
    for key, record in records.items():
        await _put(storage, key, record)
    assert (await prune_all(storage))["idempotency"] == 2
    for key, record in records.items():
        expect = None if key in ("expired", "long_lapsed") else record
        assert await _get(storage, key) == expect, key
    # the rule matches core.idempotency: what was pruned was claimable anyway
    assert idempotency.phase(records["expired"], NOW) == "expired"


async def test_expired_stream_buffers_go_a_live_stream_stays(storage: Storage) -> None:
    def stream(sid: str, ended: bool, expires: float) -> StreamWrite:
        events = tuple(
            StoredEvent(i, "response.output_text.delta", f'{{"n":{i}}}') for i in range(5)
        )
        return StreamWrite(StreamHead(sid, "t1", ended, 4, NOW - 10, expires), events)

    await storage.stream_write([
        stream("ended_expired", True, NOW - 1), stream("ended_kept", True, NOW + 600),
        stream("live", False, NOW + 40),
    ])  # fmt: skip
    assert (await prune_all(storage))["streams"] == 1
    assert (await storage.stream_read("t1", "ended_expired", -1)) == (None, [])
    for sid in ("ended_kept", "live"):
        head, events = await storage.stream_read("t1", sid, -1)
        assert head is not None and len(events) == 5


# -- budget periods -----------------------------------------------------------------------


async def test_past_budget_periods_go_the_current_one_stays(storage_url: str) -> None:
    now = at(NOW)
    scopes = {
        "key:k1:2031-01": False,  # ended 2031-02-01, before the cut-off (20 days back)
        "key:k1:2031-02-14": False,
        "budget:tenant:t:2030-12": False,
        "budget:project:t:p:2031-01-31": False,
        "key:k1:2031-02-25": True,  # ended after the cut-off (2031-02-18)
        "key:k1:2031-03": True,  # the current month
        "key:k1:2031-03-10": True,  # today
        "key:k1:total": True,
        "rl:k1:2031-01": True,  # not a budget
        "webhooks:dev": True,
    }
    storage = open_storage(storage_url)
    await storage.migrate()
    for scope in scopes:
        await storage.update_state(scope, lambda s: (None, {"limit": "1", "spent": "0.5"}))
    await storage.close()  # committed (SQLite keeps budgets in memory until a flush)
    storage = open_storage(storage_url, owner=True)
    await storage.migrate()
    try:
        assert await storage.read_state("key:k1:2031-01") is not None  # now in memory too
        assert await storage.prunable("budget_periods", cut()) == 4
        assert (await prune_once(storage, POLICY, TTL, now.timestamp()))["budget_periods"] == 4
        found = await storage.read_states(list(scopes))
        assert {s for s, v in found.items() if v is not None} == {s for s, k in scopes.items() if k}
    finally:
        await storage.close()
    storage = open_storage(storage_url)  # and in the file
    await storage.migrate()
    try:
        found = await storage.read_states(list(scopes))
        assert {s for s, v in found.items() if v is not None} == {s for s, k in scopes.items() if k}
    finally:
        await storage.close()


# -- batches and counts ------------------------------------------------------------------


async def test_a_prune_in_small_batches_deletes_all_it_may_and_counts_first(
    storage: Storage,
) -> None:
    cutoff = cut().ledger
    assert cutoff is not None
    old = [make_usage(i, at(cutoff - 3600 * (i + 1))) for i in range(8)]
    new = [make_usage(100 + i, at(cutoff + 60 * i)) for i in range(4)]
    for r in old + new:
        await storage.insert_usage(r)
    small = evolve(POLICY, batch_rows=3)
    before = {s: await storage.prunable(s, cut(small)) for s in retention.STORES}
    assert before["ledger"] == 8 and before["rollup"] > 0
    assert await storage.usage_count() == 12  # counting deleted nothing
    assert await storage.prune("ledger", cut(small), 3) == 3  # one batch: at most 3 rows
    counts = await prune_all(storage, small)
    assert counts["ledger"] == 5 and counts["rollup"] == before["rollup"]
    assert await storage.usage_count() == 4
    assert {s: await storage.prunable(s, cut(small)) for s in retention.STORES} == dict.fromkeys(
        retention.STORES, 0
    )


async def test_zero_days_keeps_everything(storage: Storage) -> None:
    await storage.insert_usage(make_usage(1, at(NOW - 1000 * DAY)))
    forever = RetentionPolicy(ledger_days=0, jobs_days=0, outbox_days=0, budget_periods_days=0)
    counts = await prune_all(storage, forever)
    assert counts["ledger"] == counts["rollup"] == 0
    assert await storage.usage_count() == 1


# -- migration 015: the idempotency keys' unused index --------------------------------------


def _idempotency_plan(c: Any, flavor: prune.Flavor) -> str:
    """The plan of the idempotency prune's batch SELECT, as text (Postgres with sequential
    scans priced out, so an index that fits would be taken whatever the table's size)."""
    (target,) = prune.targets("idempotency")
    select = f"SELECT tenant, key FROM idempotency_keys WHERE {prune._cond(target, flavor)} LIMIT {flavor.mark}"
    args = (NOW, NOW, 10)
    if flavor is prune.SQLITE:
        return " | ".join(str(r[-1]) for r in c.execute(f"EXPLAIN QUERY PLAN {select}", args))
    c.execute("SET LOCAL enable_seqscan = off")
    return " | ".join(str(r[0]) for r in c.execute(f"EXPLAIN {select}", args))


async def test_migration_015_drops_the_expires_index_no_query_reads(storage: Storage) -> None:
    """On a database as 014 left it, the idempotency prune's plan does not read 004's
    `idempotency_keys_expires` (an OR is read through indexes only when each branch has
    one: with an index on `locked_until` too, the same check sees it read); migrate then
    applies 015 alone, which drops it, and the keys are kept and pruned as before."""
    sqlite = storage.dialect is ledger.SQLITE  # type: ignore[attr-defined]
    flavor = prune.SQLITE if sqlite else prune.POSTGRES
    (m004,) = [m for m in migrations("sqlite" if sqlite else "postgres") if m.version == 4]
    (create,) = [s for s in m004.statements() if s.startswith("CREATE INDEX idempotency_keys_expires")]
    listed = ("SELECT name FROM sqlite_master WHERE type = 'index'" if sqlite
              else "SELECT indexname FROM pg_indexes WHERE tablename = 'idempotency_keys'")  # fmt: skip

    def before_015(c: Any) -> None:
        c.execute("DELETE FROM schema_version WHERE version = 15")
        c.execute(create)

    await storage._run(before_015)  # type: ignore[attr-defined]
    records = {"expired": Record("f", "done", "o", NOW - 100, NOW - 1, ANSWER),
               "kept": Record("f", "done", "o", NOW - 100, NOW + 1, ANSWER),
               "long_lapsed": Record("f", "running", "o", NOW - TTL - 1)}  # fmt: skip
    for key, record in records.items():
        await _put(storage, key, record)
    assert "idempotency_keys_expires" not in await storage._run(  # type: ignore[attr-defined]
        lambda c: _idempotency_plan(c, flavor))

    def with_locked_until_indexed(c: Any) -> str:  # the check can see the index read
        c.execute("CREATE INDEX idempotency_keys_locked ON idempotency_keys (locked_until)")
        try:
            return _idempotency_plan(c, flavor)
        finally:
            c.execute("DROP INDEX idempotency_keys_locked")

    assert "idempotency_keys_expires" in await storage._run(with_locked_until_indexed)  # type: ignore[attr-defined]
    await storage.migrate()
    indexes = {str(r[0]) for r in await storage._fetch((listed, []))}  # type: ignore[attr-defined]
    assert "idempotency_keys_expires" not in indexes
    assert any(name.startswith(("sqlite_autoindex_idempotency_keys", "idempotency_keys_pkey")) for name in indexes)
    versions = await storage._fetch(("SELECT version FROM schema_version WHERE version = 15", []))  # type: ignore[attr-defined]
    assert versions == [(15,)]
    assert (await prune_all(storage))["idempotency"] == 2
    assert await _get(storage, "kept") == records["kept"]
    assert await _get(storage, "expired") is None
