"""Retention end to end: `[retention]` settings, `umg prune`, the periodic prune, and the
usage answers after a prune.

- `[retention]` and the `UMG_RETENTION_*` variables; bad values are one error naming
  the setting.
- After a prune, `/v1/usage` and `/v1/usage/series` (day and hour buckets) over the
  kept days equal the sums of the kept raw rows, on SQLite and on Postgres, with a
  ledger spanning the cut-off.
- `umg prune --dry-run` counts and deletes nothing, one line per store; `umg prune
  --json` deletes and prints one object.
- The periodic prune (autojump clock): two tasks sharing one database prune once per
  interval between them, each run one JSON log line; the first check waits
  `PRUNE_START_SECONDS`; `interval_seconds = 0` never prunes.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing

from adapters.clock import Clock
from adapters.config.loader import load_settings
from adapters.config.values import ConfigError
from adapters.retention import LEASE_SCOPE, prune_once, run_periodic
from adapters.storage import open_storage
from adapters.storage.records import UsageRecord
from adapters.telemetry import JsonFormatter
from core import retention
from core.retention import RetentionPolicy
from server.services import build_services
from server.workers import PRUNE_START_SECONDS, run_prune
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.adapters.test_storage import make_usage
from tests.server.conftest import start_gateway
from tests.server.conftest import test_settings as settings_for
from tests.server.test_cli import umg

# -- settings ---------------------------------------------------------------------------


def test_the_retention_table_and_its_variables(tmp_path: Path) -> None:
    assert load_settings({}).retention == RetentionPolicy()
    config = tmp_path / "umg.toml"
    config.write_text("[retention]\nledger_days = 400\njobs_days = 0\ninterval_seconds = 60\n")
    settings = load_settings({"UMG_CONFIG": str(config), "UMG_RETENTION_JOBS_DAYS": "7",
                              "UMG_RETENTION_BATCH_ROWS": "50"})  # fmt: skip
    assert settings.retention == RetentionPolicy(
        ledger_days=400, jobs_days=7, interval_seconds=60.0, batch_rows=50
    )


@pytest.mark.parametrize(
    ("table", "env", "message"),
    [
        ("[retention]\nledger_day = 3\n", {}, "unknown keys ['ledger_day']"),
        ("[retention]\nledger_days = 1.5\n", {}, "retention.ledger_days"),
        ("[retention]\noutbox_days = -1\n", {}, "retention.outbox_days"),
        ("", {"UMG_RETENTION_LEDGER_DAYS": "ninety"}, "UMG_RETENTION_LEDGER_DAYS"),
        ("", {"UMG_RETENTION_INTERVAL_SECONDS": "-5"}, "retention.interval_seconds"),
    ],
)
def test_bad_retention_settings_name_the_setting(
    tmp_path: Path, table: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "umg.toml"
    config.write_text(table)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings({"UMG_CONFIG": str(config), **env})


# -- /v1/usage and /v1/usage/series after a prune ----------------------------------------

POLICY = RetentionPolicy(ledger_days=10)


def ledger_around(cutoff: float, key_id: str) -> list[UsageRecord]:
    """Rows every 5 h 17 min from 3 days before the cut-off to 2 days after, on both
    sides of it and on its exact edge, with costs that add up to more places than a row."""
    step = 5 * 3600 + 17 * 60
    stamps = [cutoff + k * step for k in range(-14, 10)] + [cutoff, cutoff - 0.000001]
    return [
        make_usage(
            n, datetime.fromtimestamp(t, UTC), key_id=key_id, input_tokens=10 + n,
            cost=Decimal("0.0000000007") * (n + 1) + Decimal("1.5"), latency_ms=50 * n,
        )
        for n, t in enumerate(stamps)
    ]  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_usage_answers_for_kept_days_equal_the_kept_rows_after_a_prune(
    nursery: trio.Nursery, tmp_path: Path, database_url: str
) -> None:
    settings = settings_for(tmp_path, DATABASE_URL=database_url, UMG_RETENTION_INTERVAL_SECONDS="0")
    running = await start_gateway(nursery, settings)
    storage, clock = running.services.storage, running.services.clock
    (key,) = await storage.list_keys("t1")
    now = clock.epoch()
    cutoff = retention.cutoffs(POLICY, 86400.0, now).ledger
    assert cutoff is not None
    rows = ledger_around(cutoff, key.id)
    for r in rows:
        await storage.insert_usage(r)
    counts = await prune_once(storage, POLICY, 86400.0, now)
    kept = [r for r in rows if r.at.timestamp() >= cutoff]
    assert counts["ledger"] == len(rows) - len(kept) > 0 and counts["rollup"] > 0
    start = datetime.fromtimestamp(cutoff, UTC) - timedelta(days=3)
    end = datetime.fromtimestamp(cutoff, UTC) + timedelta(days=3)
    window = {"from": start.isoformat(), "to": end.isoformat()}
    expect_cost = sum((r.cost for r in kept), Decimal(0))
    expect_tokens = sum(r.input_tokens for r in kept)
    async with running.client() as client:
        usage = (await client.get("/v1/usage", params=window)).json()
        assert usage["totals"]["requests"] == len(kept)
        assert usage["totals"]["input_tokens"] == expect_tokens
        assert Decimal(usage["totals"]["cost_usd"]) == expect_cost
        for bucket in ("day", "hour"):
            series = (
                await client.get("/v1/usage/series", params={**window, "bucket": bucket})
            ).json()
            assert series["totals"]["requests"] == len(kept), bucket
            assert series["totals"]["input_tokens"] == expect_tokens
            assert Decimal(series["totals"]["cost_usd"]) == expect_cost
            assert series["totals"]["latency_ms"]["count"] == len(kept)
        # per kept day, the rollup's points equal the kept rows of that day
        series = (await client.get("/v1/usage/series", params={**window, "bucket": "day"})).json()
        per_day: dict[str, tuple[int, Decimal]] = {}
        for r in kept:
            day = r.at.strftime("%Y-%m-%dT00:00:00Z")
            n, cost = per_day.get(day, (0, Decimal(0)))
            per_day[day] = (n + 1, cost + r.cost)
        points = {p["at"]: (p["requests"], Decimal(p["cost_usd"])) for p in series["points"]}
        assert points == per_day
        assert min(points) == datetime.fromtimestamp(cutoff, UTC).strftime("%Y-%m-%dT00:00:00Z")
    running.stop.set()


# -- umg prune ----------------------------------------------------------------------------


async def test_umg_prune_counts_then_deletes_and_prints_each_store(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/gateway.db"
    storage = open_storage(db)
    await storage.migrate()
    now = datetime.now(UTC)
    for n, age in enumerate((400, 200, 95, 10, 0)):  # days; the default keeps 90
        await storage.insert_usage(make_usage(n, now - timedelta(days=age)))
    await storage.close()
    code, out, err = await umg(db, "prune", "--dry-run")
    assert (code, err) == (0, "")
    lines = out.strip().splitlines()
    assert lines[0] == "ledger: would delete 3 rows"
    assert [line.split(":")[0] for line in lines] == list(retention.STORES)
    code, out, _ = await umg(db, "prune", "--json")
    assert code == 0
    expected = {
        **dict.fromkeys(retention.STORES, 0),
        "ledger": 3,
        "rollup": 15,
    }  # each: an hour and a latency bin (009), a day (011), an all-tenant hour (012),
    # an hour by model (014)
    assert json.loads(out) == {"dry_run": False, "rows": expected}
    storage = open_storage(db)
    try:
        assert await storage.usage_count() == 2
    finally:
        await storage.close()


# -- the periodic prune -----------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, object]] = []
        self.times: list[float] = []  # Trio's clock at each line
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))
        self.times.append(trio.current_time())


@pytest.fixture
def prune_lines() -> object:
    handler = Lines()
    logger = logging.getLogger("umg.retention")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_the_periodic_prune_runs_once_per_interval_between_processes(
    request: pytest.FixtureRequest, tmp_path: Path, prune_lines: Lines,
    mock_clock: trio.testing.MockClock, database: str,
) -> None:  # fmt: skip
    # Jumps only once every task waited 0.25 s of real time: storage calls run in
    # threads, which a plain autojump clock would jump across.
    mock_clock.autojump_threshold = 0.25
    url = (
        f"sqlite:///{tmp_path}/p.db"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    # SQLite: one serving process owns the state, so both tasks share its storage;
    # Postgres: two storages, as two gateway processes would have
    first = open_storage(url, owner=True)
    await first.migrate()
    second = first if database == "sqlite" else open_storage(url)
    await second.migrate()  # connected before the clock may jump
    clock = Clock()
    policy = RetentionPolicy(ledger_days=1, interval_seconds=600.0)
    await first.insert_usage(make_usage(1, clock.wall() - timedelta(days=3)))
    await first.insert_usage(make_usage(2, clock.wall()))
    try:
        async with trio.open_nursery() as nursery:
            for storage in (first, second):
                nursery.start_soon(run_periodic, storage, clock, policy, 86400.0)
            await trio.sleep(600 * 5 + 300)  # runs at 0, 600, ..., 3000 s
            nursery.cancel_scope.cancel()
        runs = [line for line in prune_lines.lines if line.get("event") == "prune"]
        assert 5 <= len(runs) <= 6  # at about 0, 600, ..., 3000 s
        gaps = [b - a for a, b in zip(prune_lines.times, prune_lines.times[1:], strict=False)]
        assert all(gap >= 600 - 1 for gap in gaps), gaps  # never twice in one interval
        assert runs[0]["pruned"]["ledger"] == 1  # type: ignore[index]
        assert all(r["pruned"]["ledger"] == 0 for r in runs[1:])  # type: ignore[index]
        assert {r["logger"] for r in runs} == {"umg.retention"}
        assert await first.usage_count() == 1
        state = await first.read_state(LEASE_SCOPE)
        assert state is not None and clock.epoch() - 600 < state["last_run"] <= clock.epoch()
    finally:
        if second is not first:
            await second.close()
        await first.close()


async def test_a_serving_gateway_prunes_on_its_interval(
    nursery: trio.Nursery, tmp_path: Path, prune_lines: Lines
) -> None:
    settings = settings_for(tmp_path, UMG_RETENTION_INTERVAL_SECONDS="0.2")
    running = await start_gateway(nursery, settings)
    with trio.move_on_after(10):
        while len([line for line in prune_lines.lines if line.get("event") == "prune"]) < 2:
            await trio.sleep(0.05)
    runs = [line for line in prune_lines.lines if line.get("event") == "prune"]
    assert len(runs) >= 2
    assert set(runs[0]["pruned"]) == set(retention.STORES)  # type: ignore[arg-type]
    running.stop.set()


async def test_the_first_check_waits_and_zero_turns_the_periodic_prune_off(
    tmp_path: Path, prune_lines: Lines, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.02  # (see above)
    for interval, runs in (("3600", 1), ("0", 0)):
        services = await build_services(
            settings_for(tmp_path, UMG_RETENTION_INTERVAL_SECONDS=interval)
        )
        prune_lines.lines.clear()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_prune, services)
                await trio.sleep(PRUNE_START_SECONDS - 1)
                assert prune_lines.lines == []
                if runs:
                    with trio.move_on_after(600):
                        while len(prune_lines.lines) < runs:
                            await trio.sleep(1)
                else:
                    await trio.sleep(PRUNE_START_SECONDS * 3)
                assert len(prune_lines.lines) == runs, interval
                assert all(t >= PRUNE_START_SECONDS for t in prune_lines.times)
                nursery.cancel_scope.cancel()
        finally:
            await services.close()
