"""``/api/members`` (the account's team) and ``/api/invitations`` (how people join it), thin over
:mod:`keys.members` and :mod:`keys.invitations`.

Nobody sets another person's password through this API: adding someone creates an invitation
whose one-time token the inviter hands over, and the invited person accepts it (see
:mod:`keys.invitations` for why). ``POST /api/members/`` is kept as another name for creating an
invitation, so a client that adds members gets the same safe behaviour.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from billing.bounds import Email, Password
from gateway.api.actions import (
    change_member_role,
    invite_member,
    redeem_invitation,
    remove_account_member,
    revoke_account_invitation,
)
from gateway.api.deps import ACCESS_COOKIE, CSRF_HEADER, Caller, Injected, json_only, requires
from gateway.api.openapi import MEMBER_AUTH, PUBLIC, errors
from gateway.state import GatewayState
from gateway.validation import PathId
from keys.invitations import (
    TOKEN_PREFIX,
    InvitationView,
    list_invitations,
)
from keys.members import MemberView, list_members
from keys.models import Role
from keys.roles import Permission
from keys.sessions import Principal

ACCEPT_PATH = "/api/invitations/accept/"


class InvitationCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    role: Role = Role.MEMBER


class InvitationAccept(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=len(TOKEN_PREFIX) + 1, max_length=200)]
    # A new user's chosen password, or an existing user's current one when not signed in.
    password: Password | None = None


class MemberUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


class MemberRead(msgspec.Struct):
    id: int  # the membership's id, which /api/members/{member_id}/ takes
    user_id: int
    email: str
    role: Role


class MemberList(msgspec.Struct):
    members: list[MemberRead]


class InvitationRead(msgspec.Struct):
    id: int
    email: str
    role: Role
    invited_by: str
    created_at: str
    expires_at: str


class InvitationCreated(InvitationRead):
    token: str  # shown once: the inviter hands it to the person invited
    accept_path: str


class InvitationList(msgspec.Struct):
    invitations: list[InvitationRead]


class JoinedMember(msgspec.Struct):
    id: int
    user_id: int
    email: str


class Joined(msgspec.Struct):
    account_id: int
    member: JoinedMember
    role: Role


def member_read(member: MemberView) -> MemberRead:
    return MemberRead(member.membership_id, member.user_id, member.email, member.role)


def invitation_read(invitation: InvitationView) -> InvitationRead:
    return InvitationRead(
        invitation.id,
        invitation.email,
        invitation.role,
        invitation.invited_by,
        invitation.created_at.isoformat(),
        invitation.expires_at.isoformat(),
    )


async def _invite(gateway: GatewayState, caller: Caller, data: InvitationCreate) -> InvitationCreated:
    invitation, token = await invite_member(gateway, caller, data.email, data.role)
    # The same answer whether or not a user with this email exists anywhere.
    return InvitationCreated(
        **msgspec.structs.asdict(invitation_read(invitation)), token=token, accept_path=ACCEPT_PATH
    )


class MembersController(Controller):
    path = "/api/members"
    tags = ["members"]
    security = MEMBER_AUTH

    @get("/", guards=[requires(Permission.VIEW)], operation_id="list_members", responses=errors(401, 403))
    async def list_members(self, gateway: Injected[GatewayState], caller: Injected[Caller]) -> MemberList:
        async with gateway.sessionmaker() as session:
            members = await list_members(session, caller.account_id)
        return MemberList([member_read(m) for m in members])

    @post(
        "/",
        status_code=201,
        guards=[requires(Permission.MANAGE_MEMBERS)],
        operation_id="invite_member",
        responses=errors(400, 401, 403, 409, 413),
    )
    async def invite_member(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[InvitationCreate]
    ) -> InvitationCreated:
        """Another name for POST /api/invitations/: adding a member invites them."""
        return await _invite(gateway, caller, data)

    @patch(
        "/{member_id:int}/",
        guards=[requires(Permission.MANAGE_MEMBERS)],
        operation_id="update_member",
        responses=errors(400, 401, 403, 404, 413),
    )
    async def update_member(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        member_id: FromPath[PathId],
        data: JSONBody[MemberUpdate],
    ) -> MemberRead:
        return member_read(await change_member_role(gateway, caller, member_id, data.role))

    @delete(
        "/{member_id:int}/",
        status_code=204,
        guards=[requires(Permission.MANAGE_MEMBERS)],
        operation_id="remove_member",
        responses=errors(400, 401, 403, 404),
    )
    async def remove_member(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], member_id: FromPath[PathId]
    ) -> None:
        await remove_account_member(gateway, caller, member_id)


class InvitationsController(Controller):
    path = "/api/invitations"
    tags = ["members"]
    security = MEMBER_AUTH

    @get("/", guards=[requires(Permission.MANAGE_MEMBERS)], operation_id="list_invitations", responses=errors(401, 403))
    async def list_invitations(self, gateway: Injected[GatewayState], caller: Injected[Caller]) -> InvitationList:
        async with gateway.sessionmaker() as session:
            pending = await list_invitations(session, caller.account_id, gateway.now())
        return InvitationList([invitation_read(i) for i in pending])

    @post(
        "/",
        status_code=201,
        guards=[requires(Permission.MANAGE_MEMBERS)],
        operation_id="create_invitation",
        responses=errors(400, 401, 403, 409, 413),
    )
    async def create_invitation(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[InvitationCreate]
    ) -> InvitationCreated:
        return await _invite(gateway, caller, data)

    @delete(
        "/{invitation_id:int}/",
        status_code=204,
        guards=[requires(Permission.MANAGE_MEMBERS)],
        operation_id="revoke_invitation",
        responses=errors(400, 401, 403, 404),
    )
    async def revoke_invitation(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], invitation_id: FromPath[PathId]
    ) -> None:
        await revoke_account_invitation(gateway, caller, invitation_id)

    @post(
        "/accept/",
        status_code=201,
        # As for sign-in: a cross-site form cannot send JSON, so it cannot accept on someone's behalf.
        guards=[json_only("send the invitation as application/json")],
        operation_id="accept_invitation",
        security=PUBLIC,
        responses=errors(400, 401, 403, 404, 409, 413),
    )
    async def accept_invitation(
        self, gateway: Injected[GatewayState], request: Request[Any, Any, Any], data: JSONBody[InvitationAccept]
    ) -> Joined:
        """Join the account. A session cookie (with its CSRF header) proves who is accepting;
        without one, a new user's password, or an existing user's current one."""
        principal: Principal | None = None
        access = request.cookies.get(ACCESS_COOKIE)
        if access:
            principal = await gateway.sessions.authenticate(access)
            gateway.sessions.check_csrf(principal.session_id, request.headers.get(CSRF_HEADER))
        joined = await redeem_invitation(gateway, data.token, data.password, principal)
        return Joined(joined.account_id, JoinedMember(joined.membership_id, joined.user_id, joined.email), joined.role)
