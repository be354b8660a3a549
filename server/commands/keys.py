"""`umg keys create | list | revoke`: API keys from the command line.

Owns: the keys command group. A key's secret is printed only by `keys create` (once, as
`adapters.admin.create_key` mints it), never by `keys list`. `revoke` takes a key id, its
prefix or the whole key (which names its prefix); an unknown one is one line on stderr
and exit status 1. Revoking twice is harmless (the first time is kept).
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from adapters import keys
from adapters.admin import create_key
from adapters.clock import Clock
from adapters.config.settings import Settings
from adapters.storage.records import KeyRecord
from server.commands.common import Subcommands, budget, opened, positive_int, print_list


def add_parser(sub: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    keys_cmd = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys_cmd.add_parser("create", help="create a key and print it once", parents=parents)
    create.add_argument("--tenant", required=True)
    create.add_argument("--project", required=True)
    create.add_argument("--name")
    create.add_argument("--rpm", type=positive_int, help="requests per minute (>= 1)")
    create.add_argument("--tpm", type=positive_int, help="tokens per minute (>= 1)")
    create.add_argument(
        "--budget-usd", type=budget, help="spending limit in USD per budget period (>= 0)"
    )
    create.add_argument("--budget-period", choices=["day", "month", "total"], default="month")
    create.add_argument(
        "--admin",
        action="store_true",
        help="an admin key: manages every tenant (admin API, console); default: a tenant key",
    )
    create.add_argument("--json", action="store_true", help="print a JSON object")
    listing = keys_cmd.add_parser("list", help="list keys (never their secrets)", parents=parents)
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    revoke = keys_cmd.add_parser("revoke", help="revoke a key by id or prefix", parents=parents)
    revoke.add_argument("key", metavar="ID_OR_PREFIX", help="a key id, its prefix, or the key itself")


def main(args: argparse.Namespace, settings: Settings) -> int:
    return trio.run(_keys, args, settings)


def _key_json(record: KeyRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "prefix": record.prefix,
        "tenant": record.tenant,
        "project": record.project,
        "name": record.name,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "budget_usd": None if record.budget_usd is None else str(record.budget_usd),
        "budget_period": record.budget_period,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "admin": record.admin,
    }


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    clock = Clock()
    async with opened(settings) as storage:
        if args.action == "create":
            plain, record = await create_key(
                storage, clock, tenant=args.tenant, project=args.project, name=args.name,
                rpm=args.rpm, tpm=args.tpm, budget_usd=args.budget_usd,
                budget_period=args.budget_period, admin=args.admin,
            )  # fmt: skip
            if args.json:
                print(json.dumps({"key": plain, **_key_json(record)}))
            else:
                print(f"API key (shown once, store it now): {plain}")
                print(f"id={record.id} prefix={record.prefix} tenant={record.tenant} project={record.project}")
            return 0
        if args.action == "list":
            return print_list(await storage.list_keys(args.tenant), args.json, _key_json, _key_line)
        target = keys.prefix_of(args.key) or args.key  # a whole key names its prefix
        revoked = await storage.revoke_key(target, clock.wall())
        if revoked is None:
            print(f"umg: no key with id or prefix {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked {revoked.id} ({revoked.prefix})")
        return 0


def _key_line(record: KeyRecord) -> str:
    state = "revoked" if record.revoked_at else "active"
    role = "  admin" if record.admin else ""
    return f"{record.id}  {record.prefix}  {record.tenant}/{record.project}  {state}{role}"
