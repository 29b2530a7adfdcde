"""The Models page: the catalogue this gateway serves (``state.catalog``, as ``/v1/models`` shows
it), with category, prices and context length, searchable on the server."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import FromQuery, Parameter
from litestar.response import Template

from billing.bounds import NO_CONTROL
from gateway.api.deps import Injected
from gateway.api.views import model_view
from gateway.dashboard.render import is_htmx, page
from gateway.dashboard.session import Viewer
from gateway.state import GatewayState

CATEGORIES = ("text", "image", "video", "stt", "tts")
Search = Annotated[str | None, Parameter(max_length=200, pattern=NO_CONTROL)]


class ModelsPages(Controller):
    path = "/models"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:models")
    async def models(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        q: FromQuery[Search] = None,
        category: FromQuery[Search] = None,
    ) -> Template:
        needle = (q or "").strip().lower()
        wanted = category if category in CATEGORIES else ""
        views = [
            model_view(model)
            for slug, model in sorted(gateway.catalog.items())
            if (not needle or needle in slug.lower()) and (not wanted or model.category == wanted)
        ]
        template = "fragments/models_rows.html" if is_htmx(request) else "models.html"
        return page(
            request,
            viewer,
            template,
            title="Models",
            active="models",
            models=views,
            total=len(gateway.catalog),
            q=q or "",
            category=wanted,
            categories=CATEGORIES,
        )
