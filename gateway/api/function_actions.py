"""The proxy-function management actions the ``/api`` controllers and the dashboard both perform.

Like :mod:`gateway.api.actions`: each action is the whole rule once, the role check
(``MANAGE_PROJECTS`` to change, ``REVEAL_SECRETS`` to reveal), the service call in its own
transaction, and what must follow it: this process's function directory forgets every function
the change touched (a deleted project or environment, a variable a function maps, the function
itself), so the next ``/fn`` call here sees it at once and other processes within
``function_cache_ttl_s``. Reading needs only ``Permission.VIEW``, which every role has.

This is not a controller module: controllers and dashboard pages import it, never each other.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from functions.crypto import KeyRing
from functions.models import ProxyFunction
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
    rename_environment,
    update_project,
)
from functions.service import (
    create_function,
    delete_function,
    regenerate_token,
    set_enabled,
    update_function,
)
from functions.validation import FunctionCreate, FunctionRules, FunctionUpdate
from functions.variables import (
    VariableCreate,
    VariableRead,
    VariableRevealed,
    VariableUpdate,
    create_variable,
    delete_variable,
    reveal_variable,
    update_variable,
)
from gateway.api.deps import Caller
from gateway.state import GatewayState
from keys.roles import Permission, require

__all__ = [
    "add_environment",
    "create_account_project",
    "create_environment_variable",
    "create_proxy_function",
    "delete_account_environment",
    "delete_account_project",
    "delete_environment_variable",
    "delete_proxy_function",
    "function_rules",
    "keyring_of",
    "regenerate_function_token",
    "rename_account_environment",
    "reveal_environment_variable",
    "toggle_proxy_function",
    "update_account_project",
    "update_environment_variable",
    "update_proxy_function",
]


@functools.lru_cache(maxsize=8)
def _rules(allow_hosts: tuple[str, ...], timeout_s: float) -> FunctionRules:
    return FunctionRules.from_settings(allow_hosts, timeout_s)


def function_rules(state: GatewayState) -> FunctionRules:
    """The operator's settings the function rules depend on (allowed hosts, the timeout ceiling)."""
    settings = state.settings
    return _rules(tuple(settings.function_allow_hosts), settings.function_timeout_s)


def keyring_of(state: GatewayState) -> KeyRing | None:
    return state.functions.keyring if state.functions is not None else None


def _forget(state: GatewayState, function_ids: Iterable[str]) -> None:
    if state.functions is not None:
        for function_id in function_ids:
            state.functions.forget(function_id)


# -- projects and environments ------------------------------------------------------------------


async def create_account_project(state: GatewayState, caller: Caller, data: ProjectCreate) -> ProjectRead:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        return await create_project(session, caller.account_id, data, actor=caller.actor)


async def update_account_project(
    state: GatewayState, caller: Caller, project_id: int, data: ProjectUpdate
) -> ProjectRead:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        return await update_project(session, caller.account_id, project_id, data, actor=caller.actor)


async def delete_account_project(state: GatewayState, caller: Caller, project_id: int) -> None:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        removed = await delete_project(session, caller.account_id, project_id, actor=caller.actor)
    _forget(state, removed)


async def add_environment(
    state: GatewayState, caller: Caller, project_id: int, data: EnvironmentCreate
) -> EnvironmentCreated:
    """A new environment, or with ``clone_from`` a copy of one (variables and functions)."""
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        return await create_environment(
            session, keyring_of(state), caller.account_id, project_id, data, actor=caller.actor
        )


async def rename_account_environment(
    state: GatewayState, caller: Caller, environment_id: int, data: EnvironmentUpdate
) -> EnvironmentRead:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        return await rename_environment(session, caller.account_id, environment_id, data, actor=caller.actor)


async def delete_account_environment(state: GatewayState, caller: Caller, environment_id: int) -> None:
    """Never the last environment of a project (the service refuses with 409)."""
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        removed = await delete_environment(session, caller.account_id, environment_id, actor=caller.actor)
    _forget(state, removed)


# -- variables -----------------------------------------------------------------------------------


async def create_environment_variable(
    state: GatewayState, caller: Caller, environment_id: int, data: VariableCreate
) -> VariableRead:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        return await create_variable(
            session, keyring_of(state), caller.account_id, environment_id, data, actor=caller.actor
        )


async def update_environment_variable(
    state: GatewayState, caller: Caller, variable_id: int, data: VariableUpdate
) -> VariableRead:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        variable, mapped = await update_variable(
            session, keyring_of(state), caller.account_id, variable_id, data, actor=caller.actor
        )
    _forget(state, mapped)  # they injected the old value until now
    return variable


async def delete_environment_variable(state: GatewayState, caller: Caller, variable_id: int) -> None:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        mapped = await delete_variable(session, caller.account_id, variable_id, actor=caller.actor)
    _forget(state, mapped)


async def reveal_environment_variable(state: GatewayState, caller: Caller, variable_id: int) -> VariableRevealed:
    """The value in clear (owners and admins); the service audits who looked."""
    require(caller.role, Permission.REVEAL_SECRETS)
    async with state.sessionmaker() as session:
        return await reveal_variable(session, keyring_of(state), caller.account_id, variable_id, actor=caller.actor)


# -- proxy functions -----------------------------------------------------------------------------


async def create_proxy_function(
    state: GatewayState, caller: Caller, environment_id: int, data: FunctionCreate
) -> tuple[ProxyFunction, str]:
    """The new function and its token (shown in this answer)."""
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        row, token = await create_function(
            session,
            caller.account_id,
            environment_id,
            data,
            function_rules(state),
            keyring_of(state),
            state.now(),
            actor=caller.actor,
        )
    _forget(state, [row.id])  # an earlier lookup of this id may have cached "absent"
    return row, token


async def update_proxy_function(
    state: GatewayState, caller: Caller, function_id: str, data: FunctionUpdate
) -> ProxyFunction:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        row = await update_function(
            session, caller.account_id, function_id, data, function_rules(state), state.now(), actor=caller.actor
        )
    _forget(state, [row.id])
    return row


async def toggle_proxy_function(
    state: GatewayState, caller: Caller, function_id: str, *, enabled: bool
) -> ProxyFunction:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        row = await set_enabled(session, caller.account_id, function_id, enabled, state.now(), actor=caller.actor)
    _forget(state, [row.id])
    return row


async def regenerate_function_token(state: GatewayState, caller: Caller, function_id: str) -> tuple[ProxyFunction, str]:
    """A new token; the old one is refused from the next call in this process."""
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        row, token = await regenerate_token(
            session, caller.account_id, function_id, keyring_of(state), state.now(), actor=caller.actor
        )
    _forget(state, [row.id])
    return row, token


async def delete_proxy_function(state: GatewayState, caller: Caller, function_id: str) -> None:
    require(caller.role, Permission.MANAGE_PROJECTS)
    async with state.sessionmaker() as session:
        deleted = await delete_function(session, caller.account_id, function_id, actor=caller.actor)
    _forget(state, [deleted])
