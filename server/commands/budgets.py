"""`umg budgets set | list | delete`: project and tenant budgets from the command line.

Owns: the budgets command group. `set --tenant T [--project P] --limit-usd N --period
month` sets a project's budget (without `--project`: the tenant's); running gateways
apply it within `adapters.budgets.BUDGET_CACHE_SECONDS`. A budget that cannot be (an
unknown period, a negative limit) is one line on stderr and exit status 2; deleting one
that does not exist, status 1.
"""

from __future__ import annotations

import argparse
import sys

import trio

from adapters.budgets import budget_record
from adapters.clock import Clock
from adapters.config.settings import Settings
from adapters.storage.records import BudgetRecord
from server.commands.common import Subcommands, budget, opened, print_list


def add_parser(sub: Subcommands, parents: list[argparse.ArgumentParser]) -> None:
    budgets = sub.add_parser("budgets", help="project and tenant budgets").add_subparsers(
        dest="action", required=True
    )
    put = budgets.add_parser("set", help="set a project's (or a tenant's) budget", parents=parents)
    put.add_argument("--tenant", required=True)
    put.add_argument("--project", default="", help="leave out for the whole tenant's budget")
    put.add_argument("--limit-usd", "--limit", type=budget, required=True, dest="limit_usd",
                     help="spending limit in USD per period (>= 0)")
    put.add_argument("--period", choices=["day", "month", "total"], default="month")
    shown = budgets.add_parser("list", help="list budgets", parents=parents)
    shown.add_argument("--tenant")
    shown.add_argument("--json", action="store_true")
    drop = budgets.add_parser("delete", help="remove a budget", parents=parents)
    drop.add_argument("--tenant", required=True)
    drop.add_argument("--project", default="")


def main(args: argparse.Namespace, settings: Settings) -> int:
    return trio.run(_budgets, args, settings)


def _budget_json(rec: BudgetRecord) -> dict[str, object]:
    return {
        "tenant": rec.tenant,
        "project": rec.project or None,
        "limit_usd": str(rec.budget_usd),
        "period": rec.budget_period,
        "updated_at": rec.updated_at.isoformat(),
    }


async def _budgets(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings) as storage:
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
            return print_list(await storage.list_budgets(args.tenant), args.json, _budget_json, _budget_line)
        if not await storage.delete_budget(args.tenant, args.project):
            print(f"umg: no budget for tenant {args.tenant!r} project {args.project!r}", file=sys.stderr)
            return 1
        print("budget deleted")
        return 0

def _budget_line(rec: BudgetRecord) -> str:
    what = f"{rec.tenant}/{rec.project}" if rec.project else f"{rec.tenant} (whole tenant)"
    return f"{what}  {rec.budget_usd} USD per {rec.budget_period}"
