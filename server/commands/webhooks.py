"""`umg webhooks secret --tenant T`: a tenant's webhook signing secret.

Owns: the webhooks command group. It prints the tenant's signing secret (the one
`GET /v1/webhooks/secret` shows), creating it on first use.
"""

from __future__ import annotations

import argparse

import trio

from adapters.config.settings import Settings
from adapters.webhook_delivery import tenant_secret
from server.commands.common import Subcommands, opened


def add_parser(sub: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    hooks_cmd = sub.add_parser("webhooks", help="webhook settings of a tenant").add_subparsers(
        dest="action", required=True
    )
    secret = hooks_cmd.add_parser(
        "secret", help="print a tenant's webhook signing secret (created on first use)",
        parents=parents,
    )  # fmt: skip
    secret.add_argument("--tenant", required=True)


def main(args: argparse.Namespace, settings: Settings) -> int:
    return trio.run(_webhooks, args, settings)


async def _webhooks(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as storage:
        print(await tenant_secret(storage, args.tenant))
    return 0
