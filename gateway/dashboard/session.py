"""Who is looking at a dashboard page: the session cookie, refreshed in place, and CSRF on writes.

The pages use the same dashboard sessions as ``/api`` (:mod:`keys.sessions`): the short-lived
access token, and when it has expired the refresh token, rotated here on the page load (a page
read with scripts off cannot call ``POST /api/auth/refresh/``; the cookies are ``SameSite=Strict``,
so a cross-site navigation carries neither). A page that finds no session answers with a redirect
to ``/login`` (:class:`NotSignedIn`).

Every state-changing form carries the session's CSRF token (a hidden ``_csrf`` field, or the
``X-CSRF-Token`` header htmx adds from ``hx-headers``); :func:`read_form` refuses a write without
it. Forms used before there is a session (sign-in, setup, accepting an invitation) carry a
per-browser form token instead: a random ``tw_form`` cookie (``SameSite=Strict``) echoed in a
hidden field, which a cross-site form cannot read nor send, so nobody can sign a browser in as
someone else.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, cast

from litestar import Request
from litestar.datastructures import Cookie, FormMultiDict

from gateway.api.deps import ACCESS_COOKIE, CSRF_HEADER, REFRESH_COOKIE, Caller
from gateway.api.session_cookies import COOKIE_PATH, session_cookies
from gateway.state import GatewayState
from keys.errors import KeyError_
from keys.roles import Permission, allows
from keys.secrets import constant_time_equal
from keys.sessions import Principal

__all__ = [
    "CSRF_FIELD",
    "FORM_COOKIE",
    "FORM_FIELD",
    "FormTokenFailed",
    "NotSignedIn",
    "Viewer",
    "check_form_token",
    "form_token",
    "provide_viewer",
    "read_form",
]

CSRF_FIELD = "_csrf"
FORM_COOKIE = "tw_form"
FORM_FIELD = "_form"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotSignedIn(Exception):
    """No usable session: the page redirects to the sign-in form."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class FormTokenFailed(KeyError_):
    status_code = 403
    type = "permission_error"
    code = "csrf_failed"


@dataclass(slots=True)
class Viewer:
    """The signed-in user on this page: their :class:`Caller` (what the /api actions take), the
    CSRF token for forms, and any refreshed session cookies the answer must set."""

    caller: Caller
    principal: Principal
    csrf: str
    cookies: list[Cookie] = field(default_factory=list)

    def can(self, permission: str | Permission) -> bool:
        return allows(self.caller.role, Permission(permission))

    @property
    def role(self) -> str:
        return self.caller.role.value


def _state(request: Request[Any, Any, Any]) -> GatewayState:
    return cast(GatewayState, request.app.state.gateway)


async def provide_viewer(request: Request[Any, Any, Any]) -> Viewer:
    state = _state(request)
    cookies: list[Cookie] = []
    principal: Principal | None = None
    access = request.cookies.get(ACCESS_COOKIE)
    try:
        if access:
            try:
                principal = await state.sessions.authenticate(access)
            except KeyError_:
                principal = None  # expired or ended: the refresh token decides
        if principal is None:
            refresh = request.cookies.get(REFRESH_COOKIE)
            if not refresh:
                raise NotSignedIn()
            issued = await state.sessions.refresh(refresh)
            principal = issued.principal
            cookies = session_cookies(issued, secure=state.settings.session_cookie_secure)
    except KeyError_ as error:  # session ended, member removed, account suspended
        raise NotSignedIn(error.message) from error
    caller = Caller(principal.account_id, principal.role, f"user:{principal.user_id}", principal=principal)
    return Viewer(caller, principal, state.sessions.csrf_token(principal.session_id), cookies)


async def read_form(request: Request[Any, Any, Any], viewer: Viewer) -> FormMultiDict:
    """The submitted form, after checking its CSRF token (field or header) against the session."""
    form = await request.form()
    presented = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    _state(request).sessions.check_csrf(viewer.principal.session_id, presented if isinstance(presented, str) else None)
    return form


def form_token(request: Request[Any, Any, Any]) -> tuple[str, Cookie | None]:
    """The browser's pre-session form token, and the cookie to set when it has none yet."""
    existing = request.cookies.get(FORM_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing, None
    token = secrets.token_urlsafe(24)
    secure = _state(request).settings.session_cookie_secure
    return token, Cookie(
        key=FORM_COOKIE, value=token, path=COOKIE_PATH, httponly=True, secure=secure, samesite="strict"
    )


def check_form_token(request: Request[Any, Any, Any], form: FormMultiDict) -> None:
    cookie = request.cookies.get(FORM_COOKIE) or ""
    sent = form.get(FORM_FIELD)
    if not cookie or not isinstance(sent, str) or not constant_time_equal(cookie, sent):
        raise FormTokenFailed("this form expired: reload the page and try again")
