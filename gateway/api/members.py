"""``/api/members``: the account's team, thin over :mod:`keys.members`."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import FromPath

from billing.bounds import Email, Password
from gateway.api.auth import management_caller
from gateway.errors import decode_body
from gateway.validation import PathId
from keys.members import add_member, change_role, list_members, remove_member
from keys.models import Role
from keys.roles import Permission

_encoder = msgspec.json.Encoder()


class MemberAdd(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    role: Role = Role.MEMBER
    password: Password | None = None


class MemberUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


def _json(payload: Any, status_code: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status_code, media_type="application/json")


class MembersController(Controller):
    path = "/api/members"

    @get("/")
    async def list_members(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW)
        async with state.sessionmaker() as session:
            members = await list_members(session, caller.account_id)
        return _json({"members": [m.as_json() for m in members]})

    @post("/")
    async def add_member(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MANAGE_MEMBERS)
        ask = decode_body(await request.body(), MemberAdd)
        async with state.sessionmaker() as session:
            member = await add_member(
                session,
                caller.account_id,
                email=ask.email,
                role=ask.role,
                password=ask.password,
                actor_role=caller.role,
                actor=caller.actor,
            )
        return _json(member.as_json(), 201)

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
