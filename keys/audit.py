"""The audit trail: key and membership changes with actor, time, and before/after values.

Events are added to the caller's session so they commit (or roll back) with the change they
describe. Values are made JSON-safe; secrets never reach here (keys are stored hashed and the
plaintext exists only in the create response).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keys.models import AuditEvent


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def record_event(
    session: AsyncSession,
    *,
    account_id: int,
    actor: str,
    action: str,
    target_type: str = "",
    target_id: str | int = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        account_id=account_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        before=_json_safe(before or {}),
        after=_json_safe(after or {}),
    )
    session.add(event)
    return event


async def list_events(
    session: AsyncSession,
    account_id: int,
    *,
    limit: int = 100,
    before_id: int | None = None,
    target_type: str | None = None,
) -> list[AuditEvent]:
    """Newest first; page with ``before_id`` = the last id of the previous page; ``target_type``
    keeps only the events about one kind of thing (``function``, ``key``, ``variable``…)."""
    query = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if target_type:
        query = query.where(AuditEvent.target_type == target_type)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(await session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))
