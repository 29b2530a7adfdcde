"""``/api/projects``, ``/api/environments``, ``/api/variables``: thin over :mod:`functions.projects`
and :mod:`functions.variables`.

Every role may list (secrets masked); owners and admins create, change and delete
(``MANAGE_PROJECTS``) and reveal a secret (``REVEAL_SECRETS``, audited). Another account's id
answers 404. A change that deletes proxy functions, or changes what they inject, tells this
process's function directory to forget them at once; other processes notice within
``function_cache_ttl_s``.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, JSONBody

from functions.crypto import KeyRing
from functions.projects import (
    EnvironmentCreate,
    EnvironmentCreated,
    EnvironmentRead,
    EnvironmentUpdate,
    ProjectCreate,
    ProjectRead,
    ProjectUpdate,
    create_environment,
    create_project,
    delete_environment,
    delete_project,
    get_project,
    list_environments,
    list_projects,
    rename_environment,
    update_project,
)
from functions.variables import (
    VariableCreate,
    VariableRead,
    VariableRevealed,
    VariableUpdate,
    create_variable,
    delete_variable,
    list_variables,
    reveal_variable,
    update_variable,
)
from gateway.api.deps import Caller, Injected, requires
from gateway.api.openapi import MEMBER_AUTH, errors
from gateway.state import GatewayState
from gateway.validation import PathId
from keys.roles import Permission

VIEW = [requires(Permission.VIEW)]
MANAGE = [requires(Permission.MANAGE_PROJECTS)]
REVEAL = [requires(Permission.REVEAL_SECRETS)]


class ProjectList(msgspec.Struct):
    projects: list[ProjectRead]


class EnvironmentList(msgspec.Struct):
    environments: list[EnvironmentRead]


class VariableList(msgspec.Struct):
    variables: list[VariableRead]


def _keyring(gateway: GatewayState) -> KeyRing | None:
    return gateway.functions.keyring if gateway.functions is not None else None


def _forget(gateway: GatewayState, function_ids: Iterable[str]) -> None:
    if gateway.functions is not None:
        for function_id in function_ids:
            gateway.functions.forget(function_id)


class ProjectsController(Controller):
    path = "/api/projects"
    tags = ["projects"]
    security = MEMBER_AUTH

    @get("/", guards=VIEW, operation_id="list_projects", responses=errors(401, 403))
    async def list_projects(self, gateway: Injected[GatewayState], caller: Injected[Caller]) -> ProjectList:
        async with gateway.sessionmaker() as session:
            return ProjectList(await list_projects(session, caller.account_id))

    @post("/", guards=MANAGE, operation_id="create_project", responses=errors(400, 401, 403, 409, 413))
    async def create_project(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[ProjectCreate]
    ) -> ProjectRead:
        async with gateway.sessionmaker() as session:
            return await create_project(session, caller.account_id, data, actor=caller.actor)

    @get("/{project_id:int}/", guards=VIEW, operation_id="get_project", responses=errors(400, 401, 403, 404))
    async def get_project(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], project_id: FromPath[PathId]
    ) -> ProjectRead:
        async with gateway.sessionmaker() as session:
            return await get_project(session, caller.account_id, project_id)

    @patch(
        "/{project_id:int}/",
        guards=MANAGE,
        operation_id="update_project",
        responses=errors(400, 401, 403, 404, 409, 413),
    )
    async def update_project(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        project_id: FromPath[PathId],
        data: JSONBody[ProjectUpdate],
    ) -> ProjectRead:
        async with gateway.sessionmaker() as session:
            return await update_project(session, caller.account_id, project_id, data, actor=caller.actor)

    @delete(
        "/{project_id:int}/",
        status_code=204,
        guards=MANAGE,
        operation_id="delete_project",
        responses=errors(400, 401, 403, 404),
    )
    async def delete_project(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], project_id: FromPath[PathId]
    ) -> None:
        async with gateway.sessionmaker() as session:
            removed = await delete_project(session, caller.account_id, project_id, actor=caller.actor)
        _forget(gateway, removed)

    @get(
        "/{project_id:int}/environments/",
        guards=VIEW,
        operation_id="list_environments",
        responses=errors(400, 401, 403, 404),
    )
    async def list_environments(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], project_id: FromPath[PathId]
    ) -> EnvironmentList:
        async with gateway.sessionmaker() as session:
            return EnvironmentList(await list_environments(session, caller.account_id, project_id))

    @post(
        "/{project_id:int}/environments/",
        guards=MANAGE,
        operation_id="create_environment",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
    )
    async def create_environment(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        project_id: FromPath[PathId],
        data: JSONBody[EnvironmentCreate],
    ) -> EnvironmentCreated:
        async with gateway.sessionmaker() as session:
            return await create_environment(
                session, _keyring(gateway), caller.account_id, project_id, data, actor=caller.actor
            )


class EnvironmentsController(Controller):
    path = "/api/environments"
    tags = ["projects"]
    security = MEMBER_AUTH

    @patch(
        "/{environment_id:int}/",
        guards=MANAGE,
        operation_id="rename_environment",
        responses=errors(400, 401, 403, 404, 409, 413),
    )
    async def rename_environment(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        environment_id: FromPath[PathId],
        data: JSONBody[EnvironmentUpdate],
    ) -> EnvironmentRead:
        async with gateway.sessionmaker() as session:
            return await rename_environment(session, caller.account_id, environment_id, data, actor=caller.actor)

    @delete(
        "/{environment_id:int}/",
        status_code=204,
        guards=MANAGE,
        operation_id="delete_environment",
        responses=errors(400, 401, 403, 404, 409),
    )
    async def delete_environment(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], environment_id: FromPath[PathId]
    ) -> None:
        async with gateway.sessionmaker() as session:
            removed = await delete_environment(session, caller.account_id, environment_id, actor=caller.actor)
        _forget(gateway, removed)

    @get(
        "/{environment_id:int}/variables/",
        guards=VIEW,
        operation_id="list_variables",
        responses=errors(400, 401, 403, 404, 503),
    )
    async def list_variables(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], environment_id: FromPath[PathId]
    ) -> VariableList:
        async with gateway.sessionmaker() as session:
            return VariableList(await list_variables(session, _keyring(gateway), caller.account_id, environment_id))

    @post(
        "/{environment_id:int}/variables/",
        guards=MANAGE,
        operation_id="create_variable",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
    )
    async def create_variable(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        environment_id: FromPath[PathId],
        data: JSONBody[VariableCreate],
    ) -> VariableRead:
        async with gateway.sessionmaker() as session:
            return await create_variable(
                session, _keyring(gateway), caller.account_id, environment_id, data, actor=caller.actor
            )


class VariablesController(Controller):
    path = "/api/variables"
    tags = ["projects"]
    security = MEMBER_AUTH

    @patch(
        "/{variable_id:int}/",
        guards=MANAGE,
        operation_id="update_variable",
        responses=errors(400, 401, 403, 404, 413, 503),
    )
    async def update_variable(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        variable_id: FromPath[PathId],
        data: JSONBody[VariableUpdate],
    ) -> VariableRead:
        async with gateway.sessionmaker() as session:
            variable, mapped = await update_variable(
                session, _keyring(gateway), caller.account_id, variable_id, data, actor=caller.actor
            )
        _forget(gateway, mapped)
        return variable

    @delete(
        "/{variable_id:int}/",
        status_code=204,
        guards=MANAGE,
        operation_id="delete_variable",
        responses=errors(400, 401, 403, 404),
    )
    async def delete_variable(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], variable_id: FromPath[PathId]
    ) -> None:
        async with gateway.sessionmaker() as session:
            mapped = await delete_variable(session, caller.account_id, variable_id, actor=caller.actor)
        _forget(gateway, mapped)

    @post(
        "/{variable_id:int}/reveal/",
        status_code=200,
        guards=REVEAL,
        cache_control=CacheControlHeader(no_store=True),
        operation_id="reveal_variable",
        responses=errors(400, 401, 403, 404, 503),
    )
    async def reveal_variable(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], variable_id: FromPath[PathId]
    ) -> VariableRevealed:
        async with gateway.sessionmaker() as session:
            return await reveal_variable(session, _keyring(gateway), caller.account_id, variable_id, actor=caller.actor)
