"""End to end on Postgres: a transaction the database keeps rolling back for a deadlock
(adapters/storage/pg_pool.py reruns it three times) is answered `503
storage_contention` with `Retry-After`, in the OpenAI error shape, and the refused
request still has its one ledger row. Once the contention is gone the next request
goes through: the breaker of an unreachable database was never opened.

The deadlocks are real server errors: a trigger on the `state` table raises SQLSTATE
40P01 for every update of the key's rate-limit row, until the test drops it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import trio

from tests.adapters.conftest import postgres_url  # noqa: F401  (the fixture)
from tests.server.conftest import Running, start_gateway
from tests.server.conftest import test_settings as settings_for

pytestmark = pytest.mark.postgres

DEADLOCK_RATE_ROWS = """
CREATE FUNCTION deadlock_rate_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.scope LIKE 'rl:%' THEN
    RAISE EXCEPTION 'deadlock injected by the test' USING ERRCODE = 'deadlock_detected';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER deadlock_rate_rows BEFORE UPDATE ON state
  FOR EACH ROW EXECUTE FUNCTION deadlock_rate_rows();
"""


@pytest.fixture
async def gateway(
    tmp_path: Path, postgres_url: str, nursery: trio.Nursery  # noqa: F811
) -> AsyncIterator[tuple[Running, str]]:
    running = await start_gateway(nursery, settings_for(tmp_path, DATABASE_URL=postgres_url))
    yield running, postgres_url
    running.stop.set()


async def test_a_transaction_deadlocked_every_time_is_a_503_storage_contention(
    gateway: tuple[Running, str],
) -> None:
    gw, url = gateway
    key = await gw.new_key(rpm=1000)  # its requests take the key's rate row
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DEADLOCK_RATE_ROWS)
    body = {"model": "mock-fast", "input": "hi"}
    async with gw.client(key=key) as client:
        refused = await client.post("/v1/responses", json=body)
        assert refused.status_code == 503, refused.text
        err = refused.json()["error"]
        assert (err["type"], err["code"], err["param"]) == (
            "server_error", "storage_contention", None,
        )  # fmt: skip
        assert "contention" in err["message"]
        assert refused.headers["retry-after"] == "2"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER deadlock_rate_rows ON state")
        answered = await client.post("/v1/responses", json=body)
        assert answered.status_code == 200, answered.text
    rows = await gw.services.storage.usage_rows(
        "t1", datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    )
    assert sorted((r.request_id, r.status, r.error_code, r.cost > 0) for r in rows) == sorted([
        (refused.headers["x-request-id"], "error", "storage_contention", False),
        (answered.headers["x-request-id"], "ok", None, True),
    ])  # fmt: skip
