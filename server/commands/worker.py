"""`umg worker`: the job workers and webhook deliveries of `umg serve`, without HTTP.

Owns: the worker command. It runs `[jobs] workers` job workers, `[webhooks] workers`
delivery workers and the periodic prune (server/workers.py) on the configured database
until SIGTERM or SIGINT, then stops them (a running job keeps its lease, so another
process finishes it) and closes the services. Several such processes share one Postgres
queue.
"""

from __future__ import annotations

import argparse

import trio

from adapters.config.settings import Settings
from server.commands.common import Subcommands


def add_parser(sub: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "worker", help="run only job workers and webhook deliveries (no HTTP), until SIGTERM",
        parents=parents,
    )  # fmt: skip


def main(args: argparse.Namespace, settings: Settings) -> int:
    return trio.run(_worker, args, settings)


async def _worker(args: argparse.Namespace, settings: Settings) -> int:
    """`umg worker`: the job workers and webhook deliveries of `serve`, without HTTP."""
    from server.serve import wait_for_signal
    from server.services import build_services
    from server.workers import run_prune, run_workers

    del args
    services = await build_services(settings)
    signalled = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(wait_for_signal, signalled)
            nursery.start_soon(run_workers, services)
            nursery.start_soon(run_prune, services)
            print(
                f"Worker running: {settings.jobs.workers} job workers,"
                f" {settings.webhooks.workers} webhook delivery workers", flush=True,
            )  # fmt: skip
            await signalled.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await services.close()
    return 0
