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
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath

from billing.bounds import Email, Password
from gateway.api.auth import ACCESS_COOKIE, CSRF_HEADER, management_caller
from gateway.errors import InvalidRequest, decode_body, remember_request_id
from gateway.pipeline.chat import new_request_id
from gateway.state import GatewayState
from gateway.validation import PathId
from keys.invitations import (
    TOKEN_PREFIX,
    accept_invitation,
    create_invitation,
    invited_email,
    list_invitations,
    revoke_invitation,
)
from keys.members import change_role, list_members, remove_member, user_by_email
from keys.models import Role
from keys.roles import Permission

_encoder = msgspec.json.Encoder()
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


def _json(payload: Any, status_code: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status_code, media_type="application/json")


async def _invite(request: Request[Any, Any, Any]) -> Response[bytes]:
    state, caller = await management_caller(request, Permission.MANAGE_MEMBERS)
    ask = decode_body(await request.body(), InvitationCreate)
    async with state.sessionmaker() as session:
        invitation, token = await create_invitation(
            session,
            caller.account_id,
            email=ask.email,
            role=ask.role,
            actor_role=caller.role,
            actor=caller.actor,
            now=state.now(),
        )
    # The same answer whether or not a user with this email exists anywhere.
    return _json({**invitation.as_json(), "token": token, "accept_path": ACCEPT_PATH}, 201)


class MembersController(Controller):
    path = "/api/members"

    @get("/")
    async def list_members(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW)
        async with state.sessionmaker() as session:
            members = await list_members(session, caller.account_id)
        return _json({"members": [m.as_json() for m in members]})

    @post("/")
    async def invite_member(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return await _invite(request)

    @patch("/{member_id:int}/")
    async def update_member(self, request: Request[Any, Any, Any], member_id: FromPath[PathId]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MANAGE_MEMBERS)
        ask = decode_body(await request.body(), MemberUpdate)
        async with state.sessionmaker() as session:
            member = await change_role(
                session, caller.account_id, member_id, ask.role, actor_role=caller.role, actor=caller.actor
            )
        return _json(member.as_json())

    @delete("/{member_id:int}/", status_code=204)
    async def remove_member(self, request: Request[Any, Any, Any], member_id: FromPath[PathId]) -> None:
        state, caller = await management_caller(request, Permission.MANAGE_MEMBERS)
        async with state.sessionmaker() as session:
            await remove_member(session, caller.account_id, member_id, actor_role=caller.role, actor=caller.actor)


class InvitationsController(Controller):
    path = "/api/invitations"

    @get("/")
    async def list_invitations(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MANAGE_MEMBERS)
        async with state.sessionmaker() as session:
            pending = await list_invitations(session, caller.account_id, state.now())
        return _json({"invitations": [i.as_json() for i in pending]})

    @post("/")
    async def create_invitation(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return await _invite(request)

    @delete("/{invitation_id:int}/", status_code=204)
    async def revoke_invitation(self, request: Request[Any, Any, Any], invitation_id: FromPath[PathId]) -> None:
        state, caller = await management_caller(request, Permission.MANAGE_MEMBERS)
        async with state.sessionmaker() as session:
            await revoke_invitation(
                session, caller.account_id, invitation_id, actor_role=caller.role, actor=caller.actor, now=state.now()
            )

    @post("/accept/", status_code=201)
    async def accept_invitation(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Join the account. A session cookie (with its CSRF header) proves who is accepting."""
        remember_request_id(request, new_request_id())
        # As for sign-in: a cross-site form cannot send JSON, so it cannot accept on someone's behalf.
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise InvalidRequest("send the invitation as application/json")
        state: GatewayState = request.app.state.gateway
        ask = decode_body(await request.body(), InvitationAccept)
        signed_in: int | None = None
        password = ask.password
        access = request.cookies.get(ACCESS_COOKIE)
        if access:
            principal = await state.sessions.authenticate(access)
            state.sessions.check_csrf(principal.session_id, request.headers.get(CSRF_HEADER))
            signed_in, password = principal.user_id, None
        elif password:
            async with state.sessionmaker() as session:
                email = await invited_email(session, ask.token, state.now())
                existing = await user_by_email(session, email) if email is not None else None
            if existing is not None:
                # Their own current password proves who they are; it is checked, never set.
                signed_in, password = await state.sessions.verify_user(existing.email, password), None
        async with state.sessionmaker() as session:
            joined = await accept_invitation(
                session, ask.token, state.now(), signed_in_user_id=signed_in, password=password
            )
        return _json(
            {
                "account_id": joined.account_id,
                "member": {"id": joined.membership_id, "user_id": joined.user_id, "email": joined.email},
                "role": joined.role.value,
            },
            201,
        )
