"""A ledger row the database refuses (adapters/run_end.py, `end`), on SQLite and on
Postgres: the client still gets its answer (the model call happened; a 500 would invite
a retry that runs and bills it again), and the row is logged on `umg.ledger` at error
level with what an operator needs to enter it again; other requests' rows are written.

The refusal is real: a trigger in the gateway's database aborts the insert of rows for
one model (SQLite `RAISE(ABORT)`, Postgres a check_violation).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import trio

from server.services import Services
from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

REFUSED = "mock-smart"
SQLITE_TRIGGER = (
    "CREATE TRIGGER refuse BEFORE INSERT ON usage WHEN NEW.model = 'mock-smart'"
    " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
)
POSTGRES_TRIGGER = """
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.model = 'mock-smart' THEN
    RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON usage FOR EACH ROW EXECUTE FUNCTION refuse();
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Running]:
    env = {}
    if request.param == "postgres":
        env["DATABASE_URL"] = url = request.getfixturevalue("postgres_url")
    running = await start_gateway(nursery, settings_for(tmp_path, **env))  # migrated
    if request.param == "postgres":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(POSTGRES_TRIGGER)
    else:
        with sqlite3.connect(tmp_path / "gateway.db") as conn:
            conn.execute(SQLITE_TRIGGER)
    yield running
    running.stop.set()


async def ledger_models(services: Services) -> list[str]:
    rows = await services.storage.usage_rows(
        "t1", datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    )
    return sorted(r.model for r in rows)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refused_row_is_logged_and_the_client_gets_its_answer(
    gateway: Running, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    with caplog.at_level(logging.ERROR, logger="umg.ledger"):
        async with gateway.client() as client:
            refused = await client.post(
                "/v1/chat/completions",
                json={"model": REFUSED, "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]},
            )
            kept = await client.post("/v1/responses", json={"model": "mock-fast", "input": "hi"})
    assert refused.status_code == 200, refused.text
    if stream:  # the whole stream, with its clean end
        assert '"finish_reason":"stop"' in refused.text
        assert refused.text.rstrip().endswith("data: [DONE]")
    else:
        assert refused.json()["choices"][0]["message"]["content"].startswith("Mock answer from")
    assert kept.status_code == 200
    assert await ledger_models(gateway.services) == ["mock-fast"]
    (record,) = [r for r in caplog.records if r.name == "umg.ledger"]
    line = record.getMessage()
    assert refused.headers["x-request-id"] in line
    assert "ledger row not written" in line and "tenant=t1" in line and "cost_usd=" in line
