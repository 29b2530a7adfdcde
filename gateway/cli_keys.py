"""``tollway keys list`` and ``tollway keys revoke``: the operator's view of every account's keys.

Never a secret: a key is shown by its id and display prefix (``prx-ab12``), as the dashboard
shows it. Revoking deletes the key through :mod:`keys.management` (audited, actor
``operator:cli``); running gateways stop accepting it, and the ``bt-`` tokens minted under it,
once their key cache entry expires (``key_cache_ttl_s``).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cli_common import CommandError, emit, settings_of, with_session

ACTOR = "operator:cli"


def _status(is_active: bool, expires_at: datetime | None, now: datetime) -> str:
    if not is_active:
        return "disabled"
    if expires_at is not None and (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)) <= now:
        return "expired"
    return "active"


async def _account_names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    from billing.models import Account

    if not ids:
        return {}
    rows = await session.execute(select(Account.id, Account.name).where(Account.id.in_(ids)))
    return {int(account_id): str(name) for account_id, name in rows}


def cmd_keys_list(args: argparse.Namespace) -> None:
    from keys.management import list_all_keys

    settings = settings_of(args)

    async def work(session: AsyncSession) -> None:
        keys = await list_all_keys(session, args.account)
        names = await _account_names(session, {key.account_id for key in keys})
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = [
            {
                "id": key.id,
                "account_id": key.account_id,
                "account": names.get(key.account_id, ""),
                "name": key.name,
                "prefix": key.prefix,
                "status": _status(key.is_active, key.expires_at, now),
                "expires_at": key.expires_at.isoformat() if key.expires_at else None,
                "created_at": key.created_at.isoformat(),
            }
            for key in keys
        ]
        header = f"{'ID':>6}  {'ACCOUNT':<20} {'NAME':<24} {'PREFIX':<10} {'STATUS':<9} CREATED"
        lines = [
            f"{r['id']:>6}  {_clip(str(r['account_id']) + ' ' + r['account'], 20):<20} {_clip(r['name'], 24):<24} "
            f"{r['prefix']:<10} {r['status']:<9} {r['created_at'][:19]}"
            for r in rows
        ]
        emit(args, {"keys": rows}, "\n".join([header, *lines]) if rows else "no keys")

    asyncio.run(with_session(settings, work))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from keys.management import delete_key, find_keys

    settings = settings_of(args)

    async def work(session: AsyncSession) -> None:
        matches = await find_keys(session, args.key)
        if not matches:
            # A whole key is never echoed back: it may be the leaked secret being revoked.
            shown = "the given key" if args.key.strip().startswith("prx-") and len(args.key) > 16 else repr(args.key)
            raise CommandError(f"no key matches {shown} (see `tollway keys list`)")
        if len(matches) > 1:
            named = ", ".join(f"{key.id} ({key.prefix}, account {key.account_id})" for key in matches)
            raise CommandError(f"{args.key!r} matches {len(matches)} keys: {named}; give the key id")
        key = matches[0]
        revoked = {"id": key.id, "account_id": key.account_id, "name": key.name, "prefix": key.prefix}
        await delete_key(session, key.account_id, key.id, actor=ACTOR)
        emit(
            args,
            {"revoked": revoked},
            f"revoked key {key.id} ({key.prefix}…, {key.name!r}) of account {key.account_id}; running gateways "
            f"refuse it within key_cache_ttl_s ({settings.key_cache_ttl_s:g} s)",
        )

    asyncio.run(with_session(settings, work))


def add_key_commands(key_commands: Any, common: argparse.ArgumentParser) -> None:
    """``keys list`` and ``keys revoke`` beside ``keys create`` (gateway/cli.py)."""
    listing = key_commands.add_parser(
        "list", parents=[common], help="list keys of every account, or of one (prefixes only, never a key)"
    )
    listing.add_argument("--account", default=None, help="an account id or name")
    listing.set_defaults(handler=cmd_keys_list)
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke (delete) a key of any account")
    revoke.add_argument("key", help="the key id, its prefix (prx-ab12) or the whole key")
    revoke.set_defaults(handler=cmd_keys_revoke)
