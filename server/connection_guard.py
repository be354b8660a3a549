"""Keeps one client's connection race from stopping the whole server.

Owns: the class Hypercorn's trio worker builds for each TCP connection, and putting it in
place (`install`, before `hypercorn.trio.serve` runs).

Why: Hypercorn (0.17–0.18) closes a connection with `send_eof()` without its send lock, and
trio holds a stream's send guard across that call's checkpoint. When the client closes in
the middle of a request body just as the connection is being closed (a body that timed
out, a refused one), Hypercorn's reader answers the broken request with a 400 at that
moment, `send_all` raises `trio.BusyResourceError`, and nothing in Hypercorn catches it:
it leaves the connection handler, and `trio.serve_listeners` then cancels every other
connection and ends the server. Seen in our own test run (tests/server/
test_e2e_slow_clients.py, under load).

The guard treats that error as what it means: the connection is already being closed, so
the write is dropped and the protocol is told the connection closed, exactly what
Hypercorn does for a peer that went away (`BrokenResourceError`).
"""

from __future__ import annotations

import logging

import hypercorn.trio.run as hypercorn_run
import trio
from hypercorn.events import Closed, Event
from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger("umg.server")


class GuardedTCPServer(TCPServer):
    async def protocol_send(self, event: Event) -> None:
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:
            log.debug("write to a connection that is closing dropped")
            await self.protocol.handle(Closed())


def install() -> None:
    """Make Hypercorn's trio worker build `GuardedTCPServer` for each connection."""
    hypercorn_run.TCPServer = GuardedTCPServer  # type: ignore[attr-defined]
