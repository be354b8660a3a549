"""The `umg` command: `serve`, `worker`, `keys create | list | revoke`, `budgets set | list |
delete`, `webhooks secret`, `prune`.

Owns: the command line. Settings come from `adapters.config.load_settings` (file <
environment < flags). `umg serve` on an empty database mints a development key and prints
it once; nobody ever needs SQL to get a key.

Rules: bad input (a limit that is not a positive integer, a budget that is not a
non-negative decimal, an unreadable config file, an unsupported database URL) is one
clear line on stderr and exit status 2, never a traceback. A SQLite database's directory
is created on first use, so `umg serve` works in a fresh checkout. A key's secret is
printed only by `keys create` (and the first `serve`), never by `keys list`. The
development key is an admin key (`--admin`): it can use the admin API and the console.
`budgets set --tenant T [--project P] --limit-usd N --period month` sets a project's
budget (without `--project`: the tenant's); running gateways apply it within
`adapters.budgets.BUDGET_CACHE_SECONDS`.
`prune [--dry-run]` deletes what `[retention]` no longer keeps (docs/operations.md,
"Retention") and prints the rows per store.
`webhooks secret --tenant T` prints the tenant's webhook signing secret (the one
`GET /v1/webhooks/secret` shows), creating it on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from adapters import keys
from adapters.admin import create_key
from adapters.budgets import budget_record
from adapters.clock import Clock
from adapters.config import LOG_LEVELS, ConfigError, Settings, load_settings, parse_budget
from adapters.retention import prune_once
from adapters.storage import SQLITE_PREFIX, open_storage
from adapters.storage.records import BudgetRecord, KeyRecord
from adapters.telemetry import configure_logging
from adapters.webhook_delivery import tenant_secret

if TYPE_CHECKING:
    from server.services import Services


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value} (omit it for no limit)")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, not {value}")
    return value


def _budget(text: str) -> Decimal:
    try:
        amount = parse_budget(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    assert amount is not None
    return amount


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0 to 3600 seconds, not {text}")
    return value


def _common(defaults: bool) -> argparse.ArgumentParser:
    """`--config` and `--database-url`, accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    default = None if defaults else argparse.SUPPRESS  # after the subcommand: only if given
    common.add_argument("--config", default=default, help="TOML config file ($UMG_CONFIG)")
    common.add_argument(
        "--database-url",
        default=default,
        help="sqlite:///path or postgresql://... ($DATABASE_URL, default sqlite:///data/gateway.db)",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="umg", description="Unified Model Gateway", parents=[_common(True)]
    )
    later = [_common(False)]
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway", parents=later)
    serve.add_argument("--host", help="address to bind ($HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to bind ($PORT, default 3000; 0: any free port)")
    serve.add_argument(
        "--drain-seconds",
        type=_seconds,
        default=5.0,
        help="on SIGTERM/SIGINT, how long open streams may run before they are ended (default 5)",
    )
    serve.add_argument(
        "--prestop-seconds",
        type=_seconds,
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
    sub.add_parser(
        "worker", help="run only job workers and webhook deliveries (no HTTP), until SIGTERM",
        parents=later,
    )  # fmt: skip
    keys_cmd = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys_cmd.add_parser("create", help="create a key and print it once", parents=later)
    create.add_argument("--tenant", required=True)
    create.add_argument("--project", required=True)
    create.add_argument("--name")
    create.add_argument("--rpm", type=_positive_int, help="requests per minute (>= 1)")
    create.add_argument("--tpm", type=_positive_int, help="tokens per minute (>= 1)")
    create.add_argument(
        "--budget-usd", type=_budget, help="spending limit in USD per budget period (>= 0)"
    )
    create.add_argument("--budget-period", choices=["day", "month", "total"], default="month")
    create.add_argument(
        "--admin",
        action="store_true",
        help="an admin key: manages every tenant (admin API, console); default: a tenant key",
    )
    create.add_argument("--json", action="store_true", help="print a JSON object")
    listing = keys_cmd.add_parser("list", help="list keys (never their secrets)", parents=later)
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    revoke = keys_cmd.add_parser("revoke", help="revoke a key by id or prefix", parents=later)
    revoke.add_argument("key", metavar="ID_OR_PREFIX", help="a key id, its prefix, or the key itself")
    budgets = sub.add_parser("budgets", help="project and tenant budgets").add_subparsers(
        dest="action", required=True
    )
    put = budgets.add_parser("set", help="set a project's (or a tenant's) budget", parents=later)
    put.add_argument("--tenant", required=True)
    put.add_argument("--project", default="", help="leave out for the whole tenant's budget")
    put.add_argument("--limit-usd", "--limit", type=_budget, required=True, dest="limit_usd",
                     help="spending limit in USD per period (>= 0)")
    put.add_argument("--period", choices=["day", "month", "total"], default="month")
    shown = budgets.add_parser("list", help="list budgets", parents=later)
    shown.add_argument("--tenant")
    shown.add_argument("--json", action="store_true")
    drop = budgets.add_parser("delete", help="remove a budget", parents=later)
    drop.add_argument("--tenant", required=True)
    drop.add_argument("--project", default="")
    hooks_cmd = sub.add_parser("webhooks", help="webhook settings of a tenant").add_subparsers(
        dest="action", required=True
    )
    secret = hooks_cmd.add_parser(
        "secret", help="print a tenant's webhook signing secret (created on first use)",
        parents=later,
    )  # fmt: skip
    secret.add_argument("--tenant", required=True)
    prune = sub.add_parser(
        "prune", help="delete what [retention] no longer keeps, and print the rows per store",
        parents=later,
    )  # fmt: skip
    prune.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    prune.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def _budget_json(rec: BudgetRecord) -> dict[str, object]:
    return {
        "tenant": rec.tenant,
        "project": rec.project or None,
        "limit_usd": str(rec.budget_usd),
        "period": rec.budget_period,
        "updated_at": rec.updated_at.isoformat(),
    }


async def _budgets(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings.database_url)
    await storage.migrate()
    try:
        if args.action == "set":
            try:
                rec = budget_record(args.tenant, args.project, args.limit_usd, args.period, Clock().wall())
            except ValueError as err:
                print(f"umg: {err}", file=sys.stderr)
                return 2
            await storage.put_budget(rec)
            print(f"budget set: {_budget_line(rec)}")
            return 0
        if args.action == "list":
            found = await storage.list_budgets(args.tenant)
            if args.json:
                print(json.dumps([_budget_json(r) for r in found]))
            for rec in found if not args.json else ():
                print(_budget_line(rec))
            return 0
        if not await storage.delete_budget(args.tenant, args.project):
            print(f"umg: no budget for tenant {args.tenant!r} project {args.project!r}", file=sys.stderr)
            return 1
        print("budget deleted")
        return 0
    finally:
        await storage.close()


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


async def _webhooks(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings.database_url)
    await storage.migrate()
    try:
        print(await tenant_secret(storage, args.tenant))
        return 0
    finally:
        await storage.close()


async def _prune(args: argparse.Namespace, settings: Settings) -> int:
    """`umg prune`: one prune of every store now (adapters/retention.py)."""
    storage = open_storage(settings.database_url)
    await storage.migrate()
    try:
        counts = await prune_once(
            storage, settings.retention, settings.idempotency.ttl_seconds, Clock().epoch(),
            dry_run=args.dry_run,
        )  # fmt: skip
    finally:
        await storage.close()
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "rows": counts}))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for store, n in counts.items():
        print(f"{store}: {verb} {n} rows")
    return 0


def _budget_line(rec: BudgetRecord) -> str:
    what = f"{rec.tenant}/{rec.project}" if rec.project else f"{rec.tenant} (whole tenant)"
    return f"{what}  {rec.budget_usd} USD per {rec.budget_period}"


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
                budget_usd=args.budget_usd,
                budget_period=args.budget_period,
                admin=args.admin,
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
                role = "  admin" if r.admin else ""
                print(f"{r.id}  {r.prefix}  {r.tenant}/{r.project}  {state}{role}")
            return 0
        target = keys.prefix_of(args.key) or args.key  # a whole key names its prefix
        revoked = await storage.revoke_key(target, clock.wall())
        if revoked is None:
            print(f"umg: no key with id or prefix {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked {revoked.id} ({revoked.prefix})")
        return 0
    finally:
        await storage.close()


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


def _ensure_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite database file (not of `:memory:`)."""
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


_LIMIT_FLAGS = ("header_timeout_seconds", "body_timeout_seconds", "body_budget_bytes")
_LOG_FLAGS = ("log_level", "third_party_log_level")


def _with_limit_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """`serve`'s limit and log flags over the file and the environment (checked like them)."""
    logs = {n: getattr(args, n) for n in _LOG_FLAGS if getattr(args, n, None) is not None}
    settings = attrs.evolve(settings, **logs) if logs else settings
    given = {n: getattr(args, n) for n in _LIMIT_FLAGS if getattr(args, n, None) is not None}
    if not given:
        return settings
    return attrs.evolve(settings, limits=attrs.evolve(settings.limits, **given))


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
        settings = _with_limit_flags(settings, args)
        open_storage(settings.database_url)  # validates the URL; opening does no I/O
        _ensure_sqlite_dir(settings.database_url)
        configure_logging(settings.log_level, settings.third_party_log_level)
    except (ValueError, OSError) as err:  # ConfigError is a ValueError
        print(f"umg: {err}", file=sys.stderr)
        return 2
    if args.command == "keys":
        return trio.run(_keys, args, settings)
    if args.command == "budgets":
        return trio.run(_budgets, args, settings)
    if args.command == "webhooks":
        return trio.run(_webhooks, args, settings)
    if args.command == "prune":
        return trio.run(_prune, args, settings)
    if args.command == "worker":
        return trio.run(_worker, args, settings)
    status = 1
    try:
        status = trio.run(_serve, args, settings)
    except* OSError as group:  # typically: the address is already in use
        reason = _leaf_oserror(group)
        print(f"umg: cannot serve on {settings.host}:{settings.port}: {reason}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
