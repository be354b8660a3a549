"""A write that races a connection's close must not stop the server (server/hypercorn_patch.py, rule 1)."""

from __future__ import annotations

import hypercorn.trio.run as hypercorn_run
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from server.hypercorn_patch import GuardedTCPServer
from tests.server.conftest import Running


class _Protocol:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def handle(self, event: Event) -> None:
        self.events.append(event)


async def _race(server_class: type[TCPServer]) -> tuple[_Protocol, BaseException | None]:
    """Send through `server_class` while another task holds the socket's send side.

    The other task is blocked in `send_all` of more than the socket buffers hold (the peer
    never reads), as Hypercorn's `send_eof` holds it across a checkpoint: the same guard.
    """
    left, right = trio.socket.socketpair()
    stream = trio.SocketStream(left)
    server = server_class(
        None,  # type: ignore[arg-type]  # the app is never reached
        Config(),
        WorkerContext(None),
        ConnectionState({}),
        stream,  # type: ignore[arg-type]
    )
    protocol = _Protocol()
    server.protocol = protocol  # type: ignore[assignment]
    raised: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, b"x" * 64 * 1024 * 1024)
        await trio.testing.wait_all_tasks_blocked()
        try:
            await server.protocol_send(RawData(data=b"HTTP/1.1 400 Bad Request\r\n\r\n"))
        except trio.BusyResourceError as error:
            raised = error
        nursery.cancel_scope.cancel()
    right.close()
    await stream.aclose()
    return protocol, raised


async def test_hypercorn_raises_out_of_a_send_that_races_another() -> None:
    # The hazard the guard exists for: if this stops raising, Hypercorn fixed it.
    _, raised = await _race(TCPServer)
    assert isinstance(raised, trio.BusyResourceError)


async def test_the_guard_treats_it_as_a_closed_connection() -> None:
    protocol, raised = await _race(GuardedTCPServer)
    assert raised is None
    assert [type(e) for e in protocol.events] == [Closed]


async def test_the_server_builds_guarded_connections(gateway: Running) -> None:
    # the guard's class, or one that extends it (server/hypercorn_patch.DirectSendTCPServer)
    assert issubclass(hypercorn_run.TCPServer, GuardedTCPServer)
    async with gateway.client() as client:
        assert (await client.get("/v1/models")).status_code == 200
