"""The dashboard: server-rendered pages at ``/`` for the management API's domain.

Pages are Litestar controllers rendering Jinja templates (``templates/``) with htmx (shipped in
``static/vendor/``, pinned from npm by ``scripts/refresh-vendor``) for partial updates; every
reading page and form works without JavaScript. Each action calls the same function the ``/api``
route calls (:mod:`gateway.api.actions`), which checks the role, so the server refuses what a
role may not do whatever a page shows.

Extension point: a module with more pages adds its controllers to :data:`PAGES` and its entry to
:data:`gateway.dashboard.nav.NAV`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.di import Provide
from litestar.static_files import create_static_files_router

from gateway.api.deps import DEPENDENCIES
from gateway.dashboard.pages.analytics import AnalyticsPages
from gateway.dashboard.pages.audit import AuditPages
from gateway.dashboard.pages.auth import AuthPages
from gateway.dashboard.pages.billing import BillingPages, CreditsPages, UsagePages
from gateway.dashboard.pages.functions import FunctionPages, NewFunctionPages
from gateway.dashboard.pages.keys import KeysPages
from gateway.dashboard.pages.models import ModelsPages
from gateway.dashboard.pages.projects import EnvironmentPages, ProjectsPages
from gateway.dashboard.pages.team import TeamPages
from gateway.dashboard.pages.variables import VariablePages, VariablesPage
from gateway.dashboard.render import STATIC_DIR, html_error, redirect_to_login, template_config
from gateway.dashboard.session import NotSignedIn, provide_viewer
from gateway.errors import DOMAIN_ERRORS
from gateway.settings import Settings
from keys.restrictions import RestrictionError

__all__ = ["PAGES", "dashboard_routes", "template_config"]

PAGES: list[type[Controller]] = [
    AuthPages,
    KeysPages,
    CreditsPages,
    BillingPages,
    UsagePages,
    ModelsPages,
    TeamPages,
    # Proxy functions
    ProjectsPages,
    AnalyticsPages,
    EnvironmentPages,
    VariablesPage,
    VariablePages,
    NewFunctionPages,
    FunctionPages,
    AuditPages,
]

# Scripts and styles only from our own origin (htmx runs with eval off, see base.html), no
# framing, and no referrer leaving the site (a setup or invitation token is in the URL).
SECURITY_HEADERS = [
    ResponseHeader(
        name="Content-Security-Policy",
        value=(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
        ),
    ),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    ResponseHeader(name="Cache-Control", value="no-store"),
]


def dashboard_routes(settings: Settings) -> list[Router]:
    """The pages (with the page-level error handling) and their static files."""
    handlers: dict[Any, Any] = {error: html_error for error in DOMAIN_ERRORS}
    handlers[RestrictionError] = html_error
    handlers[msgspec.ValidationError] = html_error
    handlers[NotSignedIn] = redirect_to_login
    pages = Router(
        path="/",
        route_handlers=list(PAGES),
        dependencies={**DEPENDENCIES, "viewer": Provide(provide_viewer)},
        exception_handlers=handlers,
        response_headers=SECURITY_HEADERS,
        request_max_body_size=settings.api_max_body_bytes,
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        name="dashboard:static",
        cache_control=CacheControlHeader(max_age=86400, public=True),
        include_in_schema=False,
    )
    return [pages, static]
