"""Signing in and out, the owner's first-run setup, and accepting an invitation.

These forms are used before there is a session, so they carry the per-browser form token
(:func:`gateway.dashboard.session.form_token`) instead of the session's CSRF token; signing out
carries the CSRF token like every other write.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromQuery, QueryParameter
from litestar.response import Redirect, Template

from billing.bounds import NO_CONTROL
from gateway.api.actions import redeem_invitation
from gateway.api.deps import ACCESS_COOKIE, Injected
from gateway.api.session_cookies import session_cookies
from gateway.dashboard.render import field_errors, safe_next
from gateway.dashboard.session import (
    NotSignedIn,
    Viewer,
    check_form_token,
    form_token,
    provide_viewer,
    read_form,
)
from gateway.state import GatewayState
from gateway.validation import QueryText
from keys.errors import KeyError_
from keys.sessions import Principal
from keys.setup import complete_setup, setup_is_pending


def _text(value: object, limit: int = 1024) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _bare(
    request: Request[Any, Any, Any], template: str, *, title: str, status_code: int = 200, **context: Any
) -> Template:
    """A page outside the signed-in layout, with the form token its form must echo."""
    token, cookie = form_token(request)
    return Template(
        template_name=template,
        context={"title": title, "form_token": token, **context},
        status_code=status_code,
        cookies=[cookie] if cookie else [],
    )


async def _signed_in(request: Request[Any, Any, Any]) -> Viewer | None:
    try:
        return await provide_viewer(request)
    except NotSignedIn:
        return None


NextPath = Annotated[str | None, QueryParameter(name="next", max_length=2000, pattern=NO_CONTROL)]


class AuthPages(Controller):
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:home")
    async def home(self, request: Request[Any, Any, Any]) -> Response[Any]:
        viewer = await _signed_in(request)
        return Redirect("/keys" if viewer else "/login", status_code=303, cookies=viewer.cookies if viewer else [])

    @get("/login", name="dashboard:login")
    async def login_form(self, request: Request[Any, Any, Any], next_: NextPath = None) -> Response[Any]:
        viewer = await _signed_in(request)
        if viewer is not None:
            return Redirect(safe_next(next_), status_code=303, cookies=viewer.cookies)
        return _bare(request, "login.html", title="Sign in", next=safe_next(next_), errors={}, email="")

    @post("/login", status_code=303)
    async def login(self, request: Request[Any, Any, Any], gateway: Injected[GatewayState]) -> Response[Any]:
        form = await request.form()
        target = safe_next(form.get("next"))
        email = _text(form.get("email"), 320)
        try:
            check_form_token(request, form)
            issued = await gateway.sessions.login(email, _text(form.get("password")))
        except KeyError_ as error:
            return _bare(
                request,
                "login.html",
                title="Sign in",
                next=target,
                errors={"_form": error.message},
                email=email,
                status_code=error.status_code,
            )
        cookies = session_cookies(issued, secure=gateway.settings.session_cookie_secure)
        return Redirect(target, status_code=303, cookies=cookies)

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any], gateway: Injected[GatewayState]) -> Response[Any]:
        viewer = await provide_viewer(request)
        await read_form(request, viewer)
        await gateway.sessions.logout(viewer.principal.session_id)
        return Redirect(
            "/login", status_code=303, cookies=session_cookies(None, secure=gateway.settings.session_cookie_secure)
        )

    @get("/setup", name="dashboard:setup")
    async def setup_form(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], token: FromQuery[QueryText] = None
    ) -> Template:
        async with gateway.sessionmaker() as session:
            valid = bool(token) and await setup_is_pending(session, cast(str, token), gateway.now())
        return _bare(
            request,
            "setup.html",
            title="Set up your dashboard sign-in",
            token=token or "",
            valid=valid,
            errors={},
            email="",
            status_code=200 if valid else 404,
        )

    @post("/setup", status_code=303)
    async def setup(self, request: Request[Any, Any, Any], gateway: Injected[GatewayState]) -> Response[Any]:
        form = await request.form()
        token, email, password = (
            _text(form.get("token"), 200),
            _text(form.get("email"), 320),
            _text(form.get("password")),
        )
        try:
            check_form_token(request, form)
            if password != _text(form.get("password_again")):
                raise _Mismatch("the two passwords differ", param="password_again")
            async with gateway.sessionmaker() as session:
                await complete_setup(session, token, email, password, gateway.now())
            issued = await gateway.sessions.login(email, password)
        except KeyError_ as error:
            return _bare(
                request,
                "setup.html",
                title="Set up your dashboard sign-in",
                token=token,
                valid=True,
                errors=field_errors(error),
                email=email,
                status_code=error.status_code,
            )
        return Redirect(
            "/keys", status_code=303, cookies=session_cookies(issued, secure=gateway.settings.session_cookie_secure)
        )

    @get("/invite", name="dashboard:invite")
    async def invite_form(self, request: Request[Any, Any, Any], token: FromQuery[QueryText] = None) -> Template:
        viewer = await _signed_in(request)
        return _bare(
            request,
            "invite.html",
            title="Join an account",
            token=token or "",
            viewer=viewer,
            csrf=viewer.csrf if viewer else "",
            errors={},
        )

    @post("/invite", status_code=303)
    async def accept(self, request: Request[Any, Any, Any], gateway: Injected[GatewayState]) -> Response[Any]:
        form = await request.form()
        token, password = _text(form.get("token"), 200), _text(form.get("password")) or None
        viewer = await _signed_in(request) if request.cookies.get(ACCESS_COOKIE) else None
        principal: Principal | None = None
        try:
            if viewer is not None:
                await read_form(request, viewer)  # signed in: the session's CSRF token
                principal = viewer.principal
            else:
                check_form_token(request, form)
            joined = await redeem_invitation(gateway, token, password, principal)
            cookies: list[Cookie] = viewer.cookies if viewer else []
            if viewer is None and password:
                issued = await gateway.sessions.login(joined.email, password, joined.account_id)
                cookies = session_cookies(issued, secure=gateway.settings.session_cookie_secure)
        except KeyError_ as error:
            return _bare(
                request,
                "invite.html",
                title="Join an account",
                token=token,
                viewer=viewer,
                csrf=viewer.csrf if viewer else "",
                errors=field_errors(error),
                status_code=error.status_code,
            )
        return Redirect("/keys", status_code=303, cookies=cookies)


class _Mismatch(KeyError_):
    status_code = 400
    type = "invalid_request_error"
    code = "password_mismatch"
