"""``tollway functions …``: the management API's proxy-function actions for the operator's shell.

Same service, same rules and audit trail as ``/api`` (the actor is ``operator:cli``); every
command names the account it acts for, so a mistyped id of another account is "not found".
Running gateways see a change within ``function_cache_ttl_s`` (≤ 1 s). ``create`` takes the
common fields as flags, or the API's JSON body whole with ``--body`` (flags win over it)::

    tollway functions create --account 1 --environment 3 --template stripe --secret 12
    tollway functions create --account 1 --environment 3 --name Mailer \\
        --target-url https://api.brevo.com/v3/smtp/email --header 'Accept: application/json' \\
        --secret '12:header:api-key' --origin https://app.example.com --rate-limit 30

A ``--secret`` is ``VARIABLE_ID`` (from a template: the hint at its position fills the rest) or
``VARIABLE_ID:KIND:KEY[:TEMPLATE]`` with KIND header, body or query.

``tollway functions prune-invocations [--older-than-days 90]`` deletes the invocation log past
its retention, for every account (functions/analytics.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from functions.crypto import KeyRing, SecretKeyError
from functions.errors import FunctionsError
from functions.function_views import FunctionRead, function_read
from functions.keyfile import load_keyring
from functions.service import (
    create_function,
    delete_function,
    get_function,
    list_functions,
    regenerate_token,
    set_enabled,
)
from functions.validation import FunctionCreate, FunctionRules
from gateway.cli import CommandError, _emit, _settings, _with_session
from gateway.errors import readable
from gateway.settings import Settings, sqlite_path

__all__ = ["add_function_commands"]

ACTOR = "operator:cli"
_create_decoder = msgspec.json.Decoder(FunctionCreate)


def _rules(settings: Settings) -> FunctionRules:
    return FunctionRules.from_settings(settings.function_allow_hosts, settings.function_timeout_s)


def _keyring(settings: Settings) -> KeyRing | None:
    try:
        source = load_keyring(
            settings.function_secret_keys, settings.function_secret_key_file, sqlite_path(settings.database_url)
        )
    except (SecretKeyError, OSError) as error:
        raise CommandError(f"the secret key ring cannot be loaded: {error}") from error
    if source.created_file is not None:
        print(
            f"tollway: created the secret key file {source.created_file}: back it up with the database",
            file=sys.stderr,
        )
    return source.ring


def _run(args: argparse.Namespace, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
    try:
        asyncio.run(_with_session(_settings(args), work))
    except FunctionsError as error:
        raise CommandError(error.message) from error


def _view(read: FunctionRead, **extra: Any) -> dict[str, Any]:
    view: dict[str, Any] = msgspec.to_builtins(read)
    view.update(extra)
    return view


def _describe(read: FunctionRead) -> str:
    state = "enabled" if read.enabled else "disabled"
    lines = [
        f"{read.name} ({read.slug}), {state}",
        f"  id:       {read.id}",
        f"  called:   {read.url_path} with header x-proxy-token",
        f"  target:   {read.method} {read.target_url}",
        f"  origins:  {', '.join(read.allowed_origins) or '(none: every caller refused)'}",
        f"  headers:  {', '.join(read.headers) or '-'}",
    ]
    for mapping in read.secret_mappings:
        template = f" as {mapping.template!r}" if mapping.template else ""
        lines.append(f"  secret:   variable {mapping.variable_id} -> {mapping.inject_as} {mapping.key}{template}")
    if read.rate_limit_per_minute:
        lines.append(f"  limit:    {read.rate_limit_per_minute}/min")
    return "\n".join(lines)


def _now() -> datetime:
    return datetime.now(UTC)


# -- create ------------------------------------------------------------------------------------


def _secret(text: str) -> dict[str, Any]:
    parts = text.split(":", 3)
    try:
        mapping: dict[str, Any] = {"variable_id": int(parts[0])}
    except ValueError as error:
        raise CommandError(
            f"--secret {text!r}: start with the variable id (VARIABLE_ID[:KIND:KEY[:TEMPLATE]])"
        ) from error
    if len(parts) == 2:
        raise CommandError(f"--secret {text!r}: give KIND and KEY together (VARIABLE_ID:KIND:KEY[:TEMPLATE])")
    if len(parts) >= 3:
        mapping.update(inject_as=parts[1], key=parts[2])
    if len(parts) == 4:
        mapping["template"] = parts[3]
    return mapping


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise CommandError(f"--header {text!r}: write it as 'Name: value'")
    return name.strip(), value.strip()


def _create_body(args: argparse.Namespace) -> FunctionCreate:
    body: dict[str, Any] = {}
    if args.body:
        try:
            given = msgspec.json.decode(args.body)
        except msgspec.DecodeError as error:
            raise CommandError(f"--body is not valid JSON: {error}") from error
        if not isinstance(given, dict):
            raise CommandError("--body must be a JSON object (the API's create body)")
        body.update(given)
    flags = {
        "template": args.template,
        "name": args.name,
        "target_url": args.target_url,
        "method": args.method,
        "description": args.description,
        "rate_limit_per_minute": args.rate_limit,
        "timeout_ms": args.timeout_ms,
    }
    body.update({field: value for field, value in flags.items() if value is not None})
    if args.header:
        body["headers"] = dict(_header(text) for text in args.header)
    if args.secret:
        body["secret_mappings"] = [_secret(text) for text in args.secret]
    if args.origin:
        body["allowed_origins"] = list(args.origin)
    if args.disabled:
        body["enabled"] = False
    try:
        return _create_decoder.decode(msgspec.json.encode(body))
    except msgspec.ValidationError as error:
        raise CommandError(f"invalid function: {readable(str(error))}") from error


def cmd_functions_create(args: argparse.Namespace) -> None:
    data = _create_body(args)
    settings = _settings(args)
    keyring = _keyring(settings)

    async def work(session: AsyncSession) -> None:
        row, token = await create_function(
            session, args.account, args.environment, data, _rules(settings), keyring, _now(), actor=ACTOR
        )
        read = function_read(row)
        _emit(args, _view(read, token=token), f"{token}\n{_describe(read)}\n(the token is shown once here)")

    _run(args, work)


# -- the others --------------------------------------------------------------------------------


def cmd_functions_list(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        page = await list_functions(
            session,
            args.account,
            args.environment,
            q=args.q,
            limit=max(1, min(args.limit, 200)),
            cursor=args.cursor,
        )
        reads = [function_read(row) for row in page.functions]
        lines = [
            f"{r.id}  {'on ' if r.enabled else 'off'}  {r.method:<6} {r.name[:32]:<32} {r.target_url}" for r in reads
        ]
        if page.next_cursor:
            lines.append(f"(more: --cursor {page.next_cursor})")
        _emit(
            args,
            {"functions": [_view(r) for r in reads], "next_cursor": page.next_cursor},
            "\n".join(lines) or "no proxy functions",
        )

    _run(args, work)


def cmd_functions_show(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        read = function_read(await get_function(session, args.account, args.function))
        _emit(args, _view(read), _describe(read))

    _run(args, work)


def _toggle(enabled: bool) -> Callable[[argparse.Namespace], None]:
    def command(args: argparse.Namespace) -> None:
        async def work(session: AsyncSession) -> None:
            row = await set_enabled(session, args.account, args.function, enabled, _now(), actor=ACTOR)
            read = function_read(row)
            _emit(args, _view(read), f"{read.name} ({read.id}) is {'enabled' if enabled else 'disabled'}")

        _run(args, work)

    return command


def cmd_functions_regenerate_token(args: argparse.Namespace) -> None:
    keyring = _keyring(_settings(args))

    async def work(session: AsyncSession) -> None:
        row, token = await regenerate_token(session, args.account, args.function, keyring, _now(), actor=ACTOR)
        _emit(
            args,
            {"id": row.id, "url_path": f"/fn/{row.id}", "header": "x-proxy-token", "token": token},
            f"{token}\n(new token of {row.name}, {row.id}; the old one stops working within a second)",
        )

    _run(args, work)


def cmd_functions_delete(args: argparse.Namespace) -> None:
    async def work(session: AsyncSession) -> None:
        deleted = await delete_function(session, args.account, args.function, actor=ACTOR)
        _emit(args, {"id": deleted, "deleted": True}, f"deleted proxy function {deleted}")

    _run(args, work)


# -- parser ------------------------------------------------------------------------------------


def cmd_functions_prune_invocations(args: argparse.Namespace) -> None:
    """Delete proxy-function invocation rows older than ``--older-than-days`` (retention: 90)."""
    from functions.analytics import prune_invocations

    if args.older_than_days < 1:
        raise CommandError("--older-than-days must be at least 1")
    settings = _settings(args)
    cutoff = _now() - timedelta(days=args.older_than_days)

    async def work(session: AsyncSession) -> None:
        deleted = await prune_invocations(session, older_than=cutoff)
        _emit(
            args,
            {"deleted": deleted, "older_than": cutoff.isoformat()},
            f"deleted {deleted} invocations from before {cutoff.isoformat()}",
        )

    asyncio.run(_with_session(settings, work))


def add_function_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """``tollway functions …`` on the CLI's top-level subparsers (gateway/cli.py)."""
    functions = commands.add_parser("functions", parents=[common], help="manage proxy functions")
    sub = functions.add_subparsers(dest="functions_command", required=True)

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_text)
        parser.add_argument("--account", required=True, help="an account id or name")
        parser.set_defaults(handler=handler)
        return parser

    prune = sub.add_parser(
        "prune-invocations", parents=[common], help="delete the invocation log past its retention (every account)"
    )
    prune.add_argument("--older-than-days", type=int, default=90, help="default 90, the documented retention")
    prune.set_defaults(handler=cmd_functions_prune_invocations)

    listing = command("list", "list an environment's functions, newest first", cmd_functions_list)
    listing.add_argument("--environment", type=int, required=True)
    listing.add_argument("--q", default=None, help="search the name or target URL")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", default=None, help="next_cursor of the previous page")

    create = command(
        "create", "create a function, blank or from a template (the token is shown once)", cmd_functions_create
    )
    create.add_argument("--environment", type=int, required=True)
    create.add_argument("--template", default=None, help="a template slug (see GET /api/function-templates/)")
    create.add_argument("--name", default=None)
    create.add_argument("--target-url", default=None)
    create.add_argument("--method", default=None, choices=["GET", "POST", "PUT", "DELETE"])
    create.add_argument("--description", default=None)
    create.add_argument("--header", action="append", default=[], help="'Name: value' (repeat)")
    create.add_argument("--secret", action="append", default=[], help="VARIABLE_ID[:KIND:KEY[:TEMPLATE]] (repeat)")
    create.add_argument("--origin", action="append", default=[], help="an allowed origin (repeat; default *)")
    create.add_argument("--rate-limit", type=int, default=None, help="requests per minute")
    create.add_argument("--timeout-ms", type=int, default=None)
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    create.add_argument("--body", default=None, help="the API's JSON create body; flags override its fields")

    for name, help_text, handler in (
        ("show", "show a function (never its token)", cmd_functions_show),
        ("enable", "enable a function", _toggle(True)),
        ("disable", "disable a function (its calls get 404 within a second)", _toggle(False)),
        ("regenerate-token", "give a function a new token; the old one stops working", cmd_functions_regenerate_token),
        ("delete", "delete a function", cmd_functions_delete),
    ):
        command(name, help_text, handler).add_argument("function", help="the function's id")
