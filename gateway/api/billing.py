"""``/api/credits`` and ``/api/usage``: an account's balance, ledger and usage, for any member."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, get_args

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery
from sqlalchemy import select

from billing.models import Account, LedgerEntry, WebhookDelivery, WebhookEvent
from billing.money import format_credits
from billing.reports import GroupBy, UsageFilter, ledger_page, usage_page, usage_summary
from gateway.api.auth import management_caller
from gateway.api.views import usage_view
from gateway.errors import InvalidRequest
from gateway.state import GatewayState
from gateway.validation import Limit, QueryId, QueryText, Slug
from keys.roles import Permission

_encoder = msgspec.json.Encoder()


def _json(payload: Any, status_code: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status_code, media_type="application/json")


def _when(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise InvalidRequest(f"{param} must be an ISO 8601 time, got {value!r}", param=param) from error
    if moment.tzinfo is None:
        raise InvalidRequest(f"{param} needs a time zone (e.g. 2026-11-01T00:00:00Z)", param=param)
    return moment


def _limit(value: int) -> int:
    if not 1 <= value <= 500:
        raise InvalidRequest("limit must be between 1 and 500", param="limit")
    return value


def ledger_view(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": format_credits(entry.amount_micro),
        "balance_after": format_credits(entry.balance_after_micro),
        "request_id": entry.request_id,
        "reason": entry.reason,
        "created_at": entry.created_at.isoformat(),
    }


class CreditsController(Controller):
    path = "/api/credits"

    @get("/")
    async def credits(
        self, request: Request[Any, Any, Any], limit: FromQuery[Limit] = 50, before_id: FromQuery[QueryId] = None
    ) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW)
        await state.meter.settled(caller.account_id)  # read your writes: requests that finished are in
        async with state.sessionmaker() as session:
            account = await session.get(Account, caller.account_id)
            assert account is not None
            entries = await ledger_page(session, caller.account_id, limit=_limit(limit), before_id=before_id)
        return _json(
            {
                "balance": format_credits(account.balance_micro),
                "available": format_credits(await state.meter.available_micro(caller.account_id)),
                "low_credits_threshold": format_credits(account.low_credit_threshold_micro),
                "ledger": [ledger_view(e) for e in entries],
                "next_before_id": entries[-1].id if len(entries) == limit else None,
            }
        )


class UsageController(Controller):
    path = "/api/usage"

    @get("/")
    async def usage(
        self,
        request: Request[Any, Any, Any],
        key_id: FromQuery[QueryId] = None,
        model: FromQuery[QueryText] = None,
        end_user_id: FromQuery[QueryText] = None,
        since: FromQuery[QueryText] = None,
        until: FromQuery[QueryText] = None,
        limit: FromQuery[Limit] = 100,
        before_id: FromQuery[QueryId] = None,
    ) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW)
        await state.meter.settled(caller.account_id)
        usage_filter = UsageFilter(key_id, model, end_user_id, _when(since, "since"), _when(until, "until"))
        async with state.sessionmaker() as session:
            records = await usage_page(
                session, caller.account_id, usage_filter, limit=_limit(limit), before_id=before_id
            )
        return _json(
            {
                "data": [usage_view(r) for r in records],
                "next_before_id": records[-1].id if len(records) == limit else None,
            }
        )

    @get("/summary/")
    async def summary(
        self,
        request: Request[Any, Any, Any],
        group_by: FromQuery[Slug] = "day",
        key_id: FromQuery[QueryId] = None,
        model: FromQuery[QueryText] = None,
        end_user_id: FromQuery[QueryText] = None,
        since: FromQuery[QueryText] = None,
        until: FromQuery[QueryText] = None,
    ) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW)
        await state.meter.settled(caller.account_id)
        if group_by not in get_args(GroupBy):
            raise InvalidRequest(f"group_by must be one of {', '.join(get_args(GroupBy))}", param="group_by")
        usage_filter = UsageFilter(key_id, model, end_user_id, _when(since, "since"), _when(until, "until"))
        async with state.sessionmaker() as session:
            rows = await usage_summary(session, caller.account_id, usage_filter, group_by)  # type: ignore[arg-type]
        for row in rows:
            row["credits_used"] = format_credits(row.pop("credits_micro"))
        return _json({"group_by": group_by, "data": rows})


class WebhooksController(Controller):
    """The account's webhook signing secret (owners and admins) and recent deliveries."""

    path = "/api/webhooks"

    @get("/secret/")
    async def secret(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MANAGE_KEYS)
        return _json({"secret": await _account_secret(state, caller.account_id, rotate=False)})

    @post("/secret/rotate/")
    async def rotate(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.MANAGE_KEYS)
        return _json({"secret": await _account_secret(state, caller.account_id, rotate=True)}, 201)

    @get("/deliveries/")
    async def deliveries(self, request: Request[Any, Any, Any], limit: FromQuery[Limit] = 50) -> Response[bytes]:
        state, caller = await management_caller(request, Permission.VIEW_AUDIT)
        async with state.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(WebhookDelivery, WebhookEvent.event)
                    .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                    .where(WebhookEvent.account_id == caller.account_id)
                    .order_by(WebhookDelivery.id.desc())
                    .limit(_limit(limit))
                )
            ).all()
        return _json(
            {
                "data": [
                    {
                        "id": delivery.id,
                        "event": event,
                        "url": delivery.url,
                        "status": delivery.status,
                        "attempts": delivery.attempts,
                        "last_status": delivery.last_status,
                        "last_error": delivery.last_error,
                        "next_attempt_at": delivery.next_attempt_at.isoformat(),
                        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
                    }
                    for delivery, event in rows
                ]
            }
        )


async def _account_secret(state: GatewayState, account_id: int, *, rotate: bool) -> str:
    async with state.sessionmaker() as session:
        account = await session.get(Account, account_id, with_for_update=True)
        assert account is not None
        if rotate or not account.webhook_secret:
            account.webhook_secret = "whsec_" + secrets.token_hex(24)
            await session.commit()
        return account.webhook_secret
