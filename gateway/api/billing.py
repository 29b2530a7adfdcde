"""``/api/credits`` and ``/api/usage``: an account's balance, ledger and usage, for any member;
``/api/webhooks``: the account's webhook signing secret and recent deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import get_args

import msgspec
from litestar import Controller, get, post, put
from litestar.params import FromQuery, JSONBody

from billing.bounds import Credits as CreditsAmount
from billing.models import Account, LedgerEntry, Payment, WebhookDelivery
from billing.money import format_credits
from billing.payments.packages import format_minor
from billing.reports import GroupBy, UsageFilter, ledger_page, receipts_for, usage_page, usage_summary
from gateway.api.actions import set_low_credit_threshold, webhook_deliveries, webhook_secret
from gateway.api.deps import Caller, Injected, requires
from gateway.api.openapi import MEMBER_AUTH, errors
from gateway.api.views import UsageRead, usage_read
from gateway.errors import InvalidRequest
from gateway.state import GatewayState
from gateway.validation import Limit, QueryId, QueryText, Slug
from keys.roles import Permission


class ReceiptRead(msgspec.Struct):
    """The payment behind a ``purchase`` or ``reversal`` entry: the money, as the provider took
    (or gave back) it. ``amount_paid_minor`` is in the currency's minor unit (cents), negative for
    a refund or chargeback; ``amount_paid`` is the same as a decimal string."""

    provider: str
    package_id: str
    amount_paid_minor: int
    amount_paid: str
    currency: str
    reference: str  # the provider's id for the purchase (a checkout session, an order)


class LedgerRead(msgspec.Struct):
    id: int
    kind: str
    amount: str  # credits, as a decimal string (negative for a debit)
    balance_after: str
    request_id: str | None
    reason: str
    created_at: str
    receipt: ReceiptRead | None = None  # purchases and reversals only


class Credits(msgspec.Struct):
    balance: str
    available: str  # the balance less what in-flight requests hold
    low_credits_threshold: str
    ledger: list[LedgerRead]
    next_before_id: int | None  # pass as before_id for the next page; null on the last one


class ThresholdUpdate(msgspec.Struct, forbid_unknown_fields=True):
    low_credits_threshold: CreditsAmount


class ThresholdRead(msgspec.Struct):
    low_credits_threshold: str


class UsagePage(msgspec.Struct):
    data: list[UsageRead]
    next_before_id: int | None


class UsageGroup(msgspec.Struct):
    group: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    credits_used: str


class UsageSummary(msgspec.Struct):
    group_by: str
    data: list[UsageGroup]


class WebhookSecret(msgspec.Struct):
    secret: str


class DeliveryRead(msgspec.Struct):
    id: int
    event: str
    url: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str
    next_attempt_at: str
    delivered_at: str | None


class DeliveryList(msgspec.Struct):
    data: list[DeliveryRead]


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


def delivery_read(delivery: WebhookDelivery, event: str) -> DeliveryRead:
    return DeliveryRead(
        id=delivery.id,
        event=event,
        url=delivery.url,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at.isoformat(),
        delivered_at=delivery.delivered_at.isoformat() if delivery.delivered_at else None,
    )


def receipt_read(payment: Payment) -> ReceiptRead:
    return ReceiptRead(
        provider=payment.provider,
        package_id=payment.package_id,
        amount_paid_minor=payment.amount_minor,
        amount_paid=format_minor(payment.amount_minor, payment.currency),
        currency=payment.currency,
        reference=payment.reference,
    )


def ledger_read(entry: LedgerEntry, payment: Payment | None = None) -> LedgerRead:
    return LedgerRead(
        id=entry.id,
        kind=entry.kind,
        amount=format_credits(entry.amount_micro),
        balance_after=format_credits(entry.balance_after_micro),
        request_id=entry.request_id,
        reason=entry.reason,
        created_at=entry.created_at.isoformat(),
        receipt=receipt_read(payment) if payment is not None else None,
    )


class CreditsController(Controller):
    path = "/api/credits"
    tags = ["billing"]
    security = MEMBER_AUTH

    @get("/", guards=[requires(Permission.VIEW)], operation_id="get_credits", responses=errors(400, 401, 403))
    async def credits(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        limit: FromQuery[Limit] = 50,
        before_id: FromQuery[QueryId] = None,
    ) -> Credits:
        """The balance and the ledger, newest first. Entries of kind ``purchase`` (credits bought
        through a payment provider) and ``reversal`` (taken back by its refund or chargeback)
        carry a ``receipt``: the money paid or given back, in the currency's minor unit."""
        await gateway.meter.settled(caller.account_id)  # read your writes: requests that finished are in
        async with gateway.sessionmaker() as session:
            account = await session.get(Account, caller.account_id)
            assert account is not None
            entries = await ledger_page(session, caller.account_id, limit=_limit(limit), before_id=before_id)
            receipts = await receipts_for(session, caller.account_id, [e.id for e in entries])
        return Credits(
            balance=format_credits(account.balance_micro),
            available=format_credits(await gateway.meter.available_micro(caller.account_id)),
            low_credits_threshold=format_credits(account.low_credit_threshold_micro),
            ledger=[ledger_read(e, receipts.get(e.id)) for e in entries],
            next_before_id=entries[-1].id if len(entries) == limit else None,
        )

    @put(
        "/threshold/",
        guards=[requires(Permission.BILLING)],
        operation_id="set_low_credits_threshold",
        responses=errors(400, 401, 403, 413),
    )
    async def set_threshold(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], data: JSONBody[ThresholdUpdate]
    ) -> ThresholdRead:
        """Set the balance below which the ``low_credits`` webhook fires (owners only)."""
        micro = await set_low_credit_threshold(gateway, caller, data.low_credits_threshold)
        return ThresholdRead(format_credits(micro))


class UsageController(Controller):
    path = "/api/usage"
    tags = ["billing"]
    security = MEMBER_AUTH

    @get("/", guards=[requires(Permission.VIEW)], operation_id="list_usage", responses=errors(400, 401, 403))
    async def usage(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        key_id: FromQuery[QueryId] = None,
        model: FromQuery[QueryText] = None,
        end_user_id: FromQuery[QueryText] = None,
        since: FromQuery[QueryText] = None,
        until: FromQuery[QueryText] = None,
        limit: FromQuery[Limit] = 100,
        before_id: FromQuery[QueryId] = None,
    ) -> UsagePage:
        await gateway.meter.settled(caller.account_id)
        usage_filter = UsageFilter(key_id, model, end_user_id, _when(since, "since"), _when(until, "until"))
        async with gateway.sessionmaker() as session:
            records = await usage_page(
                session, caller.account_id, usage_filter, limit=_limit(limit), before_id=before_id
            )
        return UsagePage(
            data=[usage_read(r) for r in records],
            next_before_id=records[-1].id if len(records) == limit else None,
        )

    @get(
        "/summary/", guards=[requires(Permission.VIEW)], operation_id="summarize_usage", responses=errors(400, 401, 403)
    )
    async def summary(
        self,
        gateway: Injected[GatewayState],
        caller: Injected[Caller],
        group_by: FromQuery[Slug] = "day",
        key_id: FromQuery[QueryId] = None,
        model: FromQuery[QueryText] = None,
        end_user_id: FromQuery[QueryText] = None,
        since: FromQuery[QueryText] = None,
        until: FromQuery[QueryText] = None,
    ) -> UsageSummary:
        await gateway.meter.settled(caller.account_id)
        if group_by not in get_args(GroupBy):
            raise InvalidRequest(f"group_by must be one of {', '.join(get_args(GroupBy))}", param="group_by")
        usage_filter = UsageFilter(key_id, model, end_user_id, _when(since, "since"), _when(until, "until"))
        async with gateway.sessionmaker() as session:
            rows = await usage_summary(session, caller.account_id, usage_filter, group_by)  # type: ignore[arg-type]
        return UsageSummary(
            group_by,
            [
                UsageGroup(
                    group=row["group"],
                    requests=row["requests"],
                    input_tokens=row["input_tokens"],
                    output_tokens=row["output_tokens"],
                    credits_used=format_credits(row["credits_micro"]),
                )
                for row in rows
            ],
        )


class WebhooksController(Controller):
    """The account's webhook signing secret (owners and admins) and recent deliveries."""

    path = "/api/webhooks"
    tags = ["webhooks"]
    security = MEMBER_AUTH

    @get(
        "/secret/",
        guards=[requires(Permission.MANAGE_KEYS)],
        operation_id="get_webhook_secret",
        responses=errors(401, 403),
    )
    async def secret(self, gateway: Injected[GatewayState], caller: Injected[Caller]) -> WebhookSecret:
        return WebhookSecret(await webhook_secret(gateway, caller, rotate=False))

    @post(
        "/secret/rotate/",
        status_code=201,
        guards=[requires(Permission.MANAGE_KEYS)],
        operation_id="rotate_webhook_secret",
        responses=errors(401, 403),
    )
    async def rotate(self, gateway: Injected[GatewayState], caller: Injected[Caller]) -> WebhookSecret:
        return WebhookSecret(await webhook_secret(gateway, caller, rotate=True))

    @get(
        "/deliveries/",
        guards=[requires(Permission.VIEW_AUDIT)],
        operation_id="list_webhook_deliveries",
        responses=errors(400, 401, 403),
    )
    async def deliveries(
        self, gateway: Injected[GatewayState], caller: Injected[Caller], limit: FromQuery[Limit] = 50
    ) -> DeliveryList:
        rows = await webhook_deliveries(gateway, caller, limit=_limit(limit))
        return DeliveryList([delivery_read(delivery, event) for delivery, event in rows])
