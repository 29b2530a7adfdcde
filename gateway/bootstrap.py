"""First run: migrate, create the ``default`` account and print a key a newcomer can use.

Runs once in the ``serve`` command before any worker starts, so replicas and workers never
race to bootstrap. The key is printed only when it is created: it is not stored anywhere. Next
to it goes the one-time dashboard setup link where the owner chooses their sign-in
(:mod:`keys.setup`; only its hash is stored, and ``tollway members setup-link`` makes a new one).

:func:`prepare` does the work before the server starts (the database and Redis are reached
first, gateway/preflight.py); :func:`announce` prints the banner once the server answers, so
it never names a URL that is not served yet. Should the server then fail to start, the key is
still printed by :func:`announce_failure`: it exists and would otherwise be lost.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from billing.accounts import AccountExists, count_accounts, create_account
from billing.money import credits_to_micro
from gateway.db import create_engine, create_sessionmaker, migrate
from gateway.preflight import check_database, check_redis, database_location
from gateway.settings import Settings, sqlite_path
from keys.service import create_key
from keys.setup import SETUP_TTL, create_setup_link

DEFAULT_ACCOUNT = "default"


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    key: str  # the first key's plaintext
    setup_token: str  # the owner's one-time dashboard setup token


def setup_url(settings: Settings, token: str) -> str:
    return f"http://{settings.host}:{settings.port}/setup?token={token}"


async def bootstrap(settings: Settings) -> Bootstrapped | None:
    """Create the default account, its first key and an owner setup link if there is no account yet.

    Returns the new key's plaintext and the setup token, or ``None`` when the database already
    had accounts.
    """
    engine = create_engine(settings.database_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            if await count_accounts(session):
                return None
            try:
                account = await create_account(
                    session, DEFAULT_ACCOUNT, credits_micro=credits_to_micro(settings.bootstrap_credits)
                )
            except AccountExists:
                return None  # another replica bootstrapped first
            _key, plaintext = await create_key(session, account.id, "bootstrap key")
            token = await create_setup_link(session, account.id, datetime.now(UTC), actor="bootstrap")
            return Bootstrapped(plaintext, token)
    finally:
        await engine.dispose()


def _database_line(settings: Settings) -> str:
    if sqlite_path(settings.database_url) is not None:
        return f"  Database: {database_location(settings)} (run other tollway commands from this directory)\n"
    return f"  Database: {database_location(settings)}\n"


def first_run_banner(settings: Settings, key: str, setup_token: str | None = None) -> str:
    base = f"http://{settings.host}:{settings.port}/v1"
    setup = (
        f"\n  Dashboard: choose the owner's sign-in (one-time link, valid {SETUP_TTL.days} days):\n"
        f"    {setup_url(settings, setup_token)}\n"
        if setup_token
        else ""
    )
    return f"""
Tollway is ready on {base}. Your account 'default' has {settings.bootstrap_credits} credits.

  API key (shown once, save it now):  {key}
{setup}{_database_line(settings)}
  curl {base}/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo/echo", "messages": [{{"role": "user", "content": "Hello, Tollway"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{key}")
  reply = client.chat.completions.create(model="demo/echo", messages=[{{"role": "user", "content": "Hi"}}])
  print(reply.choices[0].message.content)
"""


async def prepare(
    settings: Settings, *, verify: Callable[[Settings], Awaitable[None]] | None = None
) -> Bootstrapped | None:
    """Everything ``serve`` does before the server starts; raises
    :class:`gateway.preflight.StartupError` when the database or Redis cannot be reached."""
    await check_database(settings)
    await check_redis(settings)
    if settings.auto_migrate:
        await migrate(settings.database_url)
    if verify is not None:
        await verify(settings)
    return await bootstrap(settings) if settings.bootstrap else None


def announce(settings: Settings, made: Bootstrapped | None, *, as_json: bool) -> None:
    """The banner, printed once the server answers on its URL."""
    url = f"http://{settings.host}:{settings.port}"
    if as_json:
        setup = setup_url(settings, made.setup_token) if made else None
        database = database_location(settings)
        print(
            json.dumps({"url": url, "key": made.key if made else None, "setup_url": setup, "database": database}),
            flush=True,
        )
    elif made:
        print(first_run_banner(settings, made.key, made.setup_token), flush=True)
    else:
        print(
            f"Tollway listening on {url}/v1 (use a key from `tollway keys create`)\n{_database_line(settings)}",
            end="",
            flush=True,
        )


def announce_failure(settings: Settings, made: Bootstrapped | None) -> None:
    """The server did not start, but a first key was made: print it, or it would be lost."""
    if made is None:
        return
    print(
        f"The server did not start, but the first key was created; it is shown once, save it now:\n"
        f"  API key: {made.key}\n  Dashboard setup: {setup_url(settings, made.setup_token)}",
        flush=True,
    )
