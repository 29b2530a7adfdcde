"""Who is calling the management API: the guards and dependencies every ``/api`` controller uses.

A management call is authenticated either by ``Authorization: Bearer prx-…`` (an unrestricted
key acts with the admin role of its account; a key with any restriction must pass its own
hours/IP/country/origin checks and may only view and mint ``bt-`` tokens for itself, so it can
never hand out more than it has; ``bt-`` tokens are refused) or by the dashboard's session
cookie, in which case every write must also carry the CSRF token. The role is then checked
against the permission the endpoint needs (:mod:`keys.roles`). ``/api/admin`` is the operator's:
its bearer token is the ``admin_token`` of the config, compared in constant time.

How a controller uses it (litestar-fullstack's shape)::

    @post("/", guards=[requires(Permission.MANAGE_KEYS)], operation_id="create_key")
    async def create_key(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[KeyCreate]
    ) -> KeyCreated:

Guards run before the body is read, so an anonymous or under-privileged caller is refused (401
/ 403) before anything it sent is parsed; the guard leaves the :class:`Caller` in the ASGI
scope and the ``caller`` dependency hands it to the handler. A route without one of these
guards is public: ``tests/unit/test_api_routes.py`` walks the route table and fails for
any ``/api`` route that has none and is not on its short allow-list.

This is a module of its own, not part of a controller, so controllers never import each other
(the import contract in pyproject.toml).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias, TypeVar, cast

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Dependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.params import SkipValidationMarker
from litestar.types import Guard

from gateway.errors import GatewayError, InvalidRequest
from gateway.state import GatewayState
from keys.chain import authorize_request, identify
from keys.errors import BrowserTokenForbidden, InvalidApiKey, MissingApiKey, RoleForbidden
from keys.models import Role
from keys.roles import KEY_ROLE, RESTRICTED_KEY_ROLE, Permission, require
from keys.service import KeyIdentity
from keys.sessions import Principal

__all__ = [
    "ACCESS_COOKIE",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "DEPENDENCIES",
    "OPERATOR",
    "REFRESH_COOKIE",
    "AdminUnauthorized",
    "Caller",
    "Injected",
    "is_access_guard",
    "json_only",
    "operator_only",
    "requires",
    "signed_in_user",
]

ACCESS_COOKIE = "tw_session"
REFRESH_COOKIE = "tw_refresh"
CSRF_COOKIE = "tw_csrf"
CSRF_HEADER = "x-csrf-token"
OPERATOR = "operator"  # the actor the audit trail names for /api/admin calls
T = TypeVar("T")
# A parameter the /api layer injects by its name (``gateway``, ``caller``): our own objects,
# handed over as they are (Litestar would otherwise try to re-validate them as msgspec types).
Injected: TypeAlias = Annotated[T, Dependency(kind="named"), SkipValidationMarker()]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CALLER = "tollway.caller"


class AdminUnauthorized(GatewayError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_admin_token"


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


def _gateway(connection: ASGIConnection[Any, Any, Any, Any]) -> GatewayState:
    return cast(GatewayState, connection.app.state.gateway)


async def _authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The caller, by its key or its session; the rules of the module docstring, in order."""
    state = _gateway(connection)
    authorization = connection.headers.get("authorization")
    if authorization:
        identity = await identify(authorization, state.keys, state.tokens, state.now())
        if identity.via_token:
            raise BrowserTokenForbidden("browser tokens cannot use the management API")
        authorize_request(identity, state.request_facts(cast(Request[Any, Any, Any], connection)), state.now())
        role = RESTRICTED_KEY_ROLE if identity.is_restricted else KEY_ROLE
        return Caller(identity.account_id, role, f"key:{identity.key_id}", key=identity)
    access = connection.cookies.get(ACCESS_COOKIE)
    if not access:
        raise MissingApiKey("send Authorization: Bearer <prx- key>, or sign in to the dashboard")
    principal = await state.sessions.authenticate(access)
    if connection.scope.get("method") not in _SAFE_METHODS:
        state.sessions.check_csrf(principal.session_id, connection.headers.get(CSRF_HEADER))
    return Caller(principal.account_id, principal.role, f"user:{principal.user_id}", principal=principal)


_ACCESS_GUARDS: set[Guard] = set()


def _access_guard(guard: Guard) -> Guard:
    """Mark a guard as one that decides who may call a route (the route-table test looks for one)."""
    _ACCESS_GUARDS.add(guard)
    return guard


def is_access_guard(guard: Any) -> bool:
    return guard in _ACCESS_GUARDS


_REQUIRES: dict[Permission, Guard] = {}


def requires(permission: Permission) -> Guard:
    """The guard for a route that needs ``permission``: authenticate, then check the role."""
    if permission in _REQUIRES:
        return _REQUIRES[permission]

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        caller = await _authenticate(connection)
        require(caller.role, permission)
        connection.scope[_CALLER] = caller  # type: ignore[literal-required]

    guard.__name__ = guard.__qualname__ = f"requires_{permission.value}"
    _REQUIRES[permission] = _access_guard(guard)
    return guard


@_access_guard
async def operator_only(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """``/api/admin``: the operator token from config; with none configured the admin API is off."""
    expected = _gateway(connection).settings.admin_token
    scheme, _, given = (connection.headers.get("authorization") or "").partition(" ")
    digest = hashlib.sha256
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())
    ):
        raise AdminUnauthorized("a valid operator token is required for /api/admin")


async def signed_in_user(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """After :func:`requires`: the route is for a dashboard user, not a key (changing a password)."""
    caller = cast(Caller | None, connection.scope.get(_CALLER))
    if caller is None or caller.principal is None:
        raise InvalidRequest("only a signed-in user can change their password")


def json_only(message: str) -> Guard:
    """Refuse a body that is not ``application/json`` before reading it: a cross-site form or a
    "simple" fetch cannot send JSON, so requiring it stops login (and invitation) CSRF."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        if connection.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise InvalidRequest(message)

    return guard


def provide_gateway(request: Request[Any, Any, Any]) -> GatewayState:
    return _gateway(request)


def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    caller = cast(Caller | None, request.scope.get(_CALLER))
    if caller is None:  # a programming error, which the route-table test exists to catch
        raise RuntimeError(f"{request.scope.get('path')}: a handler asks for the caller but has no requires() guard")
    return caller


# Registered on the /api layer (gateway/app.py): a handler names ``gateway`` or ``caller`` and gets it.
DEPENDENCIES = {
    "gateway": Provide(provide_gateway, sync_to_thread=False),
    "caller": Provide(provide_caller, sync_to_thread=False),
}
