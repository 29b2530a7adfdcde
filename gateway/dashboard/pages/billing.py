"""Credits (balance, ledger, low-credit threshold, webhook secret and deliveries), Billing (the
packages on sale, Buy credits, the account's purchases) and Usage (a filterable, paged table and
charts over time). Reads use the same report queries as ``/api/credits`` and ``/api/usage``
(:mod:`billing.reports`); writes go through :mod:`gateway.api.actions`, a checkout through the
same service as ``POST /api/billing/checkout/`` (:mod:`billing.payments.service`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit

from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery, Parameter
from litestar.response import Template

from billing.bounds import INT64_MAX, NO_CONTROL
from billing.models import Account
from billing.money import format_credits
from billing.payments.packages import find_package
from billing.payments.provider import CheckoutFailed, PaymentProvider
from billing.payments.service import checkout_provider, open_checkout
from billing.reports import SeriesBy, UsageFilter, ledger_page, payments_page, usage_page, usage_series
from gateway.api.actions import set_low_credit_threshold, webhook_deliveries, webhook_secret
from gateway.api.deps import Injected
from gateway.dashboard.charts import stacked_chart
from gateway.dashboard.nav import BILLING_PATH
from gateway.dashboard.render import field_errors, is_htmx, page, see_other
from gateway.dashboard.session import Viewer, read_form
from gateway.state import GatewayState
from gateway.validation import QueryId, QueryText
from keys.errors import KeyError_
from keys.management import list_keys
from keys.restrictions import RestrictionError
from keys.roles import Permission, require

PAGE_SIZE = 50
CHART_DAYS = 30  # the charts' range when none is asked for
MAX_CHART_DAYS = 366
DayText = Annotated[str | None, Parameter(max_length=10, pattern=NO_CONTROL)]
# A select's "All" sends key_id= (empty): a digits-only text, read as an id when present.
KeyIdText = Annotated[str | None, Parameter(max_length=19, pattern=r"^[0-9]*$")]


async def _credits_page(
    request: Request[Any, Any, Any],
    state: GatewayState,
    viewer: Viewer,
    before_id: int | None,
    *,
    errors: dict[str, str] | None = None,
    threshold_text: str | None = None,
    status_code: int = 200,
) -> Template:
    account_id = viewer.caller.account_id
    await state.meter.settled(account_id)  # read your writes: requests that finished are in
    async with state.sessionmaker() as session:
        account = await session.get(Account, account_id)
        assert account is not None
        entries = await ledger_page(session, account_id, limit=PAGE_SIZE, before_id=before_id)
    deliveries = await webhook_deliveries(state, viewer.caller, limit=20) if viewer.can(Permission.VIEW_AUDIT) else []
    return page(
        request,
        viewer,
        "credits.html",
        title="Credits",
        active="credits",
        account=account,
        available=await state.meter.available_micro(account_id),
        entries=entries,
        before_id=before_id,
        next_before_id=entries[-1].id if len(entries) == PAGE_SIZE else None,
        deliveries=deliveries,
        errors=errors or {},
        threshold_text=threshold_text
        if threshold_text is not None
        else format_credits(account.low_credit_threshold_micro),
        status_code=status_code,
    )


def _purchasable(state: GatewayState) -> tuple[PaymentProvider | None, set[str]]:
    """The checkout provider, and the packages it sells (a package needs its price id there)."""
    provider = checkout_provider(state.payments, state.settings.payments.checkout_provider)
    if provider is None:
        return None, set()
    return provider, {p.id for p in state.settings.credit_packages if p.provider_price_ids.get(provider.name)}


class BillingPages(Controller):
    """Buying credits: a plain form per package posts to ``/billing/checkout``, which opens the
    checkout at the provider and answers a page that sends the browser on to the provider's
    checkout (a meta refresh, and a link), so it works without JavaScript. Not a 303: the
    dashboard's CSP has ``form-action 'self'``, which Chromium enforces on a form submission's
    redirects, so a 303 to the provider is blocked. The buyer comes back to
    ``/billing?checkout=success`` (or ``cancelled``); the credits arrive with the provider's
    webhook, so the page says so instead of promising them."""

    path = BILLING_PATH
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:billing")
    async def billing(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        checkout: FromQuery[QueryText] = None,
    ) -> Template:
        require(viewer.caller.role, Permission.VIEW)
        account_id = viewer.caller.account_id
        await gateway.meter.settled(account_id)
        async with gateway.sessionmaker() as session:
            account = await session.get(Account, account_id)
            assert account is not None
            payments = await payments_page(session, account_id, limit=PAGE_SIZE)
        provider, purchasable = _purchasable(gateway)
        packages = gateway.settings.credit_packages
        return page(
            request,
            viewer,
            "billing.html",
            title="Billing",
            active="billing",
            account=account,
            packages=packages,
            package_names={p.id: p.name for p in packages},
            provider=provider.name if provider is not None else "",
            purchasable=purchasable,
            payments=payments,
            checkout=checkout if checkout in ("success", "cancelled") else "",
        )

    @post("/checkout", status_code=200)
    async def checkout(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Template:
        form = await read_form(request, viewer)
        require(viewer.caller.role, Permission.BILLING)
        value = form.get("package")
        package_id = value.strip()[:64] if isinstance(value, str) else ""
        base = str(request.base_url).rstrip("/") + BILLING_PATH
        settings = gateway.settings.payments
        provider = checkout_provider(gateway.payments, settings.checkout_provider)
        session = await open_checkout(
            provider,
            gateway.settings.credit_packages,
            package_id,
            account_id=viewer.caller.account_id,
            customer_email=viewer.principal.email,
            success_url=settings.success_url or f"{base}?checkout=success",
            cancel_url=settings.cancel_url or f"{base}?checkout=cancelled",
        )
        if urlsplit(session.url).scheme not in ("https", "http"):  # a link we render: never javascript:
            raise CheckoutFailed("the payment provider answered without a checkout page")
        assert provider is not None  # open_checkout refused otherwise
        return page(
            request,
            viewer,
            "checkout_redirect.html",
            title="Continue to checkout",
            active="billing",
            checkout_url=session.url,
            provider=provider.name,
            package=find_package(gateway.settings.credit_packages, package_id),
        )


class CreditsPages(Controller):
    path = "/credits"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:credits")
    async def credits(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        before_id: FromQuery[QueryId] = None,
    ) -> Template:
        return await _credits_page(request, gateway, viewer, before_id)

    @post("/threshold", status_code=303)
    async def threshold(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        value = form.get("low_credits_threshold")
        text = value.strip()[:40] if isinstance(value, str) else ""
        try:
            await set_low_credit_threshold(gateway, viewer.caller, text)
        except (RestrictionError, KeyError_) as error:
            if getattr(error, "status_code", 400) == 403:
                raise
            return await _credits_page(
                request, gateway, viewer, None, errors=field_errors(error), threshold_text=text, status_code=422
            )
        return see_other(request, viewer, "/credits")

    @get("/webhook-secret")
    async def show_secret(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Template:
        return self._secret(request, viewer, await webhook_secret(gateway, viewer.caller, rotate=False), rotated=False)

    @post("/webhook-secret/rotate", status_code=201)
    async def rotate_secret(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Template:
        await read_form(request, viewer)
        return self._secret(request, viewer, await webhook_secret(gateway, viewer.caller, rotate=True), rotated=True)

    def _secret(self, request: Request[Any, Any, Any], viewer: Viewer, secret: str, *, rotated: bool) -> Template:
        return page(
            request,
            viewer,
            "fragments/webhook_secret.html" if is_htmx(request) else "dialog_page.html",
            fragment="fragments/webhook_secret.html",
            title="Webhook signing secret",
            active="credits",
            secret=secret,
            rotated=rotated,
        )


def short_credits(micro: int) -> str:
    """Credits to three places, for chart labels."""
    return format(Decimal(micro).scaleb(-6).quantize(Decimal("0.001")).normalize(), "f")


def _day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


class UsagePages(Controller):
    path = "/usage"
    tags = ["dashboard"]
    include_in_schema = False

    @get("/", name="dashboard:usage")
    async def usage(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        key_id: FromQuery[KeyIdText] = None,
        model: FromQuery[QueryText] = None,
        end_user: FromQuery[QueryText] = None,
        since: FromQuery[DayText] = None,
        until: FromQuery[DayText] = None,
        by: FromQuery[QueryText] = None,
        before_id: FromQuery[QueryId] = None,
    ) -> Template:
        require(viewer.caller.role, Permission.VIEW)
        account_id = viewer.caller.account_id
        today = gateway.now().astimezone(UTC).date()
        last = _day(until) or today
        first = _day(since) if since is not None else last - timedelta(days=CHART_DAYS - 1)
        key = int(key_id) if key_id else None
        usage_filter = UsageFilter(
            key if key and key <= INT64_MAX else None,
            model or None,
            end_user or None,
            _midnight(first) if first else None,
            _midnight(last + timedelta(days=1)),
        )
        await gateway.meter.settled(account_id)
        group_by: SeriesBy = "key" if by == "key" else "model"
        async with gateway.sessionmaker() as session:
            records = await usage_page(session, account_id, usage_filter, limit=PAGE_SIZE, before_id=before_id)
            keys = await list_keys(session, account_id)
            points = await usage_series(session, account_id, usage_filter, group_by) if before_id is None else []
        key_names = {str(key.id): key.name for key in keys}
        chart_first = first or (points[0].day if points else last)
        chart_first = max(chart_first, last - timedelta(days=MAX_CHART_DAYS - 1))

        def label(group: str) -> str:
            if group_by == "model":
                return group or "(none)"
            return key_names.get(group, f"key {group}" if group else "(no key)")

        charts = []
        if before_id is None:
            charts = [
                stacked_chart(
                    f"Credits per day by {group_by}",
                    points,
                    first=chart_first,
                    last=last,
                    value=lambda p: p.credits_micro,
                    label=label,
                    fmt=short_credits,
                ),
                stacked_chart(
                    f"Requests per day by {group_by}",
                    points,
                    first=chart_first,
                    last=last,
                    value=lambda p: p.requests,
                    label=label,
                    fmt=str,
                ),
            ]
        filters = {
            "key_id": key or "",
            "model": model or "",
            "end_user": end_user or "",
            "since": first.isoformat() if first else "",
            "until": until or "",
            "by": group_by,
        }
        models = sorted(gateway.catalog)
        return page(
            request,
            viewer,
            "usage.html",
            title="Usage",
            active="usage",
            records=records,
            key_names={key.id: key.name for key in keys},
            keys=keys,
            models=models,
            filters=filters,
            charts=charts,
            before_id=before_id,
            next_before_id=records[-1].id if len(records) == PAGE_SIZE else None,
        )
