"""Proxy functions: the template picker and the create / edit form, and the row actions of the
list (test, enable / disable, copy token, download code, regenerate token, delete). Writes go
through :mod:`gateway.api.function_actions`, the functions ``/api/functions`` calls, which check
the role whatever the page showed; testing (:mod:`gateway.api.function_testing`, what
``POST /api/functions/{id}/test/`` calls), copying the token and downloading code are for every
role."""

from __future__ import annotations

import http
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, Parameter
from litestar.response import Template

from billing.bounds import NO_CONTROL
from functions.codegen import PLATFORMS, Platform, function_code
from functions.models import ProxyFunction
from functions.projects import environment_of, get_project
from functions.service import copy_token, get_function
from functions.templates import get_template, list_templates
from functions.validation import FunctionCreate, FunctionUpdate
from functions.variables import list_variables
from gateway.api.deps import Injected
from gateway.api.function_actions import (
    create_proxy_function,
    delete_proxy_function,
    function_rules,
    keyring_of,
    regenerate_function_token,
    toggle_proxy_function,
    update_proxy_function,
)
from gateway.api.function_testing import FunctionTestRequest, FunctionTestResult, run_function_test
from gateway.dashboard.pages._common import FORM_ERRORS, dialog, done, go, origin, user_error
from gateway.dashboard.pages.function_form import (
    INJECT_AS,
    METHODS,
    form_fields,
    submitted_values,
    values_of_function,
    values_of_template,
)
from gateway.dashboard.render import field_errors, is_htmx, page
from gateway.dashboard.session import Viewer, read_form
from gateway.request_id import request_id_of
from gateway.state import GatewayState
from gateway.validation import PathId, QueryText
from keys.roles import Permission, require

__all__ = ["FunctionPages", "NewFunctionPages"]

FunctionId = Annotated[str, Parameter(max_length=64, pattern=NO_CONTROL)]
PlatformName = Annotated[str | None, Parameter(max_length=32, pattern=NO_CONTROL)]
CUSTOM = "custom"  # ?template=custom: the blank form ("Skip / Custom")
TOKEN_HEADER = "x-proxy-token"
INVALID_JSON = "Invalid JSON in request body"
EXAMPLE_BODY = '{\n  "key": "value"\n}'


def _list_url(row: ProxyFunction) -> str:
    return f"/projects/{row.project_id}?env={row.environment_id}"


async def _form(
    request: Request[Any, Any, Any],
    gateway: GatewayState,
    viewer: Viewer,
    *,
    environment_id: int,
    row: ProxyFunction | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
) -> Template:
    async with gateway.sessionmaker() as session:
        environment = await environment_of(session, viewer.caller.account_id, environment_id)
        project = await get_project(session, viewer.caller.account_id, environment.project_id)
        variables = await list_variables(session, keyring_of(gateway), viewer.caller.account_id, environment_id)
    secrets = sorted((v for v in variables if v.is_secret), key=lambda v: v.key)
    base = origin(request)
    return page(
        request,
        viewer,
        "function_form.html",
        title=f"Edit {row.name}" if row else "Create Proxy Function",
        active="projects",
        project=project,
        environment=environment,
        row=row,
        values=values,
        errors=errors,
        secret_variables=secrets,
        methods=METHODS,
        inject_kinds=INJECT_AS,
        from_template=get_template(values["template"]) if values.get("template") else None,
        proxy_url=f"{base}/fn/{row.id}" if row else "",
        token_header=TOKEN_HEADER,
        status_code=status_code,
    )


class NewFunctionPages(Controller):
    path = "/environments/{environment_id:int}/functions"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/new")
    async def new(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        environment_id: FromPath[PathId],
        template: FromQuery[QueryText] = None,
        q: FromQuery[QueryText] = None,
        category: FromQuery[QueryText] = None,
    ) -> Template:
        """No ``template``: the picker (search, category chips, cards); else the form from it."""
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        rules = function_rules(gateway)
        chosen = get_template(template) if template and template != CUSTOM else None
        if template == CUSTOM or chosen is not None:
            values = values_of_template(chosen, rules.max_timeout_ms)
            return await _form(
                request, gateway, viewer, environment_id=environment_id, row=None, values=values, errors={}
            )
        async with gateway.sessionmaker() as session:
            environment = await environment_of(session, viewer.caller.account_id, environment_id)
            project = await get_project(session, viewer.caller.account_id, environment.project_id)
        everything = list_templates()
        needle = (q or "").strip().lower()
        wanted = category or ""
        shown = [
            t
            for t in everything
            if (not needle or needle in f"{t.name} {t.description} {t.category}".lower())
            and (not wanted or t.category == wanted)
        ]
        return page(
            request,
            viewer,
            "fragments/template_cards.html" if is_htmx(request) else "function_templates.html",
            title="Create Proxy Function",
            active="projects",
            project=project,
            environment=environment,
            templates=shown,
            categories=sorted({t.category for t in everything}),
            q=q or "",
            category=wanted,
        )

    @post("/", status_code=201)
    async def create(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        environment_id: FromPath[PathId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)  # before reading the fields: no form for a refused role
        values = submitted_values(form)
        fields, errors = form_fields(values)
        if not errors:
            if values["template"] and get_template(values["template"]) is not None:
                fields["template"] = values["template"]
            try:
                data = msgspec.convert(fields, FunctionCreate)
                row, _token = await create_proxy_function(gateway, viewer.caller, environment_id, data)
            except FORM_ERRORS as error:
                if not user_error(error):
                    raise
                errors = field_errors(error)
            else:
                return go(request, viewer, _list_url(row))
        return await _form(
            request,
            gateway,
            viewer,
            environment_id=environment_id,
            row=None,
            values=values,
            errors=errors,
            status_code=422,
        )


class FunctionPages(Controller):
    path = "/functions"
    tags = ["dashboard"]
    include_in_schema = False

    async def _row(self, gateway: GatewayState, viewer: Viewer, function_id: str) -> ProxyFunction:
        async with gateway.sessionmaker() as session:
            return await get_function(session, viewer.caller.account_id, function_id)

    @get("/{function_id:str}/edit")
    async def edit_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        row = await self._row(gateway, viewer, function_id)
        values = values_of_function(row)
        return await _form(
            request, gateway, viewer, environment_id=row.environment_id, row=row, values=values, errors={}
        )

    @post("/{function_id:str}/edit", status_code=200)
    async def edit(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)  # before reading the fields: no form for a refused role
        row = await self._row(gateway, viewer, function_id)
        values = submitted_values(form)
        fields, errors = form_fields(values)
        if not errors:
            try:
                updated = await update_proxy_function(
                    gateway, viewer.caller, row.id, msgspec.convert(fields, FunctionUpdate)
                )
            except FORM_ERRORS as error:
                if not user_error(error):
                    raise
                errors = field_errors(error)
            else:
                return go(request, viewer, _list_url(updated))
        return await _form(
            request,
            gateway,
            viewer,
            environment_id=row.environment_id,
            row=row,
            values=values,
            errors=errors,
            status_code=422,
        )

    @post("/{function_id:str}/enable", status_code=200)
    async def enable(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        row = await toggle_proxy_function(gateway, viewer.caller, function_id, enabled=True)
        return done(request, viewer, f"{row.name} is active.", _list_url(row), "functions-changed")

    @post("/{function_id:str}/disable", status_code=200)
    async def disable(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        row = await toggle_proxy_function(gateway, viewer.caller, function_id, enabled=False)
        return done(
            request,
            viewer,
            f"{row.name} is disabled: it rejects all incoming requests.",
            _list_url(row),
            "functions-changed",
        )

    @get("/{function_id:str}/token")
    async def token(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Template:
        """Copy Token: every role of the account may (envmanager.md §5)."""
        row = await self._row(gateway, viewer, function_id)
        return dialog(
            request,
            viewer,
            "fragments/function_token.html",
            title=f"Token of {row.name}",
            row=row,
            token=copy_token(row, keyring_of(gateway)),
            regenerated=False,
            header=TOKEN_HEADER,
            list_url=_list_url(row),
        )

    @get("/{function_id:str}/regenerate")
    async def regenerate_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        row = await self._row(gateway, viewer, function_id)
        return dialog(
            request,
            viewer,
            "fragments/function_regenerate.html",
            title="Regenerate Token",
            row=row,
            list_url=_list_url(row),
        )

    @post("/{function_id:str}/regenerate", status_code=200)
    async def regenerate(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Template:
        await read_form(request, viewer)
        row, token = await regenerate_function_token(gateway, viewer.caller, function_id)
        return dialog(
            request,
            viewer,
            "fragments/function_token.html",
            title="Secret token regenerated",
            row=row,
            token=token,
            regenerated=True,
            header=TOKEN_HEADER,
            list_url=_list_url(row),
        )

    @get("/{function_id:str}/delete")
    async def delete_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        row = await self._row(gateway, viewer, function_id)
        return dialog(
            request,
            viewer,
            "fragments/function_delete.html",
            title="Delete Proxy Function",
            row=row,
            list_url=_list_url(row),
        )

    @post("/{function_id:str}/delete", status_code=200)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        row = await self._row(gateway, viewer, function_id)
        await delete_proxy_function(gateway, viewer.caller, row.id)
        return done(request, viewer, f"Deleted {row.name}; its endpoint is gone.", _list_url(row), "functions-changed")

    @get("/{function_id:str}/code")
    async def code(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
        platform: FromQuery[PlatformName] = None,
    ) -> Template:
        """Download Code: the four platforms, the chosen one's file previewed (every role)."""
        row = await self._row(gateway, viewer, function_id)
        chosen = platform if platform in {p.value for p in Platform} else Platform.VERCEL.value
        async with gateway.sessionmaker() as session:
            code = await function_code(
                session,
                viewer.caller.account_id,
                row.id,
                chosen,
                keyring_of(gateway),
                max_body_bytes=gateway.settings.function_max_body_bytes,
            )
        return dialog(
            request,
            viewer,
            "fragments/function_code.html",
            title=f"Download Code for {row.name}",
            row=row,
            code=code,
            platforms=[(p.value, spec.label) for p, spec in PLATFORMS.items()],
            chosen=chosen,
            list_url=_list_url(row),
        )

    def _test_drawer(
        self,
        request: Request[Any, Any, Any],
        viewer: Viewer,
        row: ProxyFunction,
        *,
        body: str,
        result: FunctionTestResult | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Template:
        """The Test drawer; for htmx after a send, only its result (swapped into ``#test-result``)."""
        sent = request.method == "POST"
        return dialog(
            request,
            viewer,
            "fragments/function_test_result.html" if sent and is_htmx(request) else "fragments/function_test.html",
            title="Test Proxy",
            status_code=status_code,
            row=row,
            proxy_url=f"{origin(request)}/fn/{row.id}",
            header=TOKEN_HEADER,
            body=body,
            result=result,
            status_text=_status_text(result.status) if result else "",
            error=error,
            list_url=_list_url(row),
        )

    @get("/{function_id:str}/test")
    async def test_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Template:
        """Test: every role of the account may (envmanager.md §5); the token stays on the server."""
        row = await self._row(gateway, viewer, function_id)
        return self._test_drawer(request, viewer, row, body=EXAMPLE_BODY)

    @post("/{function_id:str}/test", status_code=200)
    async def test(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        function_id: FromPath[FunctionId],
    ) -> Template:
        """Send Test Request: the server calls the function as ``POST /api/functions/{id}/test/``
        does (its own token, no origin check); a body that is not JSON is sent nowhere."""
        form = await read_form(request, viewer)
        row = await self._row(gateway, viewer, function_id)  # another account's function: 404
        text = form.get("body")
        body = text if isinstance(text, str) and row.method != "GET" else ""
        if body.strip():
            try:
                msgspec.json.decode(body)
            except msgspec.DecodeError:
                return self._test_drawer(request, viewer, row, body=body, error=INVALID_JSON, status_code=422)
        try:  # decoded, never built: the API's bounds apply (a body of at most 1 MiB)
            data = msgspec.convert({"body": body if body.strip() else None}, FunctionTestRequest)
        except msgspec.ValidationError as problem:
            return self._test_drawer(request, viewer, row, body="", error=str(problem), status_code=422)
        result = await run_function_test(gateway, viewer.caller, row.id, data, request_id_of(request.scope))
        return self._test_drawer(request, viewer, row, body=body, result=result)


def _status_text(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""
