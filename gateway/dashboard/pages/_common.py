"""Small helpers the proxy-function pages share: reading form fields, answering a dialog's
action (htmx: close it, refresh what changed, say so; without scripts: back to a page), and
the absolute origin a copied URL starts with."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.datastructures import FormMultiDict
from litestar.response import Template

from functions.errors import FunctionsError
from gateway.dashboard.render import is_htmx, page, see_other
from gateway.dashboard.session import Viewer
from gateway.errors import GatewayError
from keys.errors import KeyError_

__all__ = ["FORM_ERRORS", "dialog", "done", "go", "origin", "text", "texts", "user_error"]

FORM_ERRORS = (FunctionsError, KeyError_, GatewayError, msgspec.ValidationError)


def text(form: FormMultiDict, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def texts(form: FormMultiDict, name: str) -> list[str]:
    """Every value of a repeated field (rows of a table in a form), in order, stripped."""
    return [value.strip() for value in form.getall(name, []) if isinstance(value, str)]


def user_error(error: Exception) -> bool:
    """A mistake in what was typed (shown next to the field), not a refusal or a missing thing
    (403 and 404 go to the error page: the form has nothing to show for them)."""
    return getattr(error, "status_code", 400) not in (403, 404, 503)


def origin(request: Request[Any, Any, Any]) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def done(request: Request[Any, Any, Any], viewer: Viewer, message: str, location: str, event: str) -> Response[Any]:
    """A dialog's action succeeded: htmx closes the dialog, fires ``event`` (the table listening
    for it reloads itself) and shows ``message``; without scripts, back to ``location``."""
    if is_htmx(request):
        trigger = msgspec.json.encode({event: True, "close-modal": True, "flash": message}).decode()
        return Response(
            None, status_code=200, headers={"HX-Trigger": trigger, "HX-Reswap": "none"}, cookies=viewer.cookies
        )
    return see_other(request, viewer, location)


def go(request: Request[Any, Any, Any], viewer: Viewer, location: str) -> Response[Any]:
    """After a change that reshapes the page (a new environment tab, a deleted project): load
    ``location`` whole, with or without scripts."""
    if is_htmx(request):
        return Response(None, status_code=204, headers={"HX-Redirect": location}, cookies=viewer.cookies)
    return see_other(request, viewer, location)


def dialog(
    request: Request[Any, Any, Any],
    viewer: Viewer,
    fragment: str,
    *,
    title: str,
    active: str = "projects",
    status_code: int = 200,
    **context: Any,
) -> Template:
    """A dialog's content: the fragment for htmx (into ``#modal-body``), a page of its own otherwise."""
    return page(
        request,
        viewer,
        fragment if is_htmx(request) else "dialog_page.html",
        fragment=fragment,
        title=title,
        active=active,
        status_code=status_code,
        **context,
    )
