"""What the `umg` command groups share: their flag types, the storage they open, and how
a list is printed.

- A flag type reads its text or says, as one line, why it cannot (argparse then exits
  with status 2, never a traceback).
- `opened(settings)`: the configured storage, migrated, closed when the command is done.
- `print_list`: one line per item, or with `--json` one JSON array.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TypeAlias, TypeVar

from adapters.config.budgets import parse_budget
from adapters.config.settings import Settings
from adapters.config.values import ConfigError
from adapters.storage import open_storage
from adapters.storage.base import Storage

# what `umg`'s parser hands each command group to add its subcommand to
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

N = TypeVar("N", int, float)
T = TypeVar("T")


def _read(text: str, kind: Callable[[str], N], noun: str) -> N:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {noun}, not {text!r}") from None


def positive_int(text: str) -> int:
    value = _read(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value} (omit it for no limit)")
    return value


def port(text: str) -> int:
    value = _read(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, not {value}")
    return value


def seconds(text: str) -> float:
    value = _read(text, float, "a number of seconds")
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0 to 3600 seconds, not {text}")
    return value


def budget(text: str) -> Decimal:
    try:
        amount = parse_budget(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    assert amount is not None
    return amount


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Storage]:
    """The configured storage, migrated; closed on the way out."""
    storage = open_storage(settings.database_url)
    await storage.migrate()
    try:
        yield storage
    finally:
        await storage.close()


def print_list(
    items: Iterable[T], as_json: bool, to_json: Callable[[T], object], line: Callable[[T], str]
) -> int:
    """Print `items` (as one JSON array with `as_json`) and give the exit status, 0."""
    if as_json:
        print(json.dumps([to_json(item) for item in items]))
    else:
        for item in items:
            print(line(item))
    return 0
