"""Running the server: Hypercorn's Trio worker around the app, and a graceful shutdown.

Owns: process lifetime. `serve(services, host, port, task_status=...)` binds (port 0
works: the bound URL is reported through `task_status`, so tests can start the real
server), runs background workers (jobs) and the periodic prune (adapters/retention.py)
beside Hypercorn, and on shutdown:
  0. marks the process as draining (`/readyz` answers 503 "draining"; WebSocket
     connections take no new requests and close with 1001 once their requests are
     done; new WebSocket handshakes are refused) and, if `prestop_seconds` > 0, keeps
     serving that long so a balancer polling `/readyz` can take it out first;
  1. stops accepting connections (Hypercorn closes its listeners);
  2. gives in-flight streams (SSE and WebSocket requests) `drain_seconds` to finish on
     their own, then ends each one with an explicit error event (never a silent cut);
  3. waits for in-flight requests (Hypercorn's graceful timeout, longer than the drain);
  4. stops the job workers and the prune (a job they were running keeps its lease and
     is picked up again after a restart) and closes storage; ledger rows are written
     inline and shielded, so there is nothing left to flush.

Idle keep-alive connections are closed at step 1, not after the graceful timeout: see
`server/final_send.py` for the quart-trio/hypercorn interaction that otherwise kept them
open.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from server import hypercorn_patch, hypercorn_tasks
from server.app import create_app
from server.services import Services

log = logging.getLogger("umg.server")

async def _drain(services: Services, drain_seconds: float) -> None:
    with trio.move_on_after(drain_seconds):
        await services.streams.idle.wait()
    if len(services.streams):
        log.info("ending %d open stream(s) for shutdown", len(services.streams))
        services.streams.end_all()


async def serve(
    services: Services,
    *,
    host: str,
    port: int,
    shutdown: Callable[[], Awaitable[None]] | None = None,
    drain_seconds: float = 5.0,
    prestop_seconds: float = 0.0,
    workers: bool = True,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown()` returns (default: SIGTERM or SIGINT).

    `prestop_seconds`: after `shutdown()` returns, how long to go on accepting (with
    `/readyz` already answering 503) before the listener closes. `workers=False`
    (`umg serve --no-workers`): no job workers or webhook deliveries in this process.
    """
    app = create_app(services)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = drain_seconds + 10.0
    # Hypercorn's idle timer runs from a connection's start (or its previous response) to
    # the end of the next request head, so it is both the keep-alive and the slow-header
    # timeout. Its read_timeout is left unset: it would cut SSE answers while we write.
    config.keep_alive_timeout = services.settings.limits.header_timeout_seconds
    config.accesslog = None  # no line per request (the ledger has them)
    # Hypercorn's default listen backlog (100) drops SYNs when many clients connect at
    # once (1,000 streams opened together), and each dropped one waits a second or more.
    config.backlog = 1024
    config.errorlog = logging.getLogger("hypercorn.error")

    signalled = trio.Event()

    async def trigger() -> None:
        await (shutdown or signalled.wait)()
        # Draining first, in the same tick: /readyz is 503 before the listener closes.
        services.streams.begin_draining()
        if prestop_seconds > 0:
            log.info("shutting down: /readyz answers 503; still accepting for %gs", prestop_seconds)
            await trio.sleep(prestop_seconds)
        log.info(
            "shutting down: no new connections; draining streams",
            extra={"event": "shutdown_started", "in_flight": len(services.streams)},
        )
        nursery.start_soon(_drain, services, drain_seconds)

    async with trio.open_nursery() as nursery:
        background_scope = trio.CancelScope()

        async def run_background() -> None:
            from server.workers import run_prune, run_workers

            with background_scope:
                async with trio.open_nursery() as background:
                    if workers:
                        background.start_soon(run_workers, services)
                    background.start_soon(run_prune, services)

        async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
            hypercorn_patch.install()  # guarded connections, fewer and cheaper sends
            hypercorn_tasks.install()  # no idle-timer task per answer, disconnects told at once
            try:
                await hypercorn_serve(
                    app,
                    config,
                    shutdown_trigger=trigger,
                    task_status=task_status,
                )
            finally:
                background_scope.cancel()

        if shutdown is None:
            # The handlers go in before the listener opens: hypercorn reports the bind (we
            # log "listening") before it starts the trigger's task, so a SIGTERM just after
            # that line would otherwise find no handler and kill the process undrained.
            await nursery.start(wait_for_signal, signalled)
        nursery.start_soon(run_background)
        binds: list[str] = await nursery.start(run_http)
        log.info("gateway listening on %s", binds[0], extra={"event": "startup", "url": binds[0]})
        task_status.started(binds[0])
    with trio.CancelScope(shield=True):
        await services.close()
    log.info("gateway stopped", extra={"event": "shutdown"})


async def wait_for_signal(
    signalled: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Set `signalled` at the first SIGTERM or SIGINT (handlers installed when started)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            signalled.set()
            return
