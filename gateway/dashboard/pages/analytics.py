"""A project's proxy-function analytics (every role): calls over time as a server-drawn SVG
chart (like the usage charts), status classes, p50 / p95 latency and the top functions, for the
project or one environment or function, over the last 7, 30 or 90 days. The figures come from
:func:`functions.analytics.project_analytics`, the function ``/api/projects/{id}/analytics/``
calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy import select

from billing.reports import SeriesPoint
from functions.analytics import Scope, project_analytics
from functions.directory import canonical_function_id
from functions.models import ProxyFunction
from functions.projects import get_project
from gateway.api.deps import Injected
from gateway.dashboard.charts import stacked_chart
from gateway.dashboard.pages.projects import sorted_environments
from gateway.dashboard.render import page
from gateway.dashboard.session import Viewer
from gateway.state import GatewayState
from gateway.validation import PathId, QueryId, QueryText

__all__ = ["AnalyticsPages"]

DAY_CHOICES = (7, 30, 90)


def _share(part: int, whole: int) -> int:
    """A percentage rounded to the 5 % steps the CSS width classes have."""
    return 0 if whole <= 0 else round(part * 20 / whole) * 5


class AnalyticsPages(Controller):
    path = "/projects/{project_id:int}/analytics"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/")
    async def analytics(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        project_id: FromPath[PathId],
        environment_id: FromQuery[QueryId] = None,
        function_id: FromQuery[QueryText] = None,
        days: FromQuery[QueryId] = 30,
    ) -> Template:
        span = days if days in DAY_CHOICES else 30
        account_id = viewer.caller.account_id
        chosen_function = canonical_function_id(function_id) if function_id else None
        await gateway.meter.settled(account_id)  # calls that finished are counted
        async with gateway.sessionmaker() as session:
            project = await get_project(session, account_id, project_id)
            environments = sorted_environments(project)
            environment = next((e for e in environments if e.id == environment_id), None)
            query = select(ProxyFunction.id, ProxyFunction.name).where(
                ProxyFunction.account_id == account_id, ProxyFunction.project_id == project_id
            )
            if environment is not None:
                query = query.where(ProxyFunction.environment_id == environment.id)
            rows = await session.execute(query.order_by(ProxyFunction.name).limit(500))
            functions = [(str(fid), str(name)) for fid, name in rows]
            if chosen_function not in {fid for fid, _name in functions}:
                chosen_function = None
            scope = Scope(account_id, project_id, environment.id if environment else None, chosen_function)
            figures = await project_analytics(session, scope, days=span, now=gateway.now())
        points = []
        for bucket in figures.series:
            day = datetime.fromisoformat(bucket.start).astimezone(UTC).date()
            points.append(SeriesPoint(day, "succeeded", bucket.calls - bucket.errors, 0))
            points.append(SeriesPoint(day, "failed (4xx/5xx)", bucket.errors, 0))
        last = gateway.now().astimezone(UTC).date()
        chart = stacked_chart(
            f"Invocation trends (last {span} days)",
            points,
            first=last - timedelta(days=span - 1),
            last=last,
            value=lambda point: point.requests,
            label=lambda group: group,
            fmt=lambda n: f"{n:,}",
        )
        classes = figures.status_classes
        status = [("2xx", classes.s2xx), ("3xx", classes.s3xx), ("4xx", classes.s4xx), ("5xx", classes.s5xx)]
        top_calls = max((f.calls for f in figures.top_functions), default=0)
        return page(
            request,
            viewer,
            "analytics.html",
            title=f"{project.name}: analytics",
            active="projects",
            project=project,
            current=environment,
            section="analytics",
            analytics_available=True,
            environments=environments,
            functions=functions,
            filters={
                "environment_id": environment.id if environment else None,
                "function_id": chosen_function,
                "days": span,
            },
            day_choices=DAY_CHOICES,
            figures=figures,
            charts=[chart],
            status=status,
            share=_share,
            top_calls=top_calls,
        )
