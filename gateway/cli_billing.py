"""``tollway billing revenue``: the operator's takings by month and package, per currency.

Read-only: it reads the ``payments`` table (:func:`billing.reports.revenue_report`) and prints a
table, or with ``--json`` the rows with integer minor units (cents) and micro-credits, so a
script can add them up without a decimal parser.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cli_common import CommandError, emit, require_database, settings_of, with_session

__all__ = ["add_billing_commands", "cmd_billing_revenue"]


def _month(value: str | None, option: str) -> str | None:
    from billing.reports import month_start

    if value is None:
        return None
    try:
        month_start(value)
    except ValueError as error:
        raise CommandError(f"{option}: {error}") from error
    return value


def _table(rows: list[Any]) -> str:
    from billing.money import format_credits
    from billing.payments.packages import format_minor

    if not rows:
        return "no payments in this period"
    header = ("month", "package", "currency", "purchases", "gross", "refunded", "net", "credits sold", "reversed")
    lines = [header] + [
        (
            row.month,
            row.package_id,
            row.currency,
            str(row.purchases),
            format_minor(row.gross_minor, row.currency),
            format_minor(row.refunded_minor, row.currency),
            format_minor(row.net_minor, row.currency),
            format_credits(row.credits_sold_micro),
            format_credits(row.credits_reversed_micro),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(_cell(i, line[i], widths[i]) for i in range(len(header))) for line in lines)


def _cell(column: int, text: str, width: int) -> str:
    return text.ljust(width) if column < 3 else text.rjust(width)  # names left, numbers right


def cmd_billing_revenue(args: argparse.Namespace) -> None:
    from billing.reports import revenue_report

    settings = settings_of(args)
    first, last = _month(args.first, "--from"), _month(args.last, "--to")
    if first is not None and last is not None and first > last:
        raise CommandError("--from is after --to")
    require_database(settings)

    async def work(session: AsyncSession) -> None:
        rows = await revenue_report(session, first=first, last=last)
        emit(args, {"from": first, "to": last, "data": msgspec.to_builtins(rows)}, _table(rows))

    asyncio.run(with_session(settings, work))


def add_billing_commands(billing_commands: Any, common: argparse.ArgumentParser) -> None:
    """``billing revenue`` beside ``billing reconcile`` (gateway/cli.py)."""
    revenue = billing_commands.add_parser(
        "revenue", parents=[common], help="revenue by month and package, per currency (from the payments table)"
    )
    revenue.add_argument("--from", dest="first", default=None, metavar="YYYY-MM", help="first month (UTC), included")
    revenue.add_argument("--to", dest="last", default=None, metavar="YYYY-MM", help="last month (UTC), included")
    revenue.set_defaults(handler=cmd_billing_revenue)
