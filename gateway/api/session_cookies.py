"""The dashboard session's three cookies, set by ``/api/auth`` and by the dashboard's own sign-in.

All three are ``SameSite=Strict`` and ``Secure`` unless the operator turns that off for plain-HTTP
development; the access and refresh tokens are HttpOnly, the CSRF token is not (a page script
sends it back in ``X-CSRF-Token``; the dashboard's forms carry it in a hidden field).

Path ``/``: the server-rendered dashboard lives at ``/`` and reads the access token on every
page, and when that short-lived token has expired it rotates the refresh token itself (a page
load with scripts off cannot call ``POST /api/auth/refresh/``). Both used to be scoped to
``/api`` and ``/api/auth/``; signing out expires those older cookies too.
"""

from __future__ import annotations

from litestar.datastructures import Cookie

from gateway.api.deps import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE
from keys.sessions import IssuedSession

__all__ = ["COOKIE_PATH", "session_cookies"]

COOKIE_PATH = "/"
_LEGACY = ((ACCESS_COOKIE, "/api"), (REFRESH_COOKIE, "/api/auth/"))


def session_cookies(issued: IssuedSession | None, *, secure: bool) -> list[Cookie]:
    """The cookies that start a session (``issued``) or end it (None: expire them all)."""

    def cookie(key: str, value: str, max_age: int, *, httponly: bool = True, path: str = COOKIE_PATH) -> Cookie:
        return Cookie(
            key=key, value=value, path=path, max_age=max_age, httponly=httponly, secure=secure, samesite="strict"
        )

    expired_legacy = [cookie(name, "", 0, path=path) for name, path in _LEGACY]
    if issued is None:
        return [
            cookie(ACCESS_COOKIE, "", 0),
            cookie(REFRESH_COOKIE, "", 0),
            cookie(CSRF_COOKIE, "", 0, httponly=False),
            *expired_legacy,
        ]
    return [
        cookie(ACCESS_COOKIE, issued.access_token, issued.access_max_age_s),
        cookie(REFRESH_COOKIE, issued.refresh_token, issued.refresh_max_age_s),
        cookie(CSRF_COOKIE, issued.csrf_token, issued.refresh_max_age_s, httponly=False),
    ]
