"""`umg serve`: run the gateway (HTTP, and beside it the job workers and webhook
deliveries unless `--no-workers`).

Owns: the serve command. On an empty database it mints a development key (an admin
key: it can use the admin API and the console) and prints it once, after the mode and
the address, so nobody ever needs SQL to get a key; several processes starting together
on one empty database print one key between them. A key minted but never printed
because binding failed is printed anyway. An address that cannot be served (typically:
in use) is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from adapters.admin import create_key
from adapters.config.settings import LOG_LEVELS, Settings
from server.commands.common import Subcommands, port, seconds

if TYPE_CHECKING:
    from server.services import Services


def add_parser(sub: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gateway", parents=parents)
    serve.add_argument("--host", help="address to bind ($HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=port, help="port to bind ($PORT, default 3000; 0: any free port)")
    serve.add_argument(
        "--drain-seconds",
        type=seconds,
        default=5.0,
        help="on SIGTERM/SIGINT, how long open streams may run before they are ended (default 5)",
    )
    serve.add_argument(
        "--prestop-seconds",
        type=seconds,
        default=0.0,
        help="on SIGTERM/SIGINT, keep accepting this long with /readyz at 503 before closing"
        " the listener, so load balancers see the drain (default 0)",
    )
    serve.add_argument(
        "--log-level", type=str.lower, choices=LOG_LEVELS,
        help="the gateway's log level ($LOG_LEVEL, [server] log_level; default info)",
    )
    serve.add_argument(
        "--third-party-log-level", type=str.lower, choices=LOG_LEVELS,
        help="httpx's and hypercorn's log level ($UMG_THIRD_PARTY_LOG_LEVEL, [server]"
        " third_party_log_level; default warning)",
    )
    serve.add_argument(
        "--header-timeout", type=float, metavar="SECONDS", dest="header_timeout_seconds",
        help="a request head must be complete within this ($UMG_HEADER_TIMEOUT_SECONDS, default 75)",
    )
    serve.add_argument(
        "--body-timeout", type=float, metavar="SECONDS", dest="body_timeout_seconds",
        help="a request body must arrive within this, else 408 ($UMG_BODY_TIMEOUT_SECONDS, default 30)",
    )
    serve.add_argument(
        "--body-budget-bytes", type=int, metavar="BYTES", dest="body_budget_bytes",
        help="bytes of request bodies received at once, else 503 ($UMG_BODY_BUDGET_BYTES, default 32 MiB)",
    )  # fmt: skip
    serve.add_argument(
        "--no-workers", action="store_true",
        help="serve HTTP only: no job workers or webhook deliveries here (run `umg worker` for them)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    status = 1
    try:
        status = trio.run(_serve, args, settings)
    except* OSError as group:  # typically: the address is already in use
        reason = _leaf_oserror(group)
        print(f"umg: cannot serve on {settings.host}:{settings.port}: {reason}", file=sys.stderr)
    return status


async def _first_to_bootstrap(services: Services) -> bool:
    """Whether this process mints the development key: one atomic flag in shared state, so
    several processes starting together on an empty database print one key, not several."""

    def apply(state: dict[str, Any] | None) -> tuple[bool, dict[str, Any]]:
        return state is None, state or {"dev_key": True}

    return await services.storage.update_state("bootstrap:dev_key", apply)


def startup_banner(settings: Settings, url: str, key_line: str | None) -> list[str]:
    """What `umg serve` prints once it listens: the mode, the address, then the key (last,
    so it is not buried under install or log output)."""
    if settings.mock_mode:
        mode = ("Mode: mock (the built-in Mock provider answers every model; set "
                "OPENAI_API_KEY or ANTHROPIC_API_KEY for live mode)")
    else:
        mode = f"Mode: live (providers: {', '.join(sorted(p.name for p in settings.providers))})"
    lines = [mode, f"Listening on {url} (API reference: {url}/docs)"]
    lines.append(key_line or (
        "API key: keys already exist in this database; create another with "
        "`.venv/bin/umg keys create --tenant dev --project dev`"
    ))
    return lines


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from server.gc_policy import tune_for_serving
    from server.serve import serve
    from server.services import build_services

    services = await build_services(settings)
    # Minted before serving, so a shutdown can never close storage under it; printed once
    # the port is bound, or at once if binding fails, so it is never lost.
    key_line = None
    if await services.storage.count_keys() == 0 and await _first_to_bootstrap(services):
        plain, record = await create_key(
            services.storage,
            services.clock,
            tenant="dev",
            project="dev",
            name="development key",
            admin=True,
        )
        key_line = (
            f"Created a development API key (shown once; an admin key, tenant {record.tenant},"
            f" project {record.project}): {plain}"
        )
    tune_for_serving()
    bound = False
    try:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                partial(
                    serve,
                    services,
                    host=settings.host,
                    port=settings.port,
                    drain_seconds=args.drain_seconds,
                    prestop_seconds=args.prestop_seconds,
                    workers=not args.no_workers,
                )
            )
            bound = True
            for line in startup_banner(settings, url, key_line):
                print(line, flush=True)
    finally:
        if not bound and key_line:
            print(key_line, flush=True)
    return 0


def _leaf_oserror(group: BaseExceptionGroup[OSError]) -> OSError:
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    assert isinstance(found, OSError)
    return found
