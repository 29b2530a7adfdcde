"""Projects and their environments: list, create, rename, clone, delete.

Every function takes the caller's ``account_id`` and filters on it first: another account's id
is a :class:`~functions.errors.NotFound`, exactly like an id that does not exist. Each change
writes its audit event in the same transaction and commits; functions that delete proxy
functions (a project, an environment) return their ids, so the caller can tell the function
directory to forget them (``state.functions.forget``) and the runtime stops serving them at once.

A project is made with the environments Development, Staging and Production (envmanager.md
§2); an environment can be added, renamed, cloned (its variables re-sealed for the new
environment, its proxy functions copied with new ids and new tokens, their mappings pointing at
the copied variables) and deleted, never the last one of its project.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.bounds import NO_CONTROL, Description, Id, Name
from functions.cloning import copy_contents
from functions.crypto import KeyRing
from functions.errors import (
    Conflict,
    EnvironmentExists,
    EnvironmentNotFound,
    InvalidInput,
    LastEnvironment,
    ProjectExists,
    ProjectNotFound,
)
from functions.models import DEFAULT_ENVIRONMENTS, Environment, Project, ProxyFunction, Variable
from keys.audit import record_event

__all__ = [
    "EnvironmentCreate",
    "EnvironmentCreated",
    "EnvironmentName",
    "EnvironmentRead",
    "EnvironmentUpdate",
    "ProjectCreate",
    "ProjectRead",
    "ProjectUpdate",
    "create_environment",
    "create_project",
    "delete_environment",
    "delete_project",
    "environment_of",
    "get_project",
    "iso",
    "list_environments",
    "list_projects",
    "rename_environment",
    "update_project",
]

EnvironmentName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_CONTROL)]


class ProjectCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""


class ProjectUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Partial: a field left out stays as it is."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class EnvironmentCreate(msgspec.Struct, forbid_unknown_fields=True):
    """``clone_from``: an environment of the same project whose variables and functions to copy."""

    name: EnvironmentName
    clone_from: Id | None = None


class EnvironmentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: EnvironmentName


class EnvironmentRead(msgspec.Struct):
    id: int
    project_id: int
    name: str
    created_at: str


class EnvironmentCreated(EnvironmentRead):
    cloned_from: int | None = None
    variables_copied: int = 0
    functions_copied: int = 0


class ProjectRead(msgspec.Struct):
    id: int
    name: str
    description: str
    environments: list[EnvironmentRead]
    created_at: str
    updated_at: str


def iso(moment: datetime) -> str:
    """ISO 8601 with its offset, on both backends (SQLite hands back naive UTC datetimes)."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).isoformat()


def environment_read(environment: Environment) -> EnvironmentRead:
    return EnvironmentRead(
        id=environment.id,
        project_id=environment.project_id,
        name=environment.name,
        created_at=iso(environment.created_at),
    )


def _project_read(project: Project, environments: list[Environment]) -> ProjectRead:
    return ProjectRead(
        id=project.id,
        name=project.name,
        description=project.description,
        environments=[environment_read(environment) for environment in environments],
        created_at=iso(project.created_at),
        updated_at=iso(project.updated_at),
    )


def _clean_name(name: str) -> str:
    """Names are compared as shown: surrounding blanks removed, and never blank."""
    cleaned = name.strip()
    if not cleaned:
        raise InvalidInput("name must not be blank", param="name")
    return cleaned


# --- lookups ----------------------------------------------------------------------------------


async def _project(session: AsyncSession, account_id: int, project_id: int, *, lock: bool = False) -> Project:
    query = select(Project).where(Project.account_id == account_id, Project.id == project_id)
    if lock:
        # Serialises changes to one project's environments on Postgres (the last-environment
        # rule); SQLite has one writer at a time anyway and ignores FOR UPDATE.
        query = query.with_for_update()
    project = await session.scalar(query)
    if project is None:
        raise ProjectNotFound(f"project {project_id} not found")
    return project


async def environment_of(session: AsyncSession, account_id: int, environment_id: int) -> Environment:
    """The account's environment, or 404 (H2's functions and the variables use it too)."""
    environment = await session.scalar(
        select(Environment).where(Environment.account_id == account_id, Environment.id == environment_id)
    )
    if environment is None:
        raise EnvironmentNotFound(f"environment {environment_id} not found")
    return environment


async def _environments(session: AsyncSession, account_id: int, project_ids: list[int]) -> dict[int, list[Environment]]:
    found: dict[int, list[Environment]] = {project_id: [] for project_id in project_ids}
    if project_ids:
        rows = await session.scalars(
            select(Environment)
            .where(Environment.account_id == account_id, Environment.project_id.in_(project_ids))
            .order_by(Environment.id)
        )
        for environment in rows:
            found[environment.project_id].append(environment)
    return found


async def _function_ids(session: AsyncSession, account_id: int, *where: Any) -> list[str]:
    rows = await session.scalars(select(ProxyFunction.id).where(ProxyFunction.account_id == account_id, *where))
    return list(rows)


# --- projects ---------------------------------------------------------------------------------


async def list_projects(session: AsyncSession, account_id: int) -> list[ProjectRead]:
    projects = list(await session.scalars(select(Project).where(Project.account_id == account_id).order_by(Project.id)))
    environments = await _environments(session, account_id, [project.id for project in projects])
    return [_project_read(project, environments[project.id]) for project in projects]


async def get_project(session: AsyncSession, account_id: int, project_id: int) -> ProjectRead:
    project = await _project(session, account_id, project_id)
    environments = await _environments(session, account_id, [project.id])
    return _project_read(project, environments[project.id])


async def _commit_unique(session: AsyncSession, conflict: Conflict) -> None:
    """Commit, turning a unique-constraint race (two creates with one name) into the 409."""
    try:
        await session.commit()
    except IntegrityError as error:
        await session.rollback()
        raise conflict from error


async def _flush_unique(session: AsyncSession, conflict: Conflict) -> None:
    try:
        await session.flush()
    except IntegrityError as error:
        await session.rollback()
        raise conflict from error


async def _project_name_free(session: AsyncSession, account_id: int, name: str) -> None:
    taken = await session.scalar(select(Project.id).where(Project.account_id == account_id, Project.name == name))
    if taken is not None:
        raise _project_exists(name)


def _project_exists(name: str) -> ProjectExists:
    return ProjectExists(f"a project named {name!r} exists already", param="name")


def _environment_exists(name: str) -> EnvironmentExists:
    return EnvironmentExists(f"this project has an environment named {name!r} already", param="name")


async def create_project(session: AsyncSession, account_id: int, data: ProjectCreate, *, actor: str) -> ProjectRead:
    """The project and its Development, Staging and Production environments, in one transaction."""
    name = _clean_name(data.name)
    await _project_name_free(session, account_id, name)
    project = Project(account_id=account_id, name=name, description=data.description)
    session.add(project)
    await _flush_unique(session, _project_exists(name))
    environments = [
        Environment(account_id=account_id, project_id=project.id, name=env_name) for env_name in DEFAULT_ENVIRONMENTS
    ]
    session.add_all(environments)
    await session.flush()
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="project.created",
        target_type="project",
        target_id=project.id,
        after={"name": name, "description": data.description, "environments": list(DEFAULT_ENVIRONMENTS)},
    )
    await _commit_unique(session, _project_exists(name))
    return _project_read(project, environments)


async def update_project(
    session: AsyncSession, account_id: int, project_id: int, data: ProjectUpdate, *, actor: str
) -> ProjectRead:
    project = await _project(session, account_id, project_id)
    changes: dict[str, Any] = {}
    if not isinstance(data.name, msgspec.UnsetType):
        name = _clean_name(data.name)
        if name != project.name:
            await _project_name_free(session, account_id, name)
            changes["name"] = name
    if not isinstance(data.description, msgspec.UnsetType) and data.description != project.description:
        changes["description"] = data.description
    if changes:
        before = {column: getattr(project, column) for column in changes}
        for column, value in changes.items():
            setattr(project, column, value)
        record_event(
            session,
            account_id=account_id,
            actor=actor,
            action="project.updated",
            target_type="project",
            target_id=project.id,
            before=before,
            after=changes,
        )
        await _commit_unique(session, _project_exists(str(changes.get("name", project.name))))
        await session.refresh(project)
    return await get_project(session, account_id, project_id)


async def delete_project(session: AsyncSession, account_id: int, project_id: int, *, actor: str) -> list[str]:
    """Delete the project with its environments, variables and functions (the database cascades).
    Returns the ids of the functions that went with it, for the directory to forget."""
    project = await _project(session, account_id, project_id, lock=True)
    environments = (await _environments(session, account_id, [project.id]))[project.id]
    function_ids = await _function_ids(session, account_id, ProxyFunction.project_id == project.id)
    variables = await session.scalar(
        select(func.count(Variable.id)).where(
            Variable.account_id == account_id,
            Variable.environment_id.in_([environment.id for environment in environments] or [0]),
        )
    )
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="project.deleted",
        target_type="project",
        target_id=project.id,
        before={
            "name": project.name,
            "description": project.description,
            "environments": [environment.name for environment in environments],
            "variables": int(variables or 0),
            "functions": function_ids,
        },
    )
    await session.execute(delete(Project).where(Project.account_id == account_id, Project.id == project.id))
    await session.commit()
    return function_ids


# --- environments -----------------------------------------------------------------------------


async def list_environments(session: AsyncSession, account_id: int, project_id: int) -> list[EnvironmentRead]:
    project = await _project(session, account_id, project_id)
    return [environment_read(e) for e in (await _environments(session, account_id, [project.id]))[project.id]]


async def _environment_name_free(session: AsyncSession, project: Project, name: str) -> None:
    taken = await session.scalar(
        select(Environment.id).where(
            Environment.account_id == project.account_id,
            Environment.project_id == project.id,
            Environment.name == name,
        )
    )
    if taken is not None:
        raise _environment_exists(name)


async def create_environment(
    session: AsyncSession,
    keyring: KeyRing | None,
    account_id: int,
    project_id: int,
    data: EnvironmentCreate,
    *,
    actor: str,
) -> EnvironmentCreated:
    """Add an environment; with ``clone_from``, copy that environment's variables and functions."""
    project = await _project(session, account_id, project_id, lock=True)
    source = None
    if data.clone_from is not None:
        source = await environment_of(session, account_id, data.clone_from)
        if source.project_id != project.id:
            raise EnvironmentNotFound(
                f"environment {data.clone_from} not found in project {project.id}", param="clone_from"
            )
    name = _clean_name(data.name)
    await _environment_name_free(session, project, name)
    environment = Environment(account_id=account_id, project_id=project.id, name=name)
    session.add(environment)
    await _flush_unique(session, _environment_exists(name))
    copied = (0, 0) if source is None else await copy_contents(session, keyring, source, environment, actor=actor)
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="environment.created" if source is None else "environment.cloned",
        target_type="environment",
        target_id=environment.id,
        after={
            "name": name,
            "project_id": project.id,
            **(
                {}
                if source is None
                else {"cloned_from": source.id, "variables_copied": copied[0], "functions_copied": copied[1]}
            ),
        },
    )
    await _commit_unique(session, _environment_exists(name))
    read = environment_read(environment)
    return EnvironmentCreated(
        **msgspec.structs.asdict(read),
        cloned_from=source.id if source is not None else None,
        variables_copied=copied[0],
        functions_copied=copied[1],
    )


async def rename_environment(
    session: AsyncSession, account_id: int, environment_id: int, data: EnvironmentUpdate, *, actor: str
) -> EnvironmentRead:
    environment = await environment_of(session, account_id, environment_id)
    name = _clean_name(data.name)
    if name != environment.name:
        project = await _project(session, account_id, environment.project_id)
        await _environment_name_free(session, project, name)
        before = environment.name
        environment.name = name
        record_event(
            session,
            account_id=account_id,
            actor=actor,
            action="environment.renamed",
            target_type="environment",
            target_id=environment.id,
            before={"name": before},
            after={"name": name},
        )
        await _commit_unique(session, _environment_exists(name))
    return environment_read(environment)


async def delete_environment(session: AsyncSession, account_id: int, environment_id: int, *, actor: str) -> list[str]:
    """Delete an environment with its variables and functions; never the last of its project.
    Returns the ids of the functions deleted with it."""
    environment = await environment_of(session, account_id, environment_id)
    project = await _project(session, account_id, environment.project_id, lock=True)
    remaining = await session.scalar(
        select(func.count(Environment.id)).where(
            Environment.account_id == account_id, Environment.project_id == project.id
        )
    )
    if int(remaining or 0) <= 1:
        raise LastEnvironment(
            f"environment {environment.name!r} is the last of project {project.name!r}: "
            "a project keeps at least one environment (add another first, or delete the project)"
        )
    function_ids = await _function_ids(session, account_id, ProxyFunction.environment_id == environment.id)
    variables = await session.scalar(
        select(func.count(Variable.id)).where(
            Variable.account_id == account_id, Variable.environment_id == environment.id
        )
    )
    record_event(
        session,
        account_id=account_id,
        actor=actor,
        action="environment.deleted",
        target_type="environment",
        target_id=environment.id,
        before={
            "name": environment.name,
            "project_id": project.id,
            "variables": int(variables or 0),
            "functions": function_ids,
        },
    )
    await session.execute(
        delete(Environment).where(Environment.account_id == account_id, Environment.id == environment.id)
    )
    await session.commit()
    return function_ids
