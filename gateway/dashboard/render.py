"""Rendering pages and fragments: the template context every page shares, htmx-aware answers,
the errors a form shows next to its fields, and the HTML error pages.

A request from htmx (``HX-Request``) gets the fragment it swaps in; the same URL opened without
scripts gets the whole page, so every reading page and every form works with JavaScript off.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig

from billing.money import format_credits
from billing.payments.packages import format_minor
from functions.errors import FunctionsError
from gateway.dashboard.nav import BILLING_PATH, NAV, NavItem
from gateway.dashboard.session import NotSignedIn, Viewer
from gateway.errors import GatewayError
from keys.errors import KeyError_
from keys.restrictions import RestrictionError

__all__ = [
    "STATIC_DIR",
    "TEMPLATE_DIR",
    "FieldErrors",
    "field_errors",
    "html_error",
    "is_htmx",
    "page",
    "redirect_to_login",
    "safe_next",
    "see_other",
    "template_config",
]

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
FieldErrors = dict[str, str]
_PATH = re.compile(r"at `\$\.([a-z_]+)")


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def visible_nav(viewer: Viewer) -> list[NavItem]:
    return [item for item in NAV if viewer.can(item.permission)]


def page(
    request: Request[Any, Any, Any],
    viewer: Viewer,
    template: str,
    *,
    title: str,
    active: str = "",
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> Template:
    """A page (or, for htmx, a fragment template) with what every template may read."""
    return Template(
        template_name=template,
        context={
            "viewer": viewer,
            "csrf": viewer.csrf,
            "nav": visible_nav(viewer),
            "active": active,
            "title": title,
            "htmx": is_htmx(request),
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
        cookies=viewer.cookies,
        headers=dict(headers or {}),
    )


def see_other(request: Request[Any, Any, Any], viewer: Viewer | None, location: str) -> Response[Any]:
    """After a form without scripts: back to a page (303). htmx follows ``HX-Location`` instead."""
    cookies = viewer.cookies if viewer else []
    if is_htmx(request):
        return Response(None, status_code=204, headers={"HX-Location": location}, cookies=cookies)
    return Redirect(location, status_code=303, cookies=cookies)


def safe_next(value: object) -> str:
    """Where to go after signing in: a path on this site only (never ``//host`` or a scheme)."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and len(value) <= 2000
        and not any(ch < " " for ch in value)
    ):
        return value
    return "/keys"


def field_errors(error: Exception) -> FieldErrors:
    """What to show next to which field, from the domain's own validation errors."""
    if isinstance(error, RestrictionError):
        return {error.field: error.message}
    if isinstance(error, msgspec.ValidationError):
        text = str(error)
        found = _PATH.search(text)
        message = _PATH.sub("", text).strip(" -")
        return {found.group(1) if found else "_form": message}
    if isinstance(error, KeyError_ | GatewayError | FunctionsError):
        return {error.param or "_form": error.message}
    return {"_form": str(error)}


def redirect_to_login(request: Request[Any, Any, Any], error: NotSignedIn) -> Response[Any]:
    target = "/login?next=" + quote(
        safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    )
    if is_htmx(request):
        return Response(None, status_code=204, headers={"HX-Redirect": target})
    return Redirect(target, status_code=303)


def html_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """A domain error on a dashboard page: its status, its message, as HTML (htmx: into #flash)."""
    status = int(getattr(error, "status_code", 400))
    message = str(getattr(error, "message", "") or error)
    if isinstance(error, msgspec.ValidationError | RestrictionError):
        status = 400
    template = "fragments/flash.html" if is_htmx(request) else "error.html"
    headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"} if is_htmx(request) else {}
    return Template(
        template_name=template,
        context={"status": status, "message": message, "title": "Something went wrong", "kind": "error"},
        status_code=status,
        headers=headers,
    )


# -- Jinja: filters and globals ----------------------------------------------------------------


def _credits(micro: int | None) -> str:
    if micro is None:
        return "—"
    text = format_credits(micro)
    whole, _, frac = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-')):,}"
    return f"{sign}{grouped}.{frac}" if frac else f"{sign}{grouped}"


def _when(moment: datetime | date | str | None) -> str:
    if moment is None or moment == "":
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.isoformat()


def _ago(moment: datetime | str | None) -> str:
    """A past moment relative to now ("3 hours ago"); the exact time goes in a title beside it."""
    if moment is None or moment == "":
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - aware).total_seconds()))
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Litestar's Jinja engine over the package's templates (autoescaped), with our filters."""
    version = _static_version()

    def setup(engine: JinjaTemplateEngine) -> None:
        env = engine.engine
        env.filters["credits"] = _credits
        env.filters["when"] = _when
        env.filters["ago"] = _ago
        env.filters["money"] = format_minor  # minor units (cents) as the checkout showed them
        env.globals["billing_path"] = BILLING_PATH
        env.globals["static"] = lambda name: f"/static/{name}?v={version}"
        env.trim_blocks = True
        env.lstrip_blocks = True

    return TemplateConfig(directory=TEMPLATE_DIR, engine=JinjaTemplateEngine, engine_callback=setup)
