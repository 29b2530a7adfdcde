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

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import create_engine, create_sessionmaker
from gateway.settings import Settings, load_settings

__all__ = ["CommandError", "ReconcileFailed", "emit", "settings_of", "with_session"]


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


async def with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await work(session)
    finally:
        await engine.dispose()
