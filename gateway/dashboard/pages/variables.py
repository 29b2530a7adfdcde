"""An environment's variables: listed masked, added, edited and deleted by owners and admins, and
a secret revealed only to them (the service audits who looked). Writes go through
:mod:`gateway.api.function_actions`, the functions ``/api`` calls."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from functions.errors import VariableNotFound
from functions.models import Variable
from functions.projects import environment_of, get_project
from functions.variables import VariableCreate, VariableUpdate, list_variables
from gateway.api.deps import Injected
from gateway.api.function_actions import (
    create_environment_variable,
    delete_environment_variable,
    keyring_of,
    reveal_environment_variable,
    update_environment_variable,
)
from gateway.dashboard.pages._common import FORM_ERRORS, dialog, done, text, user_error
from gateway.dashboard.render import field_errors, is_htmx, page
from gateway.dashboard.session import Viewer, read_form
from gateway.state import GatewayState
from gateway.validation import PathId
from keys.roles import Permission, require

__all__ = ["VariablePages", "VariablesPage"]


async def _variables_page(
    request: Request[Any, Any, Any],
    gateway: GatewayState,
    viewer: Viewer,
    environment_id: int,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    async with gateway.sessionmaker() as session:
        environment = await environment_of(session, viewer.caller.account_id, environment_id)
        project = await get_project(session, viewer.caller.account_id, environment.project_id)
        variables = await list_variables(session, keyring_of(gateway), viewer.caller.account_id, environment_id)
    template = "fragments/variables_table.html" if is_htmx(request) and values is None else "variables.html"
    return page(
        request,
        viewer,
        template,
        title=f"Variables of {environment.name}",
        active="projects",
        project=project,
        environment=environment,
        variables=variables,
        values=values or {"is_secret": True},
        errors=errors or {},
        status_code=status_code,
    )


class VariablesPage(Controller):
    path = "/environments/{environment_id:int}/variables"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/")
    async def variables(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        environment_id: FromPath[PathId],
    ) -> Template:
        return await _variables_page(request, gateway, viewer, environment_id)

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
        values: dict[str, Any] = {
            "key": text(form, "key"),
            "value": form.get("value") if isinstance(form.get("value"), str) else "",
            "is_secret": form.get("is_secret") == "on",
            "description": text(form, "description"),
        }
        try:
            data = msgspec.convert(values, VariableCreate)
            await create_environment_variable(gateway, viewer.caller, environment_id, data)
        except FORM_ERRORS as error:
            if not user_error(error):
                raise
            shown = {**values, "value": ""}  # a secret typed is not echoed back into the page
            return await _variables_page(
                request, gateway, viewer, environment_id, values=shown, errors=field_errors(error), status_code=422
            )
        return done(
            request, viewer, f"Added {values['key']}.", f"/environments/{environment_id}/variables", "variables-changed"
        )


class VariablePages(Controller):
    path = "/variables"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/{variable_id:int}/edit")
    async def edit_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        variable_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        variable = await _variable(gateway, viewer, variable_id)
        return dialog(
            request,
            viewer,
            "fragments/variable_form.html",
            title=f"Edit {variable.key}",
            variable=variable,
            values={"description": variable.description},
            errors={},
        )

    @post("/{variable_id:int}/edit", status_code=200)
    async def edit(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        variable_id: FromPath[PathId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)  # before reading the fields: no form for a refused role
        variable = await _variable(gateway, viewer, variable_id)
        value = form.get("value")
        fields: dict[str, Any] = {"description": text(form, "description")}
        if isinstance(value, str) and value:  # blank keeps the current value
            fields["value"] = value
        try:
            await update_environment_variable(
                gateway, viewer.caller, variable_id, msgspec.convert(fields, VariableUpdate)
            )
        except FORM_ERRORS as error:
            if not user_error(error):
                raise
            return dialog(
                request,
                viewer,
                "fragments/variable_form.html",
                title=f"Edit {variable.key}",
                variable=variable,
                values={"description": fields["description"]},
                errors=field_errors(error),
                status_code=422,
            )
        location = f"/environments/{variable.environment_id}/variables"
        return done(request, viewer, f"Saved {variable.key}.", location, "variables-changed")

    @get("/{variable_id:int}/delete")
    async def delete_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        variable_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        variable = await _variable(gateway, viewer, variable_id)
        return dialog(request, viewer, "fragments/variable_delete.html", title="Delete Variable", variable=variable)

    @post("/{variable_id:int}/delete", status_code=200)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        variable_id: FromPath[PathId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        variable = await _variable(gateway, viewer, variable_id)
        await delete_environment_variable(gateway, viewer.caller, variable_id)
        location = f"/environments/{variable.environment_id}/variables"
        return done(request, viewer, f"Deleted {variable.key}.", location, "variables-changed")

    @post("/{variable_id:int}/reveal", status_code=200)
    async def reveal(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        variable_id: FromPath[PathId],
    ) -> Template:
        await read_form(request, viewer)
        revealed = await reveal_environment_variable(gateway, viewer.caller, variable_id)
        variable = await _variable(gateway, viewer, variable_id)
        return dialog(
            request,
            viewer,
            "fragments/variable_reveal.html",
            title=f"{revealed.key}",
            variable=variable,
            revealed=revealed,
        )


async def _variable(gateway: GatewayState, viewer: Viewer, variable_id: int) -> Variable:
    """The account's variable row (the templates show its key and description, never its
    value), or 404 for a missing one or another account's."""
    async with gateway.sessionmaker() as session:
        variable = await session.get(Variable, variable_id)
        if variable is None or variable.account_id != viewer.caller.account_id:
            raise VariableNotFound(f"variable {variable_id} not found")
        return variable
