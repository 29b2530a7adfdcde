"""How a proxy function is shown: to API callers and the CLI, and to the audit trail.

:class:`FunctionRead` is every column but the token (the token travels only in
:class:`FunctionCreated`, the answers to a regeneration and Copy Token). :func:`audit_view` is
what the audit trail keeps: header *names*, mappings without their templates, whether a body
template is set, never a value that may hold a credential.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from functions.models import ProxyFunction

__all__ = ["FunctionCreated", "FunctionRead", "MappingRead", "audit_view", "function_read", "utc"]


class MappingRead(msgspec.Struct):
    variable_id: int
    inject_as: str
    key: str
    template: str


class FunctionRead(msgspec.Struct):
    """A function as the API and the CLI show it: every column but the token."""

    id: str
    url_path: str  # where it is called: /fn/{id}
    project_id: int
    environment_id: int
    name: str
    slug: str
    description: str
    enabled: bool
    target_url: str
    method: str
    headers: dict[str, str]
    secret_mappings: list[MappingRead]
    allowed_origins: list[str]
    pass_through_body: bool
    body_template: Any
    rate_limit_per_minute: int | None
    template_id: str
    forward_path: bool
    forward_query: bool
    timeout_ms: int
    created_by: str
    created_at: str
    updated_at: str


class FunctionCreated(FunctionRead):
    """The create answer: the one (with regenerate and copy-token) that carries the token."""

    token: str


def function_read(row: ProxyFunction) -> FunctionRead:
    return FunctionRead(
        id=row.id,
        url_path=f"/fn/{row.id}",
        project_id=row.project_id,
        environment_id=row.environment_id,
        name=row.name,
        slug=row.slug,
        description=row.description,
        enabled=row.enabled,
        target_url=row.target_url,
        method=row.method,
        headers=dict(row.headers),
        secret_mappings=[
            MappingRead(int(m["variable_id"]), str(m["inject_as"]), str(m["key"]), str(m.get("template") or ""))
            for m in row.secret_mappings
        ],
        allowed_origins=list(row.allowed_origins),
        pass_through_body=row.pass_through_body,
        body_template=row.body_template,
        rate_limit_per_minute=row.rate_limit_per_minute,
        template_id=row.template_id,
        forward_path=row.forward_path,
        forward_query=row.forward_query,
        timeout_ms=row.timeout_ms,
        created_by=row.created_by,
        created_at=utc(row.created_at).isoformat(),
        updated_at=utc(row.updated_at).isoformat(),
    )


def utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def audit_view(row: ProxyFunction) -> dict[str, Any]:
    """What the audit trail keeps of a function: never a header value, a mapping's template,
    the body template's content or the token (any of them may hold a credential)."""
    return {
        "name": row.name,
        "slug": row.slug,
        "target_url": row.target_url,
        "method": row.method,
        "enabled": row.enabled,
        "allowed_origins": list(row.allowed_origins),
        "header_names": sorted(row.headers),
        "secret_mappings": [
            {
                "variable_id": int(m["variable_id"]),
                "inject_as": str(m["inject_as"]),
                "key": str(m["key"]),
                "templated": bool(m.get("template")),
            }
            for m in row.secret_mappings
        ],
        "rate_limit_per_minute": row.rate_limit_per_minute,
        "pass_through_body": row.pass_through_body,
        "has_body_template": row.body_template is not None,
        "forward_path": row.forward_path,
        "forward_query": row.forward_query,
        "timeout_ms": row.timeout_ms,
        "template_id": row.template_id,
    }
