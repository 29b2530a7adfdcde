"""The ``tollway`` command line: serve, migrate, and operate accounts, members, keys, credits and
proxy functions (``tollway functions …``, in gateway/cli_functions.py; projects, environments,
variables and the secret key ring in gateway/cli_projects.py).

Every command takes ``--json`` so scripts can read its output; errors go to stderr with a
non-zero exit code (2 for bad input or configuration, 3 when ``serve`` cannot start: a port in
use, an unreachable database or Redis; 1 for anything else). Every account option takes an id or
a name; commands other than ``serve`` and ``migrate`` refuse to create an embedded database that
does not exist (gateway/cli_common.py says why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from billing.accounts import (
    AccountExists,
    create_account,
    get_account,
    list_accounts,
    set_account_status,
)
from billing.errors import AccountNotFound, IdempotencyConflict
from billing.models import AccountStatus
from billing.money import MoneyError, credits_to_micro, format_credits
from gateway.cli_billing import add_billing_commands

# Re-exported: the command modules beside this one raise them (gateway/cli_common.py says why).
from gateway.cli_common import CommandError as CommandError
from gateway.cli_common import ReconcileFailed as ReconcileFailed
from gateway.cli_common import cli_engine, resolve_account
from gateway.cli_keys import add_key_commands
from gateway.cli_serve import cmd_serve
from gateway.db import create_sessionmaker, migrate
from gateway.preflight import STARTUP_FAILURE, StartupError
from gateway.settings import Settings, SettingsError, load_settings
from keys.audit import record_event
from keys.errors import KeyError_
from keys.members import add_member
from keys.models import Role
from keys.service import create_key

if TYPE_CHECKING:
    from billing.counters import CounterStore


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(text)


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
    engine = cli_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            await work(session)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _money_stores(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, CounterStore | None]]:
    """The database and, with Redis, the counters every gateway process reserves against (the
    embedded store lives inside a running gateway: it follows the database on its refresh)."""
    from billing.counters import build_counter_store

    engine = cli_engine(settings)
    counters = build_counter_store(settings.redis_url, settings.redis_prefix) if settings.uses_redis else None
    try:
        yield engine, counters
    finally:
        await engine.dispose()
        if counters is not None:
            await counters.close()


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


def _parse_credits(value: str) -> int:
    try:
        micro = credits_to_micro(value)
    except MoneyError as error:
        raise CommandError(str(error)) from error
    return micro


def _account_json(account: Any) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "email": account.email,
        "status": account.status,
        "balance": format_credits(account.balance_micro),
        "created_at": account.created_at.isoformat(),
    }


# --- commands -------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = _settings(args)
    asyncio.run(migrate(settings.database_url))
    _emit(args, {"migrated": True}, "database is up to date")


def cmd_accounts_create(args: argparse.Namespace) -> None:
    settings = _settings(args)
    credits = _parse_credits(args.credits)
    if credits < 0:
        raise CommandError("--credits cannot be negative")

    async def run() -> None:
        from billing.grants import grant_signup_credits

        async with _money_stores(settings) as (engine, counters):
            sessions = create_sessionmaker(engine)
            async with sessions() as session:
                try:
                    account = await create_account(session, args.name, email=args.email, credits_micro=credits)
                except AccountExists as error:
                    raise CommandError(str(error)) from error
            # A new customer account, as through the admin API: the sign-up grant, once.
            signup = credits_to_micro(settings.signup_credits)
            if await grant_signup_credits(sessions, counters, settings.redis_prefix, account.id, signup):
                async with sessions() as session:
                    account = await get_account(session, account.id)
        _emit(
            args,
            _account_json(account),
            f"created account {account.id} ({account.name}) with {format_credits(account.balance_micro)} credits",
        )

    asyncio.run(run())


def cmd_accounts_list(args: argparse.Namespace) -> None:
    settings = _settings(args)

    async def work(session: AsyncSession) -> None:
        accounts = [_account_json(a) for a in await list_accounts(session)]
        lines = [f"{a['id']:>6}  {a['name']:<24} {a['status']:<10} {a['balance']:>16} credits" for a in accounts]
        _emit(args, {"accounts": accounts}, "\n".join(lines) or "no accounts")

    asyncio.run(_with_session(settings, work))


def cmd_accounts_set_status(args: argparse.Namespace) -> None:
    settings = _settings(args)

    async def work(session: AsyncSession) -> None:
        try:
            account, previous = await set_account_status(session, args.account, AccountStatus(args.status))
        except AccountNotFound as error:
            raise CommandError(str(error)) from error
        record_event(
            session,
            account_id=account.id,
            actor="operator:cli",
            action="account.status",
            target_type="account",
            target_id=account.id,
            before={"status": previous},
            after={"status": account.status},
        )
        await session.commit()
        _emit(args, _account_json(account), f"account {account.id} is now {account.status} (was {previous})")

    asyncio.run(_with_session(settings, work))


def cmd_keys_create(args: argparse.Namespace) -> None:
    settings = _settings(args)

    async def work(session: AsyncSession) -> None:
        try:
            await get_account(session, args.account)
        except AccountNotFound as error:
            raise CommandError(str(error)) from error
        key, plaintext = await create_key(session, args.account, args.name)
        _emit(
            args,
            {"id": key.id, "account_id": key.account_id, "name": key.name, "prefix": key.prefix, "key": plaintext},
            f"{plaintext}\n(key {key.id} for account {key.account_id}; it will not be shown again)",
        )

    asyncio.run(_with_session(settings, work))


def cmd_credits_grant(args: argparse.Namespace) -> None:
    """Grant through the same service as the admin API, so the Redis mirror every gateway
    process reserves against follows the database at once (not at the account's next request)."""
    from billing.grants import grant

    settings = _settings(args)
    amount = _parse_credits(args.amount)
    if amount == 0:
        raise CommandError("the amount must not be zero")

    async def run() -> None:
        async with _money_stores(settings) as (engine, counters):
            try:
                entry = await grant(
                    create_sessionmaker(engine),
                    counters,
                    settings.redis_prefix,
                    args.account,
                    amount,
                    reason=args.reason,
                    idempotency_key=args.idempotency_key,
                )
            except (AccountNotFound, IdempotencyConflict) as error:
                raise CommandError(error.message) from error
        _emit(
            args,
            {
                "account_id": entry.account_id,
                "amount": format_credits(entry.amount_micro),
                "balance": format_credits(entry.balance_after_micro),
                "ledger_id": entry.id,
            },
            f"granted {format_credits(entry.amount_micro)} credits to account {entry.account_id}; "
            f"balance {format_credits(entry.balance_after_micro)}",
        )

    asyncio.run(run())


def cmd_members_add(args: argparse.Namespace) -> None:
    """Give an account a dashboard user; the password comes from stdin so it stays out of ps and history."""
    settings = _settings(args)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None

    async def work(session: AsyncSession) -> None:
        try:
            await get_account(session, args.account)
            member = await add_member(
                session,
                args.account,
                email=args.email,
                role=Role(args.role),
                password=password,
                actor_role=Role.OWNER,
                actor="operator",
            )
        except AccountNotFound as error:
            raise CommandError(str(error)) from error
        except KeyError_ as error:
            raise CommandError(error.message) from error
        _emit(
            args,
            {"account_id": args.account, **member.as_json()},
            f"{member.email} is now {member.role.value} of account {args.account}",
        )

    asyncio.run(_with_session(settings, work))


def cmd_members_setup_link(args: argparse.Namespace) -> None:
    """A one-time link to the dashboard page where a new owner of the account chooses a sign-in."""
    from gateway.bootstrap import setup_url
    from keys.setup import SETUP_TTL, create_setup_link

    settings = _settings(args)

    async def work(session: AsyncSession) -> None:
        try:
            await get_account(session, args.account)
        except AccountNotFound as error:
            raise CommandError(str(error)) from error
        token = await create_setup_link(session, args.account, datetime.now(UTC), actor="operator")
        url = setup_url(settings, token)
        _emit(
            args,
            {"account_id": args.account, "setup_url": url, "expires_in": int(SETUP_TTL.total_seconds())},
            f"one-time owner setup link for account {args.account} (valid {SETUP_TTL.days} days): {url}",
        )

    asyncio.run(_with_session(settings, work))


def cmd_billing_reconcile(args: argparse.Namespace) -> None:
    """Exit 1 when ledger, balances, usage records and counters disagree (see gateway.reconcile)."""
    from datetime import UTC, datetime

    from gateway.reconcile import reconcile

    settings = _settings(args)

    async def run() -> bool:
        async with _money_stores(settings) as (engine, counters):
            report = await reconcile(
                create_sessionmaker(engine), counters=counters, prefix=settings.redis_prefix, now=datetime.now(UTC)
            )
        summary = f"{report.accounts} accounts, {report.debits} debits checked"
        text = "\n".join(
            [
                *(f"DRIFT {line}" for line in report.drift),
                *(f"PARKED {line}" for line in report.parked),
                *(f"note  {line}" for line in report.notes),
                ("OK " if report.ok else "FAILED ") + summary,
            ]
        )
        _emit(
            args,
            {
                "ok": report.ok,
                "accounts": report.accounts,
                "debits": report.debits,
                "drift": report.drift,
                "parked": report.parked,
                "notes": report.notes,
            },
            text,
        )
        return report.ok

    if not asyncio.run(run()):
        raise ReconcileFailed("ledger, balances, usage records and counters disagree, or settlements are parked")


def cmd_billing_replay_parked(args: argparse.Namespace) -> None:
    """Write a settlement the database once refused (see ``billing reconcile``), as parked or as
    corrected in ``--data-file``; the Redis mirror follows the debit at once."""
    import msgspec

    from billing.grants import sync_after_change
    from billing.parking import ParkedNotFound, describe, is_refusal, replay_parked
    from functions.ledger import INVOCATION_RECORDS

    settings = _settings(args)
    data = None
    if args.data_file:
        with open(args.data_file, "rb") as file:
            data = file.read()

    async def run() -> None:
        async with _money_stores(settings) as (engine, counters):
            try:
                async with engine.begin() as connection:
                    settlement = await replay_parked(
                        connection, args.parked_id, data, kinds={INVOCATION_RECORDS.name: INVOCATION_RECORDS}
                    )
            except ParkedNotFound as error:
                raise CommandError(str(error)) from error
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                raise CommandError(f"not a settlement: {error}") from error
            except Exception as error:
                if not is_refusal(error):
                    raise
                raise CommandError(f"the database still refuses it: {describe(error)}") from error
            if counters is not None:
                await sync_after_change(
                    create_sessionmaker(engine), counters, settings.redis_prefix, settlement.account_id
                )
        _emit(
            args,
            {"replayed": args.parked_id, "request_id": settlement.request_id, "account_id": settlement.account_id},
            f"parked settlement {args.parked_id} written: request {settlement.request_id}, "
            f"account {settlement.account_id}, {format_credits(settlement.cost_micro)} credits",
        )

    asyncio.run(run())


def cmd_config_check(args: argparse.Namespace) -> None:
    """Print the configuration ``serve`` would run with, secrets masked; exit 2 on any problem."""
    import os

    from gateway.config_check import check_settings, to_toml
    from gateway.settings import redacted

    settings = _settings(args)
    report = check_settings(settings, os.environ)
    config = redacted(settings)
    if args.json:
        print(json.dumps({"ok": report.ok, "errors": report.errors, "warnings": report.warnings, "config": config}))
    else:
        print(to_toml(config), end="")
    for warning in report.warnings:
        print(f"tollway: warning: {warning}", file=sys.stderr)
    if not report.ok:
        raise CommandError("configuration check failed:\n  " + "\n  ".join(report.errors))


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--config", default=None, help="TOML config file (default: $TOLLWAY_CONFIG)")
    top.add_argument("--json", action="store_true", default=False, help="machine-readable output")
    # The same options after a subcommand; SUPPRESS keeps them from erasing ones given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    parser = argparse.ArgumentParser(prog="tollway", description="OpenAI-compatible AI gateway", parents=[top])
    parser.add_argument("--version", action="version", version=f"tollway {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=None, help="processes (more than one needs Redis)")
    serve.set_defaults(handler=cmd_serve)

    commands.add_parser("migrate", parents=[common], help="upgrade the database").set_defaults(handler=cmd_migrate)

    config = commands.add_parser("config", parents=[common], help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser(
        "check", parents=[common], help="print the effective configuration (secrets masked), exit 2 on any problem"
    ).set_defaults(handler=cmd_config_check)

    accounts = commands.add_parser("accounts", parents=[common], help="manage accounts")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    create = account_commands.add_parser("create", parents=[common], help="create an account")
    create.add_argument("name")
    create.add_argument("--credits", default="0")
    create.add_argument("--email", default="")
    create.set_defaults(handler=cmd_accounts_create)
    account_commands.add_parser("list", parents=[common], help="list accounts").set_defaults(handler=cmd_accounts_list)
    status = account_commands.add_parser("set-status", parents=[common], help="activate, suspend or ban")
    status.add_argument("account", help="an account id or name")
    status.add_argument("status", choices=[s.value for s in AccountStatus])
    status.set_defaults(handler=cmd_accounts_set_status)

    keys = commands.add_parser("keys", parents=[common], help="manage prx- keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_create = key_commands.add_parser("create", parents=[common], help="create a key (shown once)")
    key_create.add_argument("--account", required=True, help="an account id or name")
    key_create.add_argument("--name", required=True)
    key_create.set_defaults(handler=cmd_keys_create)
    add_key_commands(key_commands, common)

    members = commands.add_parser("members", parents=[common], help="manage dashboard users of an account")
    member_commands = members.add_subparsers(dest="members_command", required=True)
    member_add = member_commands.add_parser("add", parents=[common], help="add a user (created if new)")
    member_add.add_argument("--account", required=True, help="an account id or name")
    member_add.add_argument("--email", required=True)
    member_add.add_argument("--role", choices=[r.value for r in Role], default=Role.OWNER.value)
    member_add.add_argument(
        "--password-stdin", action="store_true", help="read the new user's password from the first line of stdin"
    )
    member_add.set_defaults(handler=cmd_members_add)
    setup_link = member_commands.add_parser(
        "setup-link", parents=[common], help="print a one-time dashboard link to set up a new owner"
    )
    setup_link.add_argument("--account", required=True, help="an account id or name")
    setup_link.set_defaults(handler=cmd_members_setup_link)

    billing = commands.add_parser("billing", parents=[common], help="check the books")
    billing_commands = billing.add_subparsers(dest="billing_command", required=True)
    billing_commands.add_parser(
        "reconcile", parents=[common], help="check ledger, balances, usage and counters agree (exit 1 on drift)"
    ).set_defaults(handler=cmd_billing_reconcile)
    replay = billing_commands.add_parser(
        "replay-parked", parents=[common], help="write a settlement the database refused, once its cause is fixed"
    )
    replay.add_argument("parked_id", type=int, help="the id reconcile names")
    replay.add_argument("--data-file", default=None, help="the settlement as corrected JSON (default: as parked)")
    replay.set_defaults(handler=cmd_billing_replay_parked)
    add_billing_commands(billing_commands, common)

    credits = commands.add_parser("credits", parents=[common], help="manage credits")
    credit_commands = credits.add_subparsers(dest="credits_command", required=True)
    grant = credit_commands.add_parser("grant", parents=[common], help="grant credits to an account")
    grant.add_argument("account", help="an account id or name")
    grant.add_argument("amount", help="credits, e.g. 100 or 12.5 (negative to correct)")
    grant.add_argument("--reason", default="")
    grant.add_argument("--idempotency-key", default=None, help="repeat-safe: the same key grants once")
    grant.set_defaults(handler=cmd_credits_grant)

    # Their own modules (cli_functions imports this one's helpers, so it is imported once they exist).
    from gateway.cli_functions import add_function_commands
    from gateway.cli_projects import add_project_commands

    add_function_commands(commands, common)
    add_project_commands(commands, common)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tollway")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _resolve_account_argument(args: argparse.Namespace) -> None:
    """Every command's account (``--account`` or the positional one) as an id, from an id or a name."""
    reference = getattr(args, "account", None)
    if not isinstance(reference, str):
        return

    async def work(session: AsyncSession) -> None:
        args.account = await resolve_account(session, reference)

    asyncio.run(_with_session(_settings(args), work))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _resolve_account_argument(args)
        args.handler(args)
    except (CommandError, SettingsError) as error:
        print(f"tollway: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"tollway: {error}", file=sys.stderr)
        return STARTUP_FAILURE
    except ReconcileFailed as error:
        print(f"tollway: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
