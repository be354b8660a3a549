"""One real gateway (mock mode, SQLite, 127.0.0.1 port 0) per test module, for clients.

The gateway runs its own Trio loop in a background thread, so the clients under test
(sync SDKs, asyncio frameworks, CLIs and Node scripts in subprocesses) call it from the
test thread as they would any server. Module scope keeps the suite fast: one start-up
per client module instead of one per test.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from attrs import frozen

from tests.server.conftest import start_gateway
from tests.server.conftest import test_settings as mock_settings


@frozen
class Served:
    url: str  # the root, e.g. http://127.0.0.1:PORT (the Anthropic SDKs' base URL)
    key: str

    @property
    def v1(self) -> str:  # the OpenAI SDKs' (and @ai-sdk/anthropic's) base URL
        return self.url + "/v1"


def _serve(tmp: Path, ready: queue.Queue[object]) -> None:
    async def main() -> None:
        try:
            async with trio.open_nursery() as nursery:
                running = await start_gateway(nursery, mock_settings(tmp))
                token = trio.lowlevel.current_trio_token()
                ready.put((Served(running.url, running.key), token, running.stop))
        except BaseException as err:  # reported to the fixture, which raises it
            ready.put(err)
            raise

    trio.run(main)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ready: queue.Queue[object] = queue.Queue()
    thread = threading.Thread(
        target=_serve, args=(tmp_path_factory.mktemp("gw"), ready), daemon=True
    )
    thread.start()
    got = ready.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    gw, token, stop = got  # type: ignore[misc]
    yield gw
    trio.from_thread.run_sync(stop.set, trio_token=token)
    thread.join(timeout=30)
