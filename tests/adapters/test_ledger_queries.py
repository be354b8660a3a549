"""The console's ledger reads (adapters/storage/ledger.py) on SQLite and Postgres: exact
money sums, latency bins equal to core.percentiles', keyset pages, admin flags, key
updates, and the query plans of the console's usage reads and of /v1/usage on a large
ledger, on both backends: the migration-002 indexes on the ledger, the rollups' keys and
indexes (migrations 009, 011, 012) for whole days and hours, never a full scan (and the
check fails without any one of those indexes).
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from attrs import evolve

from adapters.storage import codec, ledger, rollup, sources
from adapters.storage.base import Storage
from adapters.storage.ledger import LedgerFilter
from adapters.storage.records import UsageRecord
from core import percentiles
from tests.adapters.test_storage import make_key, make_usage

T0 = datetime(2026, 3, 1, tzinfo=UTC)
WIDE = LedgerFilter(start=T0 - timedelta(days=400), end=T0 + timedelta(days=400))


def row(i: int, at: datetime = T0, **changes: Any) -> UsageRecord:
    return make_usage(i, at, **changes)


async def test_admin_flag_and_key_updates_round_trip(storage: Storage) -> None:
    await storage.insert_key(make_key(1, admin=True))
    await storage.insert_key(make_key(2))
    first, second = await storage.key_by_id("key_1"), await storage.key_by_id("key_2")
    assert first is not None and first.admin is True
    assert second is not None and second.admin is False
    updated = await storage.update_key(
        "key_2", {"name": "renamed", "rpm": None, "budget_usd": Decimal("1.25"), "budget_period": "day"}
    )
    assert updated is not None
    assert (updated.name, updated.rpm, updated.budget_usd, updated.budget_period) == (
        "renamed", None, Decimal("1.25"), "day")
    assert updated.secret_hash == second.secret_hash and updated.tenant == second.tenant
    assert await storage.update_key("key_2", {}) == updated
    assert await storage.update_key("nope", {"name": "x"}) is None
    with pytest.raises(ValueError):
        await storage.update_key("key_2", {"admin": True})


async def test_series_sums_money_exactly_and_groups_by_hour_day_and_column(storage: Storage) -> None:
    costs = [Decimal("0.0000000001"), Decimal("1.2345678901"), Decimal("0.3333333333"), Decimal("7")]
    rows = [
        row(1, at=T0 + timedelta(minutes=5), model="a", cost=costs[0], status="ok"),
        row(2, at=T0 + timedelta(minutes=50), model="b", cost=costs[1], status="error"),
        row(3, at=T0 + timedelta(hours=1), model="a", cost=costs[2], provider=None),
        row(4, at=T0 + timedelta(days=1), model="a", cost=costs[3], tenant="other"),
    ]
    for r in rows:
        assert await storage.insert_usage(r)
    hourly = await storage.usage_series(WIDE, "hour", "model")
    assert [(s.bucket, s.group, s.requests, s.errors, s.cost) for s in hourly] == [
        ("2026-03-01T00", "a", 1, 0, costs[0]),
        ("2026-03-01T00", "b", 1, 1, costs[1]),
        ("2026-03-01T01", "a", 1, 0, costs[2]),
        ("2026-03-02T00", "a", 1, 0, costs[3]),
    ]
    daily = await storage.usage_series(WIDE, "day", None)
    assert [(s.bucket, s.group, s.requests) for s in daily] == [("2026-03-01", "", 3), ("2026-03-02", "", 1)]
    assert sum((s.cost for s in daily), Decimal(0)) == sum(costs)
    assert daily[0].input_tokens == sum(r.input_tokens for r in rows[:3])
    by_provider = await storage.usage_series(WIDE, "day", "provider")
    assert ("2026-03-01", "") in {(s.bucket, s.group) for s in by_provider}  # NULL provider
    only_other = await storage.usage_series(LedgerFilter(WIDE.start, WIDE.end, tenant="other"), "day", None)
    assert [(s.requests, s.cost) for s in only_other] == [(1, costs[3])]
    assert await storage.usage_series(LedgerFilter(T0 + timedelta(days=9), T0 + timedelta(days=10)), "day", None) == []
    with pytest.raises(ValueError):
        await storage.usage_series(WIDE, "day", "cost; DROP TABLE usage")


async def test_histogram_bins_match_core_percentiles(storage: Storage) -> None:
    draw = random.Random(7)
    latencies = [draw.choice([0, 1, 2, 9, 10, 11, 149, 150, 999, 1000, 600000, 700000])
                 for _ in range(60)] + [draw.randrange(0, 100000) for _ in range(60)]
    for i, ms in enumerate(latencies):
        await storage.insert_usage(row(i, at=T0, latency_ms=ms, ttft_ms=None if i % 2 else ms // 2))
    (hist,) = (await storage.usage_histogram(WIDE, "day", "latency_ms")).values()
    assert {i: n for i, n in enumerate(hist) if n} == percentiles.histogram(latencies)
    (ttft,) = (await storage.usage_histogram(WIDE, "day", "ttft_ms")).values()
    assert {i: n for i, n in enumerate(ttft) if n} == percentiles.histogram(
        [ms // 2 for i, ms in enumerate(latencies) if i % 2 == 0])


async def test_pages_are_newest_first_keyset_and_tenant_scoped(storage: Storage) -> None:
    rows = [row(i, at=T0 + timedelta(seconds=i // 2), tenant="t1" if i % 3 else "t2") for i in range(11)]
    for r in rows:
        await storage.insert_usage(r)
    seen: list[str] = []
    after = None
    while True:
        page = await storage.ledger_page(WIDE, 4, after)
        seen += [r.id for r in page]
        if len(page) < 4:
            break
        after = page[-1].id
    expected = [r.id for r in sorted(rows, key=lambda r: (r.at, r.id), reverse=True)]
    assert seen == expected
    t2 = LedgerFilter(WIDE.start, WIDE.end, tenant="t2")
    t2_rows = await storage.ledger_page(t2, 100, None)
    assert {r.tenant for r in t2_rows} == {"t2"} and len(t2_rows) == 4
    t1_id = next(r.id for r in rows if r.tenant == "t1")
    assert await storage.ledger_page(t2, 100, t1_id) == []  # another tenant's row is no cursor
    assert await storage.ledger_page(WIDE, 100, "use_unknown") == []
    assert await storage.ledger_page(LedgerFilter(WIDE.start, WIDE.end, status="nope"), 5, None) == []


async def test_attempt_log_round_trips(storage: Storage) -> None:
    log = ({"deployment": "openai/x", "provider": "openai", "attempt": 1, "outcome": "server_error"},
           {"deployment": "anthropic/y", "provider": "anthropic", "attempt": 2, "outcome": "ok"})
    await storage.insert_usage(row(1, attempt_log=log, attempts=2))
    await storage.insert_usage(row(2))
    got = {r.request_id: r for r in await storage.ledger_page(WIDE, 10, None)}
    assert got["req_1"].attempt_log == log
    assert got["req_2"].attempt_log == ()


# ---- query plans on a large ledger ----------------------------------------------------

ROWS = 20_000
TENANTS = 20


def _bulk_rows() -> list[UsageRecord]:
    draw = random.Random(1)
    return [
        row(i, at=T0 - timedelta(seconds=draw.randrange(0, 400 * 86400)),
            tenant=f"t{i % TENANTS}", key_id=f"key_{i % 50}", latency_ms=draw.randrange(1, 5000))
        for i in range(ROWS)
    ]


def _fill_sqlite(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    cols = codec.columns(UsageRecord)
    conn.executemany(
        f"INSERT INTO usage ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [codec.sqlite_row(r) for r in _bulk_rows()],
    )
    conn.commit()
    conn.execute("ANALYZE")
    return conn


def _fill_postgres(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    cols = codec.columns(UsageRecord)
    with conn.cursor() as cur, cur.copy(f"COPY usage ({', '.join(cols)}) FROM STDIN") as copy:
        for r in _bulk_rows():
            copy.write_row(codec.postgres_row(r))
    conn.execute("ANALYZE usage")
    return conn


# Four days whose first and last hours are partial: whole days from the daily rollup (a
# read by day), whole hours from an hourly rollup (the all-tenant one when no tenant or
# key is named), edges from the ledger; an hourly read on a key, all from the ledger.
WINDOW = LedgerFilter(start=T0 - timedelta(days=5, minutes=-17), end=T0 - timedelta(days=1, minutes=-43))
PLANS = [  # (filter, the ledger's index)
    (WINDOW, "usage_at"),
    (evolve(WINDOW, tenant="t3"), "usage_tenant_at_id"),
    (evolve(WINDOW, tenant="t3", project="p1", model="m"), "usage_tenant_at_id"),
    (evolve(WINDOW, model="m", status="ok"), "usage_at"),
    (evolve(WINDOW, project="p1"), "usage_at"),
    (evolve(WINDOW, key_id="key_7"), "usage_key_at"),
    (evolve(WINDOW, tenant="t3", key_id="key_7"), "usage_key_at"),
]


def _rollup_indexes(table: str, f: LedgerFilter) -> set[str]:
    """The indexes a rollup read of `f` may use: the key's or the tenant's when the read
    names them and the table has one, else its primary key (a range on the period)."""
    named = [c for c in ("key_id", "tenant") if getattr(f, c) is not None]
    own = {"key_id": f"{table}_key", "tenant": f"{table}_tenant"}
    has = {
        sources.DAILY.table: {"key_id", "tenant"}, rollup.HOURLY: {"tenant"}, rollup.BINS: {"tenant"},
        sources.HOURLY_ALL.table: set(), sources.HOURLY_MODEL.table: set(),
    }[table]  # fmt: skip
    usable = [own[c] for c in named if c in has]
    return set(usable[:1]) if usable else {"PRIMARY KEY"}


def _console_queries(d: ledger.Dialect, f: LedgerFilter) -> list[tuple[str, list[Any]]]:
    """Every query of the console's Usage page (the series by hour and by day, by model,
    tenant, project or key, and the two histograms), of /v1/usage's totals, and of one
    Requests page, as served."""
    out = [ledger.page_query(d, "id, at, cost", f, 50, None)]
    for bucket in ("hour", "day"):
        for by in ("model", "tenant", "project", "key_id", None):
            out += ledger.series_queries(d, f, bucket, by)  # type: ignore[arg-type]
        for metric in rollup.METRICS:
            out += ledger.histogram_queries(d, f, bucket, metric)  # type: ignore[arg-type]
    for dims in (("day", "model"), (), ("hour",), ("month", "project")):
        out += ledger.totals_queries(d, f, dims)
    return out


def _table(sql: str) -> str:
    return sql.split(" FROM ", 1)[1].split(" ", 1)[0]


def _sqlite_plan(conn: sqlite3.Connection, sql: str, args: list[Any]) -> str:
    return " | ".join(r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))


def _postgres_plan(pg: psycopg.Connection[Any], sql: str, args: list[Any]) -> list[dict[str, Any]]:
    """Every node of the plan Postgres chooses with sequential scans priced out: a table
    with an index that fits is read through it, one without is still scanned, so the
    check fails when the index is missing, whatever the table's size."""
    with pg.transaction():
        pg.execute("SET LOCAL enable_seqscan = off")
        row = pg.execute(f"EXPLAIN (FORMAT JSON) {sql}", args).fetchone()
    assert row is not None
    nodes, todo = [], [row[0][0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += node.get("Plans", [])
    return nodes


def _check_sqlite(conn: sqlite3.Connection) -> set[str]:
    """Check every query's plan; the tables read."""
    read = set()
    for f, index in PLANS:
        for sql, args in _console_queries(ledger.SQLITE, f):
            plan, table = _sqlite_plan(conn, sql, args), _table(sql)
            want = {index} if table == "usage" else _rollup_indexes(table, f)
            used = {w for w in want if f"SEARCH {table} USING {'' if w == 'PRIMARY KEY' else 'INDEX '}{w} " in plan}
            assert used, (sql, plan, want)
            assert f"SCAN {table}" not in plan, plan  # never a full scan of the ledger or a rollup
            read.add(table)
    return read


def _check_postgres(pg: psycopg.Connection[Any]) -> set[str]:
    read = set()
    for f, index in PLANS:
        for sql, args in _console_queries(ledger.POSTGRES, f):
            nodes, table = _postgres_plan(pg, sql, args), _table(sql)
            used = {n["Index Name"] for n in nodes if "Index Name" in n}
            if table == "usage":
                assert index in used, (sql, nodes)
            else:
                # The planner may range over the primary key (period, tenant, ...) for a
                # tenant on a small rollup; either way an index of the rollup, never a scan.
                # The planner may range over the primary key (period, tenant, ...) instead of
                # the tenant's or key's index; either way an index of the rollup, never a scan.
                want = {f"{table}_pkey", *_rollup_indexes(table, f)} - {"PRIMARY KEY"}
                assert used & want, (table, f, used, want)
            scans = [n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"]
            assert scans == [], (sql, scans)
            read.add(table)
    return read


# Indexes without which the check fails: on SQLite every secondary index of the ledger
# and of the rollups (none is redundant: each is the only one some read can range over);
# on Postgres the ledger's (for a rollup it may take the primary key instead, also a
# range; the covering tenant indexes are checked by the index-only test below).
NEEDED = {
    "sqlite": ("usage_at", "usage_key_at", "usage_tenant_at_id", "usage_daily_key", "usage_daily_tenant",
               "usage_hourly_nokey_tenant", "usage_hourly_nokey_bins_tenant"),
    "postgres": ("usage_at", "usage_key_at", "usage_tenant_at_id"),
}  # fmt: skip


async def test_usage_page_queries_use_the_indexes_on_a_large_ledger(storage_url: str, storage: Storage) -> None:
    if storage_url.startswith("sqlite"):
        path = storage_url.removeprefix("sqlite:///")
        conn = _fill_sqlite(path)
        for statement in rollup.backfill_all("sqlite"):
            conn.execute(statement)
        conn.commit()
        conn.execute("ANALYZE")
        assert _check_sqlite(conn) == {"usage", *sources.TABLES}  # every source is read
        # The check is not vacuous: without any one of the indexes, it fails (a new
        # connection each time: a connection's cached EXPLAINs keep their plans).
        for index in NEEDED["sqlite"]:
            (create,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (index,)).fetchone()
            conn.execute(f"DROP INDEX {index}")
            conn.commit()
            conn.close()
            conn = sqlite3.connect(path)
            with pytest.raises(AssertionError):
                _check_sqlite(conn)
            conn.execute(create)
            conn.commit()
        conn.close()
    else:
        pg = _fill_postgres(storage_url)
        for statement in rollup.backfill_all("postgres"):
            pg.execute(statement.encode())
        for table in sources.TABLES:
            pg.execute(f"ANALYZE {table}")
        assert _check_postgres(pg) == {"usage", *sources.TABLES}
        for index in NEEDED["postgres"]:
            row = pg.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (index,)).fetchone()
            assert row is not None
            pg.execute(f"DROP INDEX {index}")
            with pytest.raises(AssertionError):
                _check_postgres(pg)
            pg.execute(row[0])
        pg.close()
    assert await storage.usage_count() == ROWS


async def test_one_tenants_hourly_reads_are_index_only_scans_on_postgres(storage_url: str, storage: Storage) -> None:
    """Migration 014's covering tenant indexes: once vacuumed (autovacuum's work), one
    tenant's hourly series, histograms and totals read the per-tenant rollup's index
    alone, whatever they filter or group on, never its heap; with 009's plain tenant
    indexes back the same check fails."""
    if storage_url.startswith("sqlite"):
        pytest.skip("Postgres's covering indexes (SQLite's rollups are WITHOUT ROWID tables)")
    pg = _fill_postgres(storage_url)
    for statement in rollup.backfill_all("postgres"):
        pg.execute(statement.encode())
    for table in sources.TABLES:
        pg.execute(f"VACUUM ANALYZE {table}")
    tenant = evolve(WINDOW, tenant="t3")
    reads = [tenant, evolve(tenant, model="m", status="ok"), evolve(tenant, project="p1", provider="openai")]

    def check() -> int:
        checked = 0
        for f in reads:
            queries = [*ledger.totals_queries(ledger.POSTGRES, f, ("hour", "model"))]
            for by in (None, "model", "project", "deployment", "status"):
                queries += ledger.series_queries(ledger.POSTGRES, f, "hour", by)
            for metric in rollup.METRICS:
                queries += ledger.histogram_queries(ledger.POSTGRES, f, "hour", metric)  # type: ignore[arg-type]
            for sql, args in queries:
                table = _table(sql)
                if table not in (rollup.HOURLY, rollup.BINS):
                    continue
                nodes = _postgres_plan(pg, sql, args)
                scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]
                assert scans == [("Index Only Scan", f"{table}_tenant")], (sql, scans)
                checked += 1
        return checked

    assert check() == len(reads) * (1 + 5 + 2)
    for table, columns in ((rollup.HOURLY, "tenant, hour"), (rollup.BINS, "tenant, hour")):
        pg.execute(f"DROP INDEX {table}_tenant")
        pg.execute(f"CREATE INDEX {table}_tenant ON {table} ({columns})")  # 009's
    pg.execute(f"ANALYZE {rollup.HOURLY}")
    with pytest.raises(AssertionError):
        check()
    pg.close()
