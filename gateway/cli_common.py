"""What every ``tollway`` command module shares: its two exit errors and output/session helpers.

A module of its own so command modules (:mod:`gateway.cli_projects`) need not import
:mod:`gateway.cli`, which runs as ``__main__`` under ``python -m gateway.cli``: a second copy
of it would hold other ``CommandError`` classes than the ones ``main`` catches.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.db import create_engine, create_sessionmaker
from gateway.settings import Settings, load_settings, sqlite_path

__all__ = [
    "CommandError",
    "ReconcileFailed",
    "cli_engine",
    "emit",
    "require_database",
    "resolve_account",
    "settings_of",
    "with_session",
]


class CommandError(Exception):
    """A user-facing failure: printed without a traceback, exit code 2."""


class ReconcileFailed(Exception):
    """A check found a problem (reconcile's drift, secrets rotation could not open): exit code 1,
    the report itself already says what."""


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(text)


def settings_of(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


def require_database(settings: Settings) -> None:
    """Refuse to work on an embedded database that does not exist yet.

    SQLite creates a missing file on first connect, so ``tollway keys list`` run from the wrong
    directory would otherwise answer "no keys" from a new, empty database beside it, and leave
    that file behind. Only ``serve`` and ``migrate`` create the database.
    """
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        raise CommandError(
            f"no database at {path.resolve()} — run from the directory where you ran `tollway serve`, "
            "or set TOLLWAY_DATABASE_URL / --config"
        )


def cli_engine(settings: Settings) -> AsyncEngine:
    """The engine a command (other than serve and migrate) works on: the database must exist."""
    require_database(settings)
    return create_engine(settings.database_url)


async def resolve_account(session: AsyncSession, reference: str) -> int:
    """The id of the account ``reference`` names: an id, else its exact name, else its name in any
    case when only one account matches. A number that is one account's id and another's name is
    ambiguous, as is a name several accounts share but for case."""
    from billing.models import Account

    text = reference.strip()
    if not text:
        raise CommandError("--account needs an account id or name")
    by_id = await session.get(Account, int(text)) if text.isdigit() and len(text) <= 18 else None
    by_name = list(await session.scalars(select(Account).where(Account.name == text)))
    if not by_name:
        by_name = list(
            await session.scalars(select(Account).where(func.lower(Account.name) == text.lower()).order_by(Account.id))
        )
    candidates = {account.id: account for account in [*([by_id] if by_id else []), *by_name]}
    if len(candidates) == 1:
        return next(iter(candidates))
    if not candidates:
        raise CommandError(f"no account with id or name {text!r} (see `tollway accounts list`)")
    named = ", ".join(f"{account.id} ({account.name})" for account in candidates.values())
    raise CommandError(f"account {text!r} is ambiguous: it could be {named}; give the id")


async def with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
    engine = cli_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            await work(session)
    finally:
        await engine.dispose()
