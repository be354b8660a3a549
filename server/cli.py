"""The `umg` command: `serve`, `worker`, `keys create | list | revoke`, `budgets set | list |
delete`, `webhooks secret`, `prune`.

Owns: the command line's frame: the options every command takes (`--config`,
`--database-url`, before or after the subcommand), settings from
`adapters.config.loader.load_settings` (file < environment < flags, `serve`'s limit and log
flags last), logging, and the dispatch to the command groups (server/commands/, one
module each, which own their flags and what they do).

Rules: bad input (a limit that is not a positive integer, a budget that is not a
non-negative decimal, an unreadable config file, an unsupported database URL) is one
clear line on stderr and exit status 2, never a traceback. A SQLite database's directory
is created on first use, so `umg serve` works in a fresh checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import attrs

from adapters.config.loader import load_settings
from adapters.config.settings import Settings
from adapters.storage import SQLITE_PREFIX, open_storage
from adapters.telemetry import configure_logging
from server.commands import budgets, keys, prune, serve, webhooks, worker
from server.commands.common import Subcommands


class CommandGroup(Protocol):
    """What each module of server/commands/ is."""

    def add_parser(self, sub: Subcommands, parents: list[argparse.ArgumentParser]) -> None: ...

    def main(self, args: argparse.Namespace, settings: Settings) -> int: ...


# the command groups, in the order `umg --help` lists them
COMMANDS: Mapping[str, CommandGroup] = MappingProxyType({
    "serve": serve, "worker": worker, "keys": keys, "budgets": budgets,
    "webhooks": webhooks, "prune": prune,
})  # fmt: skip


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
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMANDS.values():
        group.add_parser(sub, [_common(False)])
    return parser


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
    return COMMANDS[args.command].main(args, settings)


if __name__ == "__main__":
    sys.exit(main())
