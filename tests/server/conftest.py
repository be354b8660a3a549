"""A real gateway on 127.0.0.1 port 0 (SQLite in a temp dir, Mock providers) per test.

Also: `restored_logging` for a test that runs `umg`'s `main()` in process (it points the
root logger at the stdout of that moment, which capsys closes after the test), and a
check after every test here that no root handler was left on a closed stream: each
later log line would print "Logging error ... I/O operation on closed file".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio
from attrs import define

from adapters.admin import create_key
from adapters.config.loader import load_settings
from adapters.config.settings import Settings
from server.serve import serve
from server.services import Services, build_services


@define
class Running:
    url: str
    key: str
    services: Services
    stop: trio.Event

    def client(self, key: str | None = None, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"authorization": f"Bearer {key or self.key}"},
            timeout=timeout,
        )

    async def new_key(
        self,
        *,
        tenant: str = "t1",
        project: str = "p1",
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: Decimal | None = None,
    ) -> str:
        plain, _ = await create_key(
            self.services.storage,
            self.services.clock,
            tenant=tenant,
            project=project,
            rpm=rpm,
            tpm=tpm,
            budget_usd=budget_usd,
        )
        return plain


async def start_gateway(
    nursery: trio.Nursery, settings: Settings, services: Services | None = None
) -> Running:
    services = services or await build_services(settings)
    stop = trio.Event()
    url = await nursery.start(
        lambda task_status: serve(
            services,
            host="127.0.0.1",
            port=0,
            shutdown=stop.wait,
            drain_seconds=1.0,
            task_status=task_status,
        )
    )
    plain, _ = await create_key(services.storage, services.clock, tenant="t1", project="p1")
    return Running(url=url, key=plain, services=services, stop=stop)


def test_settings(tmp_path: Path, **env: str) -> Settings:
    base = {"DATABASE_URL": f"sqlite:///{tmp_path}/gateway.db", "MOCK_MODE": "true"}
    return load_settings({**base, **env})


@pytest.fixture
async def gateway(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_gateway(nursery, test_settings(tmp_path))
    yield running
    running.stop.set()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were before the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(autouse=True)
def no_root_handler_on_a_closed_stream() -> Iterator[None]:
    """Checked after the test's own fixtures (capsys among them) have ended; such a
    handler fails the test that left it, and is taken off so the next tests are not."""
    yield
    root = logging.getLogger()
    closed = [
        h for h in root.handlers
        if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False)
    ]  # fmt: skip
    for handler in closed:
        root.removeHandler(handler)
    assert not closed, f"the test left the root logger writing to a closed stream: {closed}"
