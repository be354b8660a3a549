"""What a SQLite gateway does not load: psycopg (about 20 MB of its resident memory,
docs/performance.md) is imported only where Postgres is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys, trio
from adapters.config import load_settings
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
