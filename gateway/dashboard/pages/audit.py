"""The audit log (owners and admins): the account's events newest first, paged on the server,
filterable by what they are about, each with its before / after shown compactly. The trail
never holds a secret (the services write names, ids and flags), so nothing here is masked."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery, Parameter
from litestar.response import Template

from gateway.api.deps import Injected
from gateway.dashboard.render import page
from gateway.dashboard.session import Viewer
from gateway.state import GatewayState
from gateway.validation import QueryId
from keys.audit import list_events
from keys.roles import Permission, require

__all__ = ["AuditPages", "compact"]

PAGE_SIZE = 50
TARGET_TYPES = ("project", "environment", "variable", "function", "key", "member", "invitation", "account")
TargetType = Annotated[str | None, Parameter(max_length=32, pattern=r"^[a-z_]*\Z")]


def compact(value: Any) -> str:
    """A before / after dict on one line: ``name=a, enabled=false`` (JSON for nested values)."""
    if not value:
        return ""
    if not isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    parts = []
    for key, item in value.items():
        shown = item if isinstance(item, str) else msgspec.json.encode(item).decode()
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


class AuditPages(Controller):
    path = "/audit"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:audit")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        target_type: FromQuery[TargetType] = None,
        before_id: FromQuery[QueryId] = None,
    ) -> Template:
        require(viewer.caller.role, Permission.VIEW_AUDIT)
        async with gateway.sessionmaker() as session:
            events = await list_events(
                session,
                viewer.caller.account_id,
                limit=PAGE_SIZE + 1,
                before_id=before_id,
                target_type=target_type or None,
            )
        more = len(events) > PAGE_SIZE
        events = events[:PAGE_SIZE]
        return page(
            request,
            viewer,
            "audit.html",
            title="Audit log",
            active="audit",
            events=events,
            compact=compact,
            target_type=target_type or "",
            target_types=TARGET_TYPES,
            before_id=before_id,
            next_before_id=events[-1].id if more and events else None,
        )
