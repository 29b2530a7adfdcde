"""``/api/projects/{project_id}/analytics/``: a project's proxy-function calls, thin over
:mod:`functions.analytics`.

Every role may read it (``Permission.VIEW``); a caller sees only its own account's projects, and
another account's project is a 404 like one that does not exist. Calls that finished before the
request are in it: the account's buffered invocation records are written first (read your
writes), as ``/api/usage/`` does for usage records.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import FromPath, FromQuery, Parameter

from functions.analytics import DEFAULT_DAYS, MAX_DAYS, Analytics, Scope, project_analytics
from functions.directory import canonical_function_id
from gateway.api.deps import Caller, Injected, requires
from gateway.api.openapi import MEMBER_AUTH, errors
from gateway.errors import InvalidRequest
from gateway.state import GatewayState
from gateway.validation import PathId, QueryId, QueryText
from keys.roles import Permission

Days = Annotated[int, Parameter(ge=1, le=MAX_DAYS)]


class FunctionAnalyticsController(Controller):
    path = "/api/projects"
    tags = ["proxy functions"]
    security = MEMBER_AUTH

    @get(
        "/{project_id:int}/analytics/",
        guards=[requires(Permission.VIEW)],
        operation_id="get_project_analytics",
        responses=errors(400, 401, 403, 404),
    )
    async def analytics(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        project_id: FromPath[PathId],
        environment_id: FromQuery[QueryId] = None,
        function_id: FromQuery[QueryText] = None,
        days: FromQuery[Days] = DEFAULT_DAYS,
    ) -> Analytics:
        """Calls over time (per day, per hour up to 2 days), status classes, p50/p95 latency, the
        top 5 functions, error types and this month's invocations, for the project or one of its
        environments or functions, over the last ``days`` days (1–90, default 30)."""
        canonical = None
        if function_id is not None:
            canonical = canonical_function_id(function_id)
            if canonical is None:
                raise InvalidRequest("function_id must be a function's id (a UUID)", param="function_id")
        scope = Scope(caller.account_id, project_id, environment_id, canonical)
        await gateway.meter.settled(caller.account_id)  # read your writes: calls that finished are in
        async with gateway.sessionmaker() as session:
            return await project_analytics(session, scope, days=days, now=gateway.now())
