"""Projects and their environments: the projects list (create, rename, delete), a project's page
with one tab per environment (sorted by name) listing its proxy functions, and the environment
dialogs (add, clone, rename, delete, never the last). Every write goes through
:mod:`gateway.api.function_actions`, the functions ``/api/projects`` calls, which check the role
whatever the page showed."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, Parameter
from litestar.response import Template

from billing.bounds import NO_CONTROL
from functions.projects import (
    EnvironmentCreate,
    EnvironmentRead,
    EnvironmentUpdate,
    ProjectCreate,
    ProjectRead,
    ProjectUpdate,
    environment_of,
    get_project,
    list_projects,
)
from functions.service import list_functions
from gateway.api.deps import Injected
from gateway.api.function_actions import (
    add_environment,
    create_account_project,
    delete_account_environment,
    delete_account_project,
    rename_account_environment,
    update_account_project,
)
from gateway.dashboard.pages._common import FORM_ERRORS, dialog, go, origin, text, user_error
from gateway.dashboard.render import field_errors, is_htmx, page
from gateway.dashboard.session import Viewer, read_form
from gateway.state import GatewayState
from gateway.validation import PathId, QueryId, QueryText
from keys.roles import Permission, require

__all__ = ["EnvironmentPages", "ProjectsPages"]

PAGE_SIZE = 25
Cursor = Annotated[str | None, Parameter(max_length=200, pattern=NO_CONTROL)]


def sorted_environments(project: ProjectRead) -> list[EnvironmentRead]:
    return sorted(project.environments, key=lambda environment: (environment.name.lower(), environment.id))


class ProjectsPages(Controller):
    path = "/projects"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:projects")
    async def projects(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Template:
        async with gateway.sessionmaker() as session:
            projects = await list_projects(session, viewer.caller.account_id)
        return page(
            request,
            viewer,
            "projects.html",
            title="Projects",
            active="projects",
            projects=projects,
            values={},
            errors={},
        )

    @post("/", status_code=201)
    async def create(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)  # before reading the fields: no form for a refused role
        try:
            data = msgspec.convert(
                {"name": text(form, "name"), "description": text(form, "description")}, ProjectCreate
            )
            project = await create_account_project(gateway, viewer.caller, data)
        except FORM_ERRORS as error:
            if not user_error(error):
                raise
            async with gateway.sessionmaker() as session:
                projects = await list_projects(session, viewer.caller.account_id)
            values = {"name": text(form, "name"), "description": text(form, "description")}
            return page(
                request,
                viewer,
                "projects.html",
                title="Projects",
                active="projects",
                projects=projects,
                values=values,
                errors=field_errors(error),
                status_code=422,
            )
        return go(request, viewer, f"/projects/{project.id}")

    @get("/{project_id:int}")
    async def project(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
        env: FromQuery[QueryId] = None,
        q: FromQuery[QueryText] = None,
        cursor: FromQuery[Cursor] = None,
    ) -> Template:
        """The Proxies tab: one tab per environment, the selected one's functions, newest first."""
        async with gateway.sessionmaker() as session:
            project = await get_project(session, viewer.caller.account_id, project_id)
            environments = sorted_environments(project)
            current = next((e for e in environments if e.id == env), environments[0] if environments else None)
            listed = None
            if current is not None:
                listed = await list_functions(
                    session,
                    viewer.caller.account_id,
                    current.id,
                    q=(q or "").strip() or None,
                    limit=PAGE_SIZE,
                    cursor=cursor,
                )
        template = "fragments/functions_table.html" if is_htmx(request) and current else "project.html"
        return page(
            request,
            viewer,
            template,
            title=project.name,
            active="projects",
            project=project,
            environments=environments,
            current=current,
            functions=listed.functions if listed else [],
            next_cursor=listed.next_cursor if listed else None,
            cursor=cursor or "",
            q=(q or "").strip(),
            origin=origin(request),
            section="proxies",
            analytics_available=True,
        )

    @get("/{project_id:int}/edit")
    async def edit_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        async with gateway.sessionmaker() as session:
            project = await get_project(session, viewer.caller.account_id, project_id)
        values = {"name": project.name, "description": project.description}
        return dialog(
            request,
            viewer,
            "fragments/project_form.html",
            title="Rename project",
            project=project,
            values=values,
            errors={},
        )

    @post("/{project_id:int}/edit", status_code=200)
    async def edit(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)  # before reading the fields: no form for a refused role
        values = {"name": text(form, "name"), "description": text(form, "description")}
        try:
            data = msgspec.convert(values, ProjectUpdate)
            await update_account_project(gateway, viewer.caller, project_id, data)
        except FORM_ERRORS as error:
            if not user_error(error):
                raise
            async with gateway.sessionmaker() as session:
                project = await get_project(session, viewer.caller.account_id, project_id)
            return dialog(
                request,
                viewer,
                "fragments/project_form.html",
                title="Rename project",
                project=project,
                values=values,
                errors=field_errors(error),
                status_code=422,
            )
        return go(request, viewer, request.headers.get("hx-current-url") or "/projects")

    @get("/{project_id:int}/delete")
    async def delete_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        async with gateway.sessionmaker() as session:
            project = await get_project(session, viewer.caller.account_id, project_id)
        return dialog(request, viewer, "fragments/project_delete.html", title="Delete Project", project=project)

    @post("/{project_id:int}/delete", status_code=200)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        await delete_account_project(gateway, viewer.caller, project_id)
        return go(request, viewer, "/projects")

    @get("/{project_id:int}/environments/new")
    async def new_environment(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
        clone_from: FromQuery[QueryId] = None,
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        async with gateway.sessionmaker() as session:
            project = await get_project(session, viewer.caller.account_id, project_id)
        source = next((e for e in project.environments if e.id == clone_from), None)
        values = {"name": f"{source.name} copy" if source else "", "clone_from": source.id if source else None}
        return self._environment_form(request, viewer, project, source, values, {})

    def _environment_form(
        self,
        request: Request[Any, Any, Any],
        viewer: Viewer,
        project: ProjectRead,
        source: EnvironmentRead | None,
        values: dict[str, Any],
        errors: dict[str, str],
        status_code: int = 200,
    ) -> Template:
        return dialog(
            request,
            viewer,
            "fragments/environment_form.html",
            title=f"Clone {source.name}" if source else "Add environment",
            project=project,
            source=source,
            environments=sorted_environments(project),
            values=values,
            errors=errors,
            status_code=status_code,
        )

    @post("/{project_id:int}/environments", status_code=201)
    async def add_environment(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)  # before reading the fields: no form for a refused role
        clone_text = text(form, "clone_from")
        values: dict[str, Any] = {
            "name": text(form, "name"),
            "clone_from": int(clone_text) if clone_text.isdigit() and len(clone_text) < 19 else None,
        }
        try:
            created = await add_environment(
                gateway, viewer.caller, project_id, msgspec.convert(values, EnvironmentCreate)
            )
        except FORM_ERRORS as error:
            if not user_error(error) and getattr(error, "param", None) != "clone_from":
                raise
            async with gateway.sessionmaker() as session:
                project = await get_project(session, viewer.caller.account_id, project_id)
            source = next((e for e in project.environments if e.id == values["clone_from"]), None)
            return self._environment_form(request, viewer, project, source, values, field_errors(error), 422)
        return go(request, viewer, f"/projects/{project_id}?env={created.id}")


class EnvironmentPages(Controller):
    """Rename and delete an environment (the variables page is in :mod:`.variables`)."""

    path = "/environments"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/{environment_id:int}/rename")
    async def rename_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        environment_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        async with gateway.sessionmaker() as session:
            environment = await environment_of(session, viewer.caller.account_id, environment_id)
        return dialog(
            request,
            viewer,
            "fragments/environment_rename.html",
            title=f"Rename {environment.name}",
            environment=environment,
            values={"name": environment.name},
            errors={},
        )

    @post("/{environment_id:int}/rename", status_code=200)
    async def rename(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        environment_id: FromPath[PathId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)  # before reading the fields: no form for a refused role
        values = {"name": text(form, "name")}
        try:
            renamed = await rename_account_environment(
                gateway, viewer.caller, environment_id, msgspec.convert(values, EnvironmentUpdate)
            )
        except FORM_ERRORS as error:
            if not user_error(error):
                raise
            async with gateway.sessionmaker() as session:
                environment = await environment_of(session, viewer.caller.account_id, environment_id)
            return dialog(
                request,
                viewer,
                "fragments/environment_rename.html",
                title=f"Rename {environment.name}",
                environment=environment,
                values=values,
                errors=field_errors(error),
                status_code=422,
            )
        return go(request, viewer, f"/projects/{renamed.project_id}?env={renamed.id}")

    @get("/{environment_id:int}/delete")
    async def delete_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        environment_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_PROJECTS)
        async with gateway.sessionmaker() as session:
            environment = await environment_of(session, viewer.caller.account_id, environment_id)
        return dialog(
            request, viewer, "fragments/environment_delete.html", title="Delete Environment", environment=environment
        )

    @post("/{environment_id:int}/delete", status_code=200)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        environment_id: FromPath[PathId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        async with gateway.sessionmaker() as session:
            environment = await environment_of(session, viewer.caller.account_id, environment_id)
        project_id = environment.project_id
        await delete_account_environment(gateway, viewer.caller, environment_id)
        return go(request, viewer, f"/projects/{project_id}")
