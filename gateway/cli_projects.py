"""``tollway projects|environments|variables|secrets …``: proxy-function projects from the shell.

The same services as ``/api/projects`` (:mod:`functions.projects`, :mod:`functions.variables`),
straight against the database named by the settings, like the other commands of
:mod:`gateway.cli`; the audit trail names the actor ``operator:cli``. A running gateway sees a
change within ``function_cache_ttl_s``. Secret values are read from stdin (``--value-stdin``),
so they stay out of ``ps`` and the shell history, and are never printed: revealing belongs to the
dashboard and the API, where it is audited per user.

``secrets rotate`` re-seals every stored secret under the ring's newest key
(:mod:`functions.keyops`); ``secrets check`` is the start-up check on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from functions.crypto import KeyRing, SecretKeyError
from functions.errors import FunctionsError
from functions.keyfile import load_keyring
from gateway.cli_common import CommandError, ReconcileFailed, emit, require_database, settings_of, with_session
from gateway.settings import Settings, sqlite_path

ACTOR = "operator:cli"
KEY_FILE_WARNING = (
    "created the secret key file {path} for proxy-function secrets: back it up with the database, "
    "without it no stored secret can be opened"
)


@contextmanager
def _domain_errors() -> Iterator[None]:
    """The services' errors, as the CLI's: a message on stderr and exit code 2."""
    try:
        yield
    except FunctionsError as error:
        raise CommandError(error.message) from error
    except SecretKeyError as error:
        raise CommandError(str(error)) from error


def load_ring(settings: Settings) -> KeyRing | None:
    """The key ring the gateway would use; a key file made now is announced on stderr."""
    with _domain_errors():
        source = load_keyring(
            settings.function_secret_keys, settings.function_secret_key_file, sqlite_path(settings.database_url)
        )
    if source.created_file is not None:
        print(f"tollway: warning: {KEY_FILE_WARNING.format(path=source.created_file)}", file=sys.stderr)
    return source.ring


async def check_keys_before_serving(settings: Settings) -> None:
    """``tollway serve``, after migrating and before announcing anything: make the key file
    (once, before any worker races to) and refuse to start when stored secrets name a key the
    ring lacks."""
    from functions.keyops import check_stored_keys
    from gateway.db import create_engine, create_sessionmaker

    with _domain_errors():
        ring = load_ring(settings)
        engine = create_engine(settings.database_url)
        try:
            await check_stored_keys(create_sessionmaker(engine), ring)
        finally:
            await engine.dispose()


def _run(args: argparse.Namespace, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
    settings = settings_of(args)

    async def guarded(session: AsyncSession) -> None:
        from billing.accounts import get_account
        from billing.errors import AccountNotFound

        try:
            await get_account(session, args.account)
        except AccountNotFound as error:
            raise CommandError(str(error)) from error
        with _domain_errors():
            await work(session)

    asyncio.run(with_session(settings, guarded))


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    emit(args, msgspec.to_builtins(data), text)


# --- projects ---------------------------------------------------------------------------------


def cmd_projects_list(args: argparse.Namespace) -> None:
    from functions.projects import list_projects

    async def work(session: AsyncSession) -> None:
        projects = await list_projects(session, args.account)
        lines = [
            f"{p.id:>6}  {p.name:<24} " + ", ".join(f"{e.name} ({e.id})" for e in p.environments) for p in projects
        ]
        _emit(args, {"projects": projects}, "\n".join(lines) or "no projects")

    _run(args, work)


def cmd_projects_create(args: argparse.Namespace) -> None:
    from functions.projects import ProjectCreate, create_project

    data = _decode({"name": args.name, "description": args.description}, ProjectCreate)

    async def work(session: AsyncSession) -> None:
        project = await create_project(session, args.account, data, actor=ACTOR)
        environments = ", ".join(f"{e.name} ({e.id})" for e in project.environments)
        _emit(args, project, f"created project {project.id} ({project.name}) with {environments}")

    _run(args, work)


def cmd_projects_delete(args: argparse.Namespace) -> None:
    from functions.projects import delete_project

    async def work(session: AsyncSession) -> None:
        removed = await delete_project(session, args.account, args.project, actor=ACTOR)
        _emit(
            args,
            {"deleted": args.project, "functions_deleted": removed},
            f"deleted project {args.project} and its {len(removed)} proxy function(s)",
        )

    _run(args, work)


# --- environments -----------------------------------------------------------------------------


def cmd_environments_list(args: argparse.Namespace) -> None:
    from functions.projects import list_environments

    async def work(session: AsyncSession) -> None:
        environments = await list_environments(session, args.account, args.project)
        _emit(
            args,
            {"environments": environments},
            "\n".join(f"{e.id:>6}  {e.name}" for e in environments) or "no environments",
        )

    _run(args, work)


def _create_environment(args: argparse.Namespace, project_of_source: bool) -> None:
    from functions.projects import EnvironmentCreate, create_environment, environment_of

    clone_from = args.environment if project_of_source else args.clone_from
    data = _decode({"name": args.name, "clone_from": clone_from}, EnvironmentCreate)
    settings = settings_of(args)
    ring = load_ring(settings)

    async def work(session: AsyncSession) -> None:
        if project_of_source:
            project_id = (await environment_of(session, args.account, args.environment)).project_id
        else:
            project_id = args.project
        created = await create_environment(session, ring, args.account, project_id, data, actor=ACTOR)
        text = f"created environment {created.id} ({created.name}) in project {created.project_id}"
        if created.cloned_from is not None:
            text += (
                f", cloned from {created.cloned_from}: {created.variables_copied} variable(s), "
                f"{created.functions_copied} proxy function(s) with new tokens"
            )
        _emit(args, created, text)

    _run(args, work)


def cmd_environments_add(args: argparse.Namespace) -> None:
    _create_environment(args, project_of_source=False)


def cmd_environments_clone(args: argparse.Namespace) -> None:
    _create_environment(args, project_of_source=True)


def cmd_environments_rename(args: argparse.Namespace) -> None:
    from functions.projects import EnvironmentUpdate, rename_environment

    data = _decode({"name": args.name}, EnvironmentUpdate)

    async def work(session: AsyncSession) -> None:
        renamed = await rename_environment(session, args.account, args.environment, data, actor=ACTOR)
        _emit(args, renamed, f"environment {renamed.id} is now {renamed.name!r}")

    _run(args, work)


def cmd_environments_delete(args: argparse.Namespace) -> None:
    from functions.projects import delete_environment

    async def work(session: AsyncSession) -> None:
        removed = await delete_environment(session, args.account, args.environment, actor=ACTOR)
        _emit(
            args,
            {"deleted": args.environment, "functions_deleted": removed},
            f"deleted environment {args.environment} and its {len(removed)} proxy function(s)",
        )

    _run(args, work)


# --- variables --------------------------------------------------------------------------------


def cmd_variables_list(args: argparse.Namespace) -> None:
    from functions.variables import list_variables

    ring = load_ring(settings_of(args))

    async def work(session: AsyncSession) -> None:
        variables = await list_variables(session, ring, args.account, args.environment)
        lines = [f"{v.id:>6}  {v.key:<32} {'secret' if v.is_secret else 'plain ':<7} {v.value}" for v in variables]
        _emit(args, {"variables": variables}, "\n".join(lines) or "no variables")

    _run(args, work)


def cmd_variables_set(args: argparse.Namespace) -> None:
    """Create the variable, or change the value of the one with that key (its type stays)."""
    from functions.variables import (
        VariableCreate,
        VariableUpdate,
        create_variable,
        update_variable,
        variable_by_key,
    )

    if args.value_stdin == (args.value is not None):
        raise CommandError("give the value with exactly one of --value or --value-stdin")
    value = sys.stdin.readline().rstrip("\n") if args.value_stdin else args.value
    ring = load_ring(settings_of(args))

    async def work(session: AsyncSession) -> None:
        existing = await variable_by_key(session, args.account, args.environment, args.key)
        if existing is None:
            create = _decode(
                {
                    "key": args.key,
                    "value": value,
                    "is_secret": not args.plain,
                    "description": args.description or "",
                },
                VariableCreate,
            )
            variable = await create_variable(session, ring, args.account, args.environment, create, actor=ACTOR)
            verb = "created"
        else:
            if args.plain and existing.is_secret:
                raise CommandError(f"{args.key} is a secret: a variable's type is fixed when it is created")
            fields: dict[str, Any] = {"value": value}
            if args.description is not None:
                fields["description"] = args.description
            variable, _mapped = await update_variable(
                session, ring, args.account, existing.id, _decode(fields, VariableUpdate), actor=ACTOR
            )
            verb = "updated"
        _emit(args, variable, f"{verb} variable {variable.id} ({variable.key})")

    _run(args, work)


def cmd_variables_delete(args: argparse.Namespace) -> None:
    from functions.variables import delete_variable

    async def work(session: AsyncSession) -> None:
        mapped = await delete_variable(session, args.account, args.variable, actor=ACTOR)
        text = f"deleted variable {args.variable}"
        if mapped:
            text += f"; {len(mapped)} proxy function(s) mapped it and will answer 500 until remapped"
        _emit(args, {"deleted": args.variable, "functions_unresolved": mapped}, text)

    _run(args, work)


# --- secrets ----------------------------------------------------------------------------------


def cmd_secrets_rotate(args: argparse.Namespace) -> None:
    from functions.keyops import add_key_to_file, key_file_path, rotate
    from gateway.db import create_engine, create_sessionmaker

    settings = settings_of(args)
    require_database(settings)  # before a key is added to a file beside a database that is not there
    added = None
    if args.new_key:
        if settings.function_secret_keys:
            raise CommandError(
                "the key ring comes from function_secret_keys: add a key with a greater id there, "
                "restart the gateway, then run `tollway secrets rotate`"
            )
        path = key_file_path(settings.function_secret_key_file, sqlite_path(settings.database_url))
        if path is None:
            raise CommandError("no key file is configured (function_secret_key_file): nothing to add a key to")
        with _domain_errors():
            added = add_key_to_file(path)
    ring = load_ring(settings)
    if ring is None:
        raise CommandError("no secret key ring is configured (function_secret_keys or function_secret_key_file)")

    async def run() -> Any:
        engine = create_engine(settings.database_url)
        try:
            return await rotate(create_sessionmaker(engine), ring, batch_size=args.batch_size)
        finally:
            await engine.dispose()

    with _domain_errors():
        report = asyncio.run(run())
    text = (
        f"re-sealed {report.variables} variable value(s) and {report.tokens} function token(s) "
        f"under key {report.key_id!r}"
    )
    if added is not None:
        restart = "a gateway process started before now does not know it: restart it"
        text = f"added key {added!r} to the key file ({restart})\n{text}"
    for where in report.unreadable:
        text += f"\nUNREADABLE {where}: it does not open under its own key; left as it is"
    emit(args, {**report.as_json(), "added_key_id": added}, text)
    if report.unreadable:
        raise ReconcileFailed(f"{len(report.unreadable)} stored secret(s) could not be opened")


def cmd_secrets_check(args: argparse.Namespace) -> None:
    settings = settings_of(args)
    require_database(settings)
    asyncio.run(check_keys_before_serving(settings))
    with _domain_errors():
        ring = load_ring(settings)
    emit(
        args,
        {"ok": True, "current_key_id": ring.current if ring else None},
        "every stored secret names a key of the ring",
    )


# --- parser -----------------------------------------------------------------------------------


def _decode(fields: dict[str, Any], type_: type[Any]) -> Any:
    """Check command-line input with the API's own Structs and bounds."""
    try:
        return msgspec.convert(fields, type=type_)
    except msgspec.ValidationError as error:
        raise CommandError(f"invalid input: {error}") from error


def add_project_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    def sub(
        parent: Any, name: str, help_: str, handler: Callable[[argparse.Namespace], None], *, account: bool = True
    ) -> Any:
        parser = parent.add_parser(name, parents=[common], help=help_)
        parser.set_defaults(handler=handler)
        if account:
            parser.add_argument("--account", required=True, help="an account id or name")
        return parser

    projects = commands.add_parser("projects", parents=[common], help="manage proxy-function projects")
    project_commands = projects.add_subparsers(dest="projects_command", required=True)
    sub(project_commands, "list", "list projects and their environments", cmd_projects_list)
    create = sub(project_commands, "create", "create a project (Development, Staging, Production)", cmd_projects_create)
    create.add_argument("name")
    create.add_argument("--description", default="")
    sub(project_commands, "delete", "delete a project with everything in it", cmd_projects_delete).add_argument(
        "project", type=int
    )

    environments = commands.add_parser("environments", parents=[common], help="manage a project's environments")
    environment_commands = environments.add_subparsers(dest="environments_command", required=True)
    sub(environment_commands, "list", "list a project's environments", cmd_environments_list).add_argument(
        "--project", type=int, required=True
    )
    add = sub(environment_commands, "add", "add an environment", cmd_environments_add)
    add.add_argument("--project", type=int, required=True)
    add.add_argument("name")
    add.add_argument("--clone-from", type=int, default=None, help="copy this environment's variables and functions")
    rename = sub(environment_commands, "rename", "rename an environment", cmd_environments_rename)
    rename.add_argument("environment", type=int)
    rename.add_argument("name")
    clone = sub(
        environment_commands,
        "clone",
        "copy an environment (variables, functions with new tokens) under a new name",
        cmd_environments_clone,
    )
    clone.add_argument("environment", type=int)
    clone.add_argument("name")
    sub(environment_commands, "delete", "delete an environment (never the last)", cmd_environments_delete).add_argument(
        "environment", type=int
    )

    variables = commands.add_parser("variables", parents=[common], help="manage an environment's variables")
    variable_commands = variables.add_subparsers(dest="variables_command", required=True)
    sub(variable_commands, "list", "list variables (secrets masked)", cmd_variables_list).add_argument(
        "--environment", type=int, required=True
    )
    set_ = sub(variable_commands, "set", "create a variable or change its value", cmd_variables_set)
    set_.add_argument("--environment", type=int, required=True)
    set_.add_argument("key")
    set_.add_argument("--value", default=None, help="the value (visible in ps: prefer --value-stdin for secrets)")
    set_.add_argument("--value-stdin", action="store_true", help="read the value from the first line of stdin")
    set_.add_argument("--plain", action="store_true", help="a plain (not secret) variable; fixed at creation")
    set_.add_argument("--description", default=None)
    sub(variable_commands, "delete", "delete a variable", cmd_variables_delete).add_argument("variable", type=int)

    secrets = commands.add_parser("secrets", parents=[common], help="operate the secret key ring")
    secret_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    rotate = sub(
        secret_commands,
        "rotate",
        "re-seal every stored secret under the ring's newest key (idempotent)",
        cmd_secrets_rotate,
        account=False,
    )
    rotate.add_argument(
        "--new-key",
        action="store_true",
        help="first append a fresh key to the key file; stop the gateway before, start it after: "
        "a running process does not know the new key and cannot open what is sealed with it",
    )
    rotate.add_argument("--batch-size", type=int, default=200, choices=range(1, 10_001), metavar="N")
    sub(secret_commands, "check", "check every stored secret names a key of the ring", cmd_secrets_check, account=False)
