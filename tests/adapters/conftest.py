"""Fixtures for storage tests: a throwaway Postgres database, and `storage` on both backends.

`postgres_url` creates a fresh database `umg_test_<hex>` on the local server (trust auth,
`UMG_TEST_PG_ADMIN_URL`, default postgresql://postgres@127.0.0.1:5432/postgres) and drops
it afterwards. When the server is unreachable the test is skipped, or FAILS when the
`CI` environment variable is set (CI must not silently skip the Postgres half).

`storage` is parametrized: the same test runs on SQLite (a temp file) and on Postgres.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from adapters.storage import open_storage
from adapters.storage.base import Storage

ADMIN_URL = os.environ.get(
    "UMG_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    try:
        admin = _admin()
    except psycopg.OperationalError as err:
        message = f"Postgres is unreachable at {ADMIN_URL}: {err}".strip()
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: the Postgres tests must run)")
        pytest.skip(message)
    name = f"umg_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        with _admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/storage.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    store = open_storage(storage_url)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
