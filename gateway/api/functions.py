"""``/api`` for proxy functions: templates, list/create per environment, read, change, toggle,
regenerate and copy the token, delete; thin over :mod:`functions.service`.

Every role of the account may read a function and copy its URL and token (envmanager.md §5);
owners and admins (and unrestricted ``prx-`` keys) create, edit, toggle, regenerate and delete
(``Permission.MANAGE_PROJECTS``). Another account's environment or function is a 404. The token
appears only in the answers to a create, a regeneration and ``GET …/token/``. After a change
this process forgets its cached copy at once, so a regenerated token, a disabled or deleted
function takes effect on the next ``/fn`` call here, and within ``function_cache_ttl_s``
everywhere else.
"""

from __future__ import annotations

import functools
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from billing.bounds import NO_CONTROL
from functions.crypto import KeyRing
from functions.function_views import FunctionCreated, FunctionRead, function_read
from functions.models import ProxyFunction
from functions.service import (
    copy_token,
    create_function,
    delete_function,
    get_function,
    list_functions,
    regenerate_token,
    set_enabled,
    update_function,
)
from functions.templates import FunctionTemplate, list_templates
from functions.validation import FunctionCreate, FunctionRules, FunctionUpdate
from gateway.api.deps import Caller, Injected, requires
from gateway.api.openapi import MEMBER_AUTH, errors
from gateway.state import GatewayState
from gateway.validation import Limit, PathId, QueryText
from keys.roles import Permission

# A function id in the path: a UUID, but any short line is accepted here and an unknown one is
# a 404 (the service canonicalises it), so the route never answers 400 for a mistyped id.
FunctionId = Annotated[str, Parameter(max_length=64, pattern=NO_CONTROL)]
PROXY_TOKEN_HEADER = "x-proxy-token"
MAX_PAGE = 200


class TemplateList(msgspec.Struct):
    templates: list[FunctionTemplate]


class FunctionList(msgspec.Struct):
    functions: list[FunctionRead]
    next_cursor: str | None  # pass as ?cursor= for the next page; null at the end


class FunctionToken(msgspec.Struct):
    """Copy Token (and the answer to a regeneration): what a caller sends to ``url_path``."""

    id: str
    url_path: str
    header: str
    token: str


@functools.lru_cache(maxsize=8)
def _rules(allow_hosts: tuple[str, ...], timeout_s: float) -> FunctionRules:
    return FunctionRules.from_settings(allow_hosts, timeout_s)


def rules_of(state: GatewayState) -> FunctionRules:
    settings = state.settings
    return _rules(tuple(settings.function_allow_hosts), settings.function_timeout_s)


def keyring_of(state: GatewayState) -> KeyRing | None:
    return state.functions.keyring if state.functions is not None else None


def forget(state: GatewayState, function_id: str) -> None:
    if state.functions is not None:
        state.functions.forget(function_id)


def token_answer(row: ProxyFunction, token: str) -> FunctionToken:
    return FunctionToken(id=row.id, url_path=f"/fn/{row.id}", header=PROXY_TOKEN_HEADER, token=token)


class FunctionsController(Controller):
    path = "/api"
    tags = ["functions"]
    security = MEMBER_AUTH

    @get(
        "/function-templates/",
        guards=[requires(Permission.VIEW)],
        operation_id="list_function_templates",
        responses=errors(401, 403),
    )
    async def list_function_templates(self) -> TemplateList:
        return TemplateList(list(list_templates()))

    @get(
        "/environments/{environment_id:int}/functions/",
        guards=[requires(Permission.VIEW)],
        operation_id="list_functions",
        responses=errors(400, 401, 403, 404),
    )
    async def list_functions(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        environment_id: FromPath[PathId],
        q: FromQuery[QueryText] = None,
        limit: FromQuery[Limit] = 50,
        cursor: FromQuery[QueryText] = None,
    ) -> FunctionList:
        async with gateway.sessionmaker() as session:
            page = await list_functions(
                session, caller.account_id, environment_id, q=q, limit=max(1, min(limit, MAX_PAGE)), cursor=cursor
            )
        return FunctionList([function_read(row) for row in page.functions], page.next_cursor)

    @post(
        "/environments/{environment_id:int}/functions/",
        guards=[requires(Permission.MANAGE_PROJECTS)],
        operation_id="create_function",
        responses=errors(400, 401, 403, 404, 409, 413, 503),
    )
    async def create_function(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        environment_id: FromPath[PathId],
        data: JSONBody[FunctionCreate],
    ) -> FunctionCreated:
        async with gateway.sessionmaker() as session:
            row, token = await create_function(
                session,
                caller.account_id,
                environment_id,
                data,
                rules_of(gateway),
                keyring_of(gateway),
                gateway.now(),
                actor=caller.actor,
            )
        forget(gateway, row.id)  # an earlier lookup of this id may have cached "absent"
        return FunctionCreated(**msgspec.structs.asdict(function_read(row)), token=token)

    @get(
        "/functions/{function_id:str}/",
        guards=[requires(Permission.VIEW)],
        operation_id="get_function",
        responses=errors(400, 401, 403, 404),
    )
    async def get_function(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], function_id: FromPath[FunctionId]
    ) -> FunctionRead:
        async with gateway.sessionmaker() as session:
            row = await get_function(session, caller.account_id, function_id)
        return function_read(row)

    @patch(
        "/functions/{function_id:str}/",
        guards=[requires(Permission.MANAGE_PROJECTS)],
        operation_id="update_function",
        responses=errors(400, 401, 403, 404, 409, 413),
    )
    async def update_function(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        function_id: FromPath[FunctionId],
        data: JSONBody[FunctionUpdate],
    ) -> FunctionRead:
        async with gateway.sessionmaker() as session:
            row = await update_function(
                session, caller.account_id, function_id, data, rules_of(gateway), gateway.now(), actor=caller.actor
            )
        forget(gateway, row.id)
        return function_read(row)

    @delete(
        "/functions/{function_id:str}/",
        status_code=204,
        guards=[requires(Permission.MANAGE_PROJECTS)],
        operation_id="delete_function",
        responses=errors(400, 401, 403, 404),
    )
    async def delete_function(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], function_id: FromPath[FunctionId]
    ) -> None:
        async with gateway.sessionmaker() as session:
            deleted = await delete_function(session, caller.account_id, function_id, actor=caller.actor)
        forget(gateway, deleted)

    @post(
        "/functions/{function_id:str}/enable/",
        status_code=200,
        guards=[requires(Permission.MANAGE_PROJECTS)],
        operation_id="enable_function",
        responses=errors(400, 401, 403, 404),
    )
    async def enable_function(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], function_id: FromPath[FunctionId]
    ) -> FunctionRead:
        return await self._toggle(gateway, caller, function_id, enabled=True)

    @post(
        "/functions/{function_id:str}/disable/",
        status_code=200,
        guards=[requires(Permission.MANAGE_PROJECTS)],
        operation_id="disable_function",
        responses=errors(400, 401, 403, 404),
    )
    async def disable_function(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], function_id: FromPath[FunctionId]
    ) -> FunctionRead:
        return await self._toggle(gateway, caller, function_id, enabled=False)

    async def _toggle(self, gateway: GatewayState, caller: Caller, function_id: str, *, enabled: bool) -> FunctionRead:
        async with gateway.sessionmaker() as session:
            row = await set_enabled(session, caller.account_id, function_id, enabled, gateway.now(), actor=caller.actor)
        forget(gateway, row.id)
        return function_read(row)

    @post(
        "/functions/{function_id:str}/regenerate-token/",
        status_code=200,
        guards=[requires(Permission.MANAGE_PROJECTS)],
        operation_id="regenerate_function_token",
        responses=errors(400, 401, 403, 404, 503),
    )
    async def regenerate_function_token(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], function_id: FromPath[FunctionId]
    ) -> FunctionToken:
        async with gateway.sessionmaker() as session:
            row, token = await regenerate_token(
                session, caller.account_id, function_id, keyring_of(gateway), gateway.now(), actor=caller.actor
            )
        forget(gateway, row.id)  # the old token stops working in this process now
        return token_answer(row, token)

    @get(
        "/functions/{function_id:str}/token/",
        guards=[requires(Permission.VIEW)],
        operation_id="get_function_token",
        responses=errors(400, 401, 403, 404, 503),
    )
    async def get_function_token(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], function_id: FromPath[FunctionId]
    ) -> FunctionToken:
        async with gateway.sessionmaker() as session:
            row = await get_function(session, caller.account_id, function_id)
        return token_answer(row, copy_token(row, keyring_of(gateway)))
