"""What a SQLite gateway does not load: psycopg (about 20 MB of its resident memory,
docs/performance.md) is imported only where Postgres is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys, trio
from adapters.config.loader import load_settings
from server.app import create_app
from server.services import build_services
import server.cli, server.serve

async def main():
    services = await build_services(load_settings({}, database_url="sqlite:///:memory:"))
    create_app(services)  # every route and layer of the app, as `umg serve` builds it
    await services.close()

trio.run(main)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("psycopg", "psycopg_pool")))
"""


def test_serving_on_sqlite_never_imports_psycopg() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout


TRACING_PROBE = """
import sys, trio
from adapters.config.loader import load_settings
from server.app import create_app
from server.services import build_services
import server.cli, server.serve

async def main():
    env = {"OTEL_TRACES_EXPORTER": sys.argv[1]}
    services = await build_services(load_settings(env, database_url="sqlite:///:memory:"))
    app = create_app(services)
    async with app.test_app() as test_app:  # one request through every layer
        client = test_app.test_client()
        answer = await client.post("/v1/chat/completions", json={
            "model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]})
        print(answer.status_code)
    await services.close()

trio.run(main)
print(sorted({m.split(".")[0] + "." + m.split(".")[1] if "." in m else m
              for m in sys.modules if m.split(".")[0] == "opentelemetry"}))
"""


def _tracing_probe(exporter: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", TRACING_PROBE, exporter], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=120)
    return done.stdout.strip().splitlines()


def test_a_gateway_with_tracing_off_never_imports_opentelemetry() -> None:
    """The OpenTelemetry SDK (about 12 MB of resident memory, docs/observability.md) is
    imported only when an exporter is configured (server/services.py)."""
    status, modules = _tracing_probe("none")
    assert status == "401", status  # no key: refused by the driver, through every layer
    assert modules == "[]", modules
    status, modules = _tracing_probe("console")  # the check can fail: with tracing on it is there
    assert "opentelemetry.sdk" in modules, modules
