"""First run: migrate, create the ``default`` account and print a key a newcomer can use.

Runs once in the ``serve`` command before any worker starts, so replicas and workers never
race to bootstrap. The key is printed only when it is created: it is not stored anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from billing.accounts import AccountExists, count_accounts, create_account
from billing.money import credits_to_micro
from gateway.db import create_engine, create_sessionmaker, migrate
from gateway.settings import Settings
from keys.service import create_key

DEFAULT_ACCOUNT = "default"


async def bootstrap(settings: Settings) -> str | None:
    """Create the default account and its first key if there is no account yet.

    Returns the new key's plaintext, or ``None`` when the database already had accounts.
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
            return plaintext
    finally:
        await engine.dispose()


def first_run_banner(settings: Settings, key: str) -> str:
    base = f"http://{settings.host}:{settings.port}/v1"
    return f"""
Tollway is ready. Your account 'default' has {settings.bootstrap_credits} credits.

  API key (shown once, save it now):  {key}

  curl {base}/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo/echo", "messages": [{{"role": "user", "content": "Hello, Tollway"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{key}")
  reply = client.chat.completions.create(model="demo/echo", messages=[{{"role": "user", "content": "Hi"}}])
  print(reply.choices[0].message.content)
"""


async def prepare_and_announce(
    settings: Settings, *, as_json: bool, verify: Callable[[Settings], Awaitable[None]] | None = None
) -> None:
    if settings.auto_migrate:
        await migrate(settings.database_url)
    if verify is not None:
        await verify(settings)
    key = await bootstrap(settings) if settings.bootstrap else None
    url = f"http://{settings.host}:{settings.port}"
    if as_json:
        print(json.dumps({"url": url, "key": key}), flush=True)
    elif key:
        print(first_run_banner(settings, key), flush=True)
    else:
        print(f"Tollway listening on {url}/v1 (use a key from `tollway keys create`)", flush=True)
