"""`umg prune [--dry-run] [--json]`: one prune of every store now.

Owns: the prune command. It deletes what `[retention]` no longer keeps
(adapters/retention.py; docs/operations.md, "Retention") and prints the rows per store;
with `--dry-run` it counts what would go and deletes nothing.
"""

from __future__ import annotations

import argparse
import json

import trio

from adapters.clock import Clock
from adapters.config.settings import Settings
from adapters.retention import prune_once
from server.commands.common import Subcommands, opened


def add_parser(sub: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    prune = sub.add_parser(
        "prune", help="delete what [retention] no longer keeps, and print the rows per store",
        parents=parents,
    )  # fmt: skip
    prune.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    prune.add_argument("--json", action="store_true", help="print a JSON object")


def main(args: argparse.Namespace, settings: Settings) -> int:
    return trio.run(_prune, args, settings)


async def _prune(args: argparse.Namespace, settings: Settings) -> int:
    """`umg prune`: one prune of every store now (adapters/retention.py)."""
    async with opened(settings) as storage:
        counts = await prune_once(
            storage, settings.retention, settings.idempotency.ttl_seconds, Clock().epoch(),
            dry_run=args.dry_run,
        )  # fmt: skip
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "rows": counts}))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for store, n in counts.items():
        print(f"{store}: {verb} {n} rows")
    return 0
