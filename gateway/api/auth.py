"""Who is calling the management API, and ``/api/auth`` for dashboard sign-in.

A management call is authenticated either by ``Authorization: Bearer prx-…`` (an unrestricted
key acts with the admin role of its account; a key with any restriction must pass its own
hours/IP/country/origin checks and may only view and mint ``bt-`` tokens for itself, so it can
never hand out more than it has; ``bt-`` tokens are refused) or by the dashboard's session
cookie, in which case every write must also carry the CSRF token. The role is then checked
against the permission the endpoint needs (:mod:`keys.roles`).

Cookies are HttpOnly (except the CSRF one, which the page must read), ``SameSite=Strict`` and
``Secure`` unless the operator turns that off for plain-HTTP development.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie

from billing.bounds import Email, Id
from gateway.errors import InvalidRequest, decode_body, remember_request_id
from gateway.pipeline.chat import new_request_id
from gateway.state import GatewayState
from keys.chain import authorize_request, identify
from keys.errors import BrowserTokenForbidden, InvalidApiKey, MissingApiKey, RoleForbidden, SessionExpired
from keys.models import Role
from keys.roles import KEY_ROLE, RESTRICTED_KEY_ROLE, Permission, require
from keys.service import KeyIdentity
from keys.sessions import IssuedSession, Principal

ACCESS_COOKIE = "tw_session"
REFRESH_COOKIE = "tw_refresh"
CSRF_COOKIE = "tw_csrf"
CSRF_HEADER = "x-csrf-token"
_REFRESH_PATH = "/api/auth/"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: int
    role: Role
    actor: str  # for the audit trail: "key:<id>" or "user:<id>"
    key: KeyIdentity | None = None
    principal: Principal | None = None

    def require_token_parent(self, key_id: int) -> None:
        """A restricted key mints browser tokens only for itself, never for a wider sibling."""
        if self.key is not None and self.key.is_restricted and key_id != self.key.key_id:
            raise RoleForbidden("a key with restrictions can only mint browser tokens for itself")

    def require_token_owner(self, owner: tuple[int, int] | None) -> None:
        """Revoking a ``bt-`` token (``owner`` = its account and parent key, None if unknown): it must
        be this account's, and a restricted key may only revoke tokens it minted itself, so it
        cannot cut off a sibling key's browser users."""
        if owner is None or owner[0] != self.account_id:
            raise InvalidApiKey("no such browser token")
        if self.key is not None and self.key.is_restricted and owner[1] != self.key.key_id:
            raise RoleForbidden("a key with restrictions can only revoke browser tokens it minted itself")


async def management_caller(request: Request[Any, Any, Any], permission: Permission) -> tuple[GatewayState, Caller]:
    remember_request_id(request, new_request_id())
    state: GatewayState = request.app.state.gateway
    authorization = request.headers.get("authorization")
    caller: Caller
    if authorization:
        identity = await identify(authorization, state.keys, state.tokens, state.now())
        if identity.via_token:
            raise BrowserTokenForbidden("browser tokens cannot use the management API")
        authorize_request(identity, state.request_facts(request), state.now())
        role = RESTRICTED_KEY_ROLE if identity.is_restricted else KEY_ROLE
        caller = Caller(identity.account_id, role, f"key:{identity.key_id}", key=identity)
    else:
        access = request.cookies.get(ACCESS_COOKIE)
        if not access:
            raise MissingApiKey("send Authorization: Bearer <prx- key>, or sign in to the dashboard")
        principal = await state.sessions.authenticate(access)
        if request.method not in _SAFE_METHODS:
            state.sessions.check_csrf(principal.session_id, request.headers.get(CSRF_HEADER))
        caller = Caller(principal.account_id, principal.role, f"user:{principal.user_id}", principal=principal)
    require(caller.role, permission)
    return state, caller


def _json(payload: Any, status_code: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status_code, media_type="application/json")


def _session_cookies(state: GatewayState, issued: IssuedSession | None) -> list[Cookie]:
    secure = state.settings.session_cookie_secure
    if issued is None:  # sign out: expire all three
        return [
            Cookie(
                key=ACCESS_COOKIE, value="", path="/api", max_age=0, httponly=True, secure=secure, samesite="strict"
            ),
            Cookie(
                key=REFRESH_COOKIE,
                value="",
                path=_REFRESH_PATH,
                max_age=0,
                httponly=True,
                secure=secure,
                samesite="strict",
            ),
            Cookie(key=CSRF_COOKIE, value="", path="/", max_age=0, secure=secure, samesite="strict"),
        ]
    return [
        Cookie(
            key=ACCESS_COOKIE,
            value=issued.access_token,
            path="/api",
            max_age=issued.access_max_age_s,
            httponly=True,
            secure=secure,
            samesite="strict",
        ),
        Cookie(
            key=REFRESH_COOKIE,
            value=issued.refresh_token,
            path=_REFRESH_PATH,
            max_age=issued.refresh_max_age_s,
            httponly=True,
            secure=secure,
            samesite="strict",
        ),
        Cookie(
            key=CSRF_COOKIE,
            value=issued.csrf_token,
            path="/",
            max_age=issued.refresh_max_age_s,
            httponly=False,
            secure=secure,
            samesite="strict",
        ),
    ]


def principal_view(principal: Principal) -> dict[str, Any]:
    return {
        "user": {"id": principal.user_id, "email": principal.email},
        "account_id": principal.account_id,
        "role": principal.role.value,
    }


def _issued_response(state: GatewayState, issued: IssuedSession) -> Response[bytes]:
    body = {**principal_view(issued.principal), "csrf_token": issued.csrf_token, "expires_in": issued.access_max_age_s}
    response = _json(body)
    response.cookies.extend(_session_cookies(state, issued))
    return response


class Login(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    account_id: Id | None = None


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(max_length=1024)]
    new_password: Annotated[str, msgspec.Meta(max_length=1024)]


class AuthController(Controller):
    path = "/api/auth"

    @post("/login/", status_code=200)
    async def login(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        remember_request_id(request, new_request_id())
        # A cross-site form or "simple" fetch cannot send JSON: requiring it stops login CSRF.
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise InvalidRequest("send the credentials as application/json")
        state: GatewayState = request.app.state.gateway
        login = decode_body(await request.body(), Login)
        issued = await state.sessions.login(login.email, login.password, login.account_id)
        return _issued_response(state, issued)

    @post("/refresh/", status_code=200)
    async def refresh(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        remember_request_id(request, new_request_id())
        state: GatewayState = request.app.state.gateway
        refresh_token = request.cookies.get(REFRESH_COOKIE)
        if not refresh_token:
            raise SessionExpired("no session: sign in again")
        state.sessions.check_csrf(refresh_token.partition(".")[0], request.headers.get(CSRF_HEADER))
        return _issued_response(state, await state.sessions.refresh(refresh_token))

    @post("/logout/", status_code=204)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[None]:
        remember_request_id(request, new_request_id())
        state: GatewayState = request.app.state.gateway
        session_id = (request.cookies.get(REFRESH_COOKIE) or "").partition(".")[0]
        if not session_id:
            access = request.cookies.get(ACCESS_COOKIE)
            if not access:
                raise SessionExpired("not signed in")
            session_id = (await state.sessions.authenticate(access)).session_id
        state.sessions.check_csrf(session_id, request.headers.get(CSRF_HEADER))
        await state.sessions.logout(session_id)
        return Response(None, status_code=204, cookies=_session_cookies(state, None))

    @get("/me/")
    async def me(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        _state, caller = await management_caller(request, Permission.VIEW)
        if caller.principal is None:
            return _json(
                {
                    "key": {"id": caller.actor.split(":", 1)[1]},
                    "account_id": caller.account_id,
                    "role": caller.role.value,
                }
            )
        return _json(principal_view(caller.principal))

    @post("/password/", status_code=204)
    async def change_password(self, request: Request[Any, Any, Any]) -> None:
        state, caller = await management_caller(request, Permission.VIEW)
        if caller.principal is None:
            raise InvalidRequest("only a signed-in user can change their password")
        change = decode_body(await request.body(), PasswordChange)
        await state.sessions.change_password(caller.principal, change.current_password, change.new_password)
