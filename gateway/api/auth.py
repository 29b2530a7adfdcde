"""``/api/auth``: dashboard sign-in, refresh, sign-out, who am I, and changing one's password.

Who may call the rest of the management API is decided by the guards in :mod:`gateway.api.deps`;
this controller issues and ends the sessions they accept.

Cookies are HttpOnly (except the CSRF one, which the page must read), ``SameSite=Strict`` and
``Secure`` unless the operator turns that off for plain-HTTP development; see
:mod:`gateway.api.session_cookies` for their paths.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import JSONBody

from billing.bounds import Email, Id
from gateway.api.deps import (
    ACCESS_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    Caller,
    Injected,
    json_only,
    requires,
    signed_in_user,
)
from gateway.api.openapi import MEMBER_AUTH, PUBLIC, errors
from gateway.api.session_cookies import session_cookies
from gateway.state import GatewayState
from keys.errors import SessionExpired
from keys.roles import Permission
from keys.sessions import IssuedSession, Principal


def _session_cookies(state: GatewayState, issued: IssuedSession | None) -> list[Cookie]:
    return session_cookies(issued, secure=state.settings.session_cookie_secure)


class UserRead(msgspec.Struct):
    id: int
    email: str


class KeyRef(msgspec.Struct):
    id: str


class Me(msgspec.Struct, omit_defaults=True):
    """Who is calling: a signed-in ``user``, or a ``key`` (exactly one of the two is present)."""

    account_id: int
    role: str
    user: UserRead | None = None
    key: KeyRef | None = None


class SessionIssued(msgspec.Struct):
    user: UserRead
    account_id: int
    role: str
    csrf_token: str  # send it back in the x-csrf-token header on every write
    expires_in: int


class Login(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    account_id: Id | None = None


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(max_length=1024)]
    new_password: Annotated[str, msgspec.Meta(max_length=1024)]


def _issued(state: GatewayState, issued: IssuedSession) -> Response[SessionIssued]:
    principal = issued.principal
    body = SessionIssued(
        user=UserRead(principal.user_id, principal.email),
        account_id=principal.account_id,
        role=principal.role.value,
        csrf_token=issued.csrf_token,
        expires_in=issued.access_max_age_s,
    )
    return Response(body, cookies=_session_cookies(state, issued))


def _me(principal: Principal) -> Me:
    return Me(principal.account_id, principal.role.value, user=UserRead(principal.user_id, principal.email))


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]

    @post(
        "/login/",
        status_code=200,
        # A cross-site form or "simple" fetch cannot send JSON: requiring it stops login CSRF.
        guards=[json_only("send the credentials as application/json")],
        operation_id="login",
        security=PUBLIC,
        responses=errors(400, 401, 403, 413, 429),
    )
    async def login(self, gateway: Injected[GatewayState], data: JSONBody[Login]) -> Response[SessionIssued]:
        """Sign in to the dashboard: sets the session, refresh and CSRF cookies."""
        issued = await gateway.sessions.login(data.email, data.password, data.account_id)
        return _issued(gateway, issued)

    @post(
        "/refresh/",
        status_code=200,
        operation_id="refresh_session",
        security=[{"csrfHeader": []}],
        responses=errors(401, 403),
    )
    async def refresh(
        self, gateway: Injected[GatewayState], request: Request[Any, Any, Any]
    ) -> Response[SessionIssued]:
        """A fresh session from the refresh cookie and the CSRF header."""
        refresh_token = request.cookies.get(REFRESH_COOKIE)
        if not refresh_token:
            raise SessionExpired("no session: sign in again")
        gateway.sessions.check_csrf(refresh_token.partition(".")[0], request.headers.get(CSRF_HEADER))
        return _issued(gateway, await gateway.sessions.refresh(refresh_token))

    @post(
        "/logout/",
        status_code=204,
        operation_id="logout",
        security=[{"sessionCookie": [], "csrfHeader": []}],
        responses=errors(401, 403),
    )
    async def logout(self, gateway: Injected[GatewayState], request: Request[Any, Any, Any]) -> Response[None]:
        """End the session (by its refresh or access cookie, with the CSRF header) and expire the cookies."""
        session_id = (request.cookies.get(REFRESH_COOKIE) or "").partition(".")[0]
        if not session_id:
            access = request.cookies.get(ACCESS_COOKIE)
            if not access:
                raise SessionExpired("not signed in")
            session_id = (await gateway.sessions.authenticate(access)).session_id
        gateway.sessions.check_csrf(session_id, request.headers.get(CSRF_HEADER))
        await gateway.sessions.logout(session_id)
        return Response(None, status_code=204, cookies=_session_cookies(gateway, None))

    @get(
        "/me/",
        guards=[requires(Permission.VIEW)],
        operation_id="get_me",
        security=MEMBER_AUTH,
        responses=errors(401, 403),
    )
    async def me(self, caller: Injected[Caller]) -> Me:
        if caller.principal is None:
            return Me(caller.account_id, caller.role.value, key=KeyRef(caller.actor.split(":", 1)[1]))
        return _me(caller.principal)

    @post(
        "/password/",
        status_code=204,
        guards=[requires(Permission.VIEW), signed_in_user],
        operation_id="change_password",
        security=[{"sessionCookie": [], "csrfHeader": []}],
        responses=errors(400, 401, 403, 413),
    )
    async def change_password(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[PasswordChange]
    ) -> None:
        assert caller.principal is not None  # the signed_in_user guard
        await gateway.sessions.change_password(caller.principal, data.current_password, data.new_password)
