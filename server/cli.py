"""The `umg` command: `serve`, and `keys create | list | revoke`.

Owns: the command line. Settings come from `adapters.config.load_settings` (file <
environment < flags). `umg serve` on an empty database mints a development key and prints
it once; nobody ever needs SQL to get a key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal

import trio

from adapters import keys
from adapters.clock import Clock
from adapters.config import ConfigError, Settings, load_settings, parse_budget
from adapters.gateway import new_id
from adapters.storage import open_storage
from adapters.storage.base import Storage
from adapters.storage.records import KeyRecord
from adapters.telemetry import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="umg", description="Unified Model Gateway")
    parser.add_argument("--config", help="TOML config file (default: $UMG_CONFIG)")
    parser.add_argument("--database-url", help="sqlite:///path or postgresql://... ($DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    keys_cmd = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys_cmd.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--project", required=True)
    create.add_argument("--name")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--budget-usd", help="spending limit in USD per budget period")
    create.add_argument("--budget-period", choices=["day", "month", "total"], default="month")
    create.add_argument("--json", action="store_true", help="print a JSON object")
    listing = keys_cmd.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    revoke = keys_cmd.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", metavar="ID_OR_PREFIX")
    return parser


async def create_key(
    storage: Storage,
    clock: Clock,
    *,
    tenant: str,
    project: str,
    name: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_usd: Decimal | None = None,
    budget_period: str = "month",
) -> tuple[str, KeyRecord]:
    plain, prefix, digest = keys.mint()
    record = KeyRecord(
        id=new_id("key"),
        prefix=prefix,
        secret_hash=digest,
        tenant=tenant,
        project=project,
        name=name,
        rpm=rpm,
        tpm=tpm,
        budget_usd=budget_usd,
        budget_period=budget_period,
        created_at=clock.wall(),
        revoked_at=None,
    )
    await storage.insert_key(record)
    return plain, record


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
    }


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings.database_url)
    await storage.migrate()
    clock = Clock()
    try:
        if args.action == "create":
            plain, record = await create_key(
                storage,
                clock,
                tenant=args.tenant,
                project=args.project,
                name=args.name,
                rpm=args.rpm,
                tpm=args.tpm,
                budget_usd=parse_budget(args.budget_usd),
                budget_period=args.budget_period,
            )
            if args.json:
                print(json.dumps({"key": plain, **_key_json(record)}))
            else:
                print(f"API key (shown once, store it now): {plain}")
                print(f"id={record.id} prefix={record.prefix} tenant={record.tenant} project={record.project}")
            return 0
        if args.action == "list":
            records = await storage.list_keys(args.tenant)
            if args.json:
                print(json.dumps([_key_json(r) for r in records]))
            for r in records if not args.json else ():
                state = "revoked" if r.revoked_at else "active"
                print(f"{r.id}  {r.prefix}  {r.tenant}/{r.project}  {state}")
            return 0
        revoked = await storage.revoke_key(args.key, clock.wall())
        if revoked is None:
            print(f"no key with id or prefix {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked {revoked.id} ({revoked.prefix})")
        return 0
    finally:
        await storage.close()


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from server.serve import serve
    from server.services import build_services

    services = await build_services(settings)
    if await services.storage.count_keys() == 0:
        plain, record = await create_key(
            services.storage, services.clock, tenant="dev", project="dev", name="development key"
        )
        print(f"Created a development API key (shown once): {plain}", flush=True)
    await serve(services, host=settings.host, port=settings.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(
            os.environ,
            config_path=args.config,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            database_url=args.database_url,
        )
    except ConfigError as err:
        print(f"umg: {err}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "keys":
        return trio.run(_keys, args, settings)
    return trio.run(_serve, args, settings)


if __name__ == "__main__":
    sys.exit(main())
