"""The Team page: members and their roles, pending invitations, inviting, changing a role and
removing a member, through the same functions as ``/api/members`` and ``/api/invitations``
(:mod:`gateway.api.actions`; the last owner is protected by :mod:`keys.members`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from gateway.api.actions import (
    change_member_role,
    invite_member,
    remove_account_member,
    revoke_account_invitation,
)
from gateway.api.deps import Injected
from gateway.dashboard.render import field_errors, is_htmx, page, see_other
from gateway.dashboard.session import Viewer, read_form
from gateway.state import GatewayState
from gateway.validation import PathId
from keys.errors import IdentityInvalid, KeyError_, MemberNotFound
from keys.invitations import list_invitations
from keys.members import list_members
from keys.models import Role
from keys.roles import Permission, may_assign, require


def _role(value: object) -> Role | None:
    try:
        return Role(value) if isinstance(value, str) else None
    except ValueError:
        return None


async def _team(
    request: Request[Any, Any, Any],
    state: GatewayState,
    viewer: Viewer,
    *,
    invited: tuple[str, str] | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    account_id = viewer.caller.account_id
    async with state.sessionmaker() as session:
        members = await list_members(session, account_id)
        pending = (
            await list_invitations(session, account_id, state.now()) if viewer.can(Permission.MANAGE_MEMBERS) else []
        )
    origin = f"{request.url.scheme}://{request.url.netloc}"
    actor = viewer.caller.role
    return page(
        request,
        viewer,
        "team.html",
        title="Team",
        active="team",
        members=members,
        pending=pending,
        roles=[role.value for role in Role],
        assignable=[role.value for role in Role if may_assign(actor, None, role)],
        may_change=lambda current: may_assign(actor, current, current),
        invited=invited,
        invite_url=(origin + "/invite?token=" + invited[1]) if invited else "",
        errors=errors or {},
        values=values or {},
        status_code=status_code,
    )


class TeamPages(Controller):
    path = "/team"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:team")
    async def team(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Template:
        return await _team(request, gateway, viewer)

    @post("/invite", status_code=201)
    async def invite(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Template:
        form = await read_form(request, viewer)
        email = form.get("email")
        email = email.strip()[:320] if isinstance(email, str) else ""
        role = _role(form.get("role"))
        values = {"email": email, "role": role.value if role else ""}
        try:
            if role is None:
                raise IdentityInvalid("choose a role", param="role")
            invitation, token = await invite_member(gateway, viewer.caller, email, role)
        except KeyError_ as error:
            if error.status_code == 403:
                raise
            return await _team(request, gateway, viewer, errors=field_errors(error), values=values, status_code=422)
        return await _team(request, gateway, viewer, invited=(invitation.email, token), status_code=201)

    @post("/members/{member_id:int}/role", status_code=303)
    async def change_role(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        member_id: FromPath[PathId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        role = _role(form.get("role"))
        if role is None:
            require(viewer.caller.role, Permission.MANAGE_MEMBERS)
            raise IdentityInvalid("choose a role", param="role")
        await change_member_role(gateway, viewer.caller, member_id, role)
        return see_other(request, viewer, "/team")

    @get("/members/{member_id:int}/remove")
    async def confirm_remove(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        member_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_MEMBERS)
        async with gateway.sessionmaker() as session:
            members = await list_members(session, viewer.caller.account_id)
        member = next((m for m in members if m.membership_id == member_id), None)
        if member is None:
            raise MemberNotFound(f"no member {member_id} in this account")
        return page(
            request,
            viewer,
            "fragments/member_remove.html" if is_htmx(request) else "dialog_page.html",
            fragment="fragments/member_remove.html",
            title=f"Remove {member.email}?",
            active="team",
            member=member,
        )

    @post("/members/{member_id:int}/remove", status_code=303)
    async def remove(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        member_id: FromPath[PathId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        await remove_account_member(gateway, viewer.caller, member_id)
        return see_other(request, viewer, "/team")

    @post("/invitations/{invitation_id:int}/revoke", status_code=303)
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        invitation_id: FromPath[PathId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        await revoke_account_invitation(gateway, viewer.caller, invitation_id)
        return see_other(request, viewer, "/team")
