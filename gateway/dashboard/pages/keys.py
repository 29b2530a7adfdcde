"""The Keys page: list, create (the key shown once), settings with every restriction, delete,
and minting a test ``bt-`` token. Every write goes through :mod:`gateway.api.actions`, the same
functions ``/api/keys`` calls, which check the role whatever the page showed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath
from litestar.response import Template

from billing.money import format_credits
from billing.reports import last_used_by_key
from gateway.api.actions import create_account_key, delete_account_key, mint_browser_token, update_account_key
from gateway.api.deps import Injected
from gateway.dashboard.render import field_errors, is_htmx, page, see_other
from gateway.dashboard.session import Viewer, read_form
from gateway.errors import GatewayError
from gateway.state import GatewayState
from gateway.validation import PathId
from keys.browser_tokens import DEFAULT_TTL_S, MAX_TTL_S, MIN_TTL_S
from keys.errors import KeyError_
from keys.management import KeyCreate, KeyUpdate, get_key, list_keys
from keys.models import ApiKey, SpendingPeriod
from keys.restrictions import RestrictionError
from keys.roles import Permission, require

CATEGORIES = ("text", "image", "video", "stt", "tts")
LIST_FIELDS = ("allowed_models", "allowed_ips", "allowed_origins", "blocked_countries")
TTL_CHOICES = ((60, "1 minute"), (600, "10 minutes"), (3600, "1 hour"), (86400, "24 hours"))
_SPLIT = re.compile(r"[\s,]+")
FORM_ERRORS = (KeyError_, GatewayError, RestrictionError, msgspec.ValidationError)


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: ApiKey
    spent_micro: int
    last_used: datetime | None

    @property
    def spent_ratio(self) -> float:
        limit = self.key.spending_limit_micro
        return min(1.0, self.spent_micro / limit) if limit else 0.0


def _text(form: FormMultiDict, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _all(form: FormMultiDict, name: str) -> list[str]:
    return [value for value in form.getall(name, []) if isinstance(value, str)]


def _items(text: str) -> list[str]:
    return [item for item in _SPLIT.split(text) if item]


def _utc_moment(text: str) -> str:
    """A datetime-local value ("2027-01-01T10:00", seconds optional) as RFC 3339 in UTC."""
    if len(text) == 10:  # a date alone: its start
        return text + "T00:00:00Z"
    return text + (":00Z" if len(text) == 16 else "Z")


def key_fields(form: FormMultiDict, *, update: bool) -> dict[str, Any]:
    """The key form as the JSON body ``/api/keys`` takes: a blank field is no restriction."""
    cleared: Any = None if update else ""
    data: dict[str, Any] = {
        "name": _text(form, "name"),
        "description": _text(form, "description"),
        "is_active": form.get("is_active") == "on",
        "allowed_categories": _all(form, "allowed_categories"),
        "active_hours": _text(form, "active_hours") or cleared,
        "spending_period": _text(form, "spending_period") or SpendingPeriod.MONTHLY.value,
        "webhook_url": _text(form, "webhook_url") or cleared,
    }
    for name in LIST_FIELDS:
        data[name] = _items(_text(form, name))
    expires = _text(form, "expires_at")
    # datetime-local has no zone: the form says the time is UTC.
    data["expires_at"] = _utc_moment(expires) if expires else None
    data["spending_limit"] = _text(form, "spending_limit") or None
    for name in ("rpm_limit", "tpm_limit"):
        data[name] = _text(form, name) or None
    data["cache_ttl_s"] = _text(form, "cache_ttl_s") or (None if update else 0)
    if not update and data["active_hours"] is None:
        data["active_hours"] = ""
    return data


def _form_values(key: ApiKey | None) -> dict[str, Any]:
    """What the settings form shows for ``key`` (a new key: the defaults)."""
    if key is None:
        return {"is_active": True, "spending_period": "monthly", "allowed_categories": []}
    return {
        "name": key.name,
        "description": key.description,
        "is_active": key.is_active,
        "expires_at": _local_utc(key.expires_at),
        "allowed_categories": key.allowed_categories,
        "active_hours": key.active_hours,
        "spending_limit": _credits_text(key.spending_limit_micro),
        "spending_period": key.spending_period,
        "rpm_limit": key.rpm_limit or "",
        "tpm_limit": key.tpm_limit or "",
        "cache_ttl_s": key.cache_ttl_s or "",
        "webhook_url": key.webhook_url,
        **{name: "\n".join(getattr(key, name)) for name in LIST_FIELDS},
    }


def _local_utc(moment: datetime | None) -> str:
    """A stored time as the datetime-local field shows it, in UTC (SQLite hands back naive UTC)."""
    if moment is None:
        return ""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _credits_text(micro: int | None) -> str:
    return "" if micro is None else format_credits(micro)


def _submitted(form: FormMultiDict) -> dict[str, Any]:
    """The form as sent, to show it again beside its errors."""
    values: dict[str, Any] = {name: _text(form, name) for name in form}
    values["is_active"] = form.get("is_active") == "on"
    values["allowed_categories"] = _all(form, "allowed_categories")
    return values


async def _rows(state: GatewayState, account_id: int) -> list[KeyRow]:
    async with state.sessionmaker() as session:
        keys = await list_keys(session, account_id)
        last_used = await last_used_by_key(session, account_id)
    now = state.now()
    return [
        KeyRow(
            key, await state.meter.key_spend_micro(account_id, key.id, key.spending_period, now), last_used.get(key.id)
        )
        for key in keys
    ]


class KeysPages(Controller):
    path = "/keys"
    tags = ["dashboard"]
    include_in_schema = False

    def _form(
        self,
        request: Request[Any, Any, Any],
        viewer: Viewer,
        *,
        key: ApiKey | None,
        values: dict[str, Any],
        errors: dict[str, str],
        status_code: int = 200,
    ) -> Template:
        title = f"Settings of {key.name}" if key else "Create a key"
        return page(
            request,
            viewer,
            "fragments/key_form.html" if is_htmx(request) else "dialog_page.html",
            fragment="fragments/key_form.html",
            title=title,
            active="keys",
            key=key,
            values=values,
            errors=errors,
            categories=CATEGORIES,
            periods=[p.value for p in SpendingPeriod],
            model_slugs=sorted(request.app.state.gateway.catalog),
            status_code=status_code,
        )

    @get("/", name="dashboard:keys")
    async def keys(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Template:
        rows = await _rows(gateway, viewer.caller.account_id)
        template = "fragments/keys_table.html" if is_htmx(request) else "keys.html"
        return page(request, viewer, template, title="Keys", active="keys", rows=rows)

    @get("/new")
    async def new_key(self, request: Request[Any, Any, Any], viewer: Injected[Viewer]) -> Template:
        require(viewer.caller.role, Permission.MANAGE_KEYS)
        return self._form(request, viewer, key=None, values=_form_values(None), errors={})

    @post("/", status_code=201)
    async def create_key(
        self, request: Request[Any, Any, Any], gateway: Injected[GatewayState], viewer: Injected[Viewer]
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        try:
            data = msgspec.convert(key_fields(form, update=False), KeyCreate, strict=False)
            key, plaintext = await create_account_key(gateway, viewer.caller, data)
        except FORM_ERRORS as error:
            if getattr(error, "status_code", 400) == 403:
                raise
            return self._form(
                request, viewer, key=None, values=_submitted(form), errors=field_errors(error), status_code=422
            )
        return page(
            request,
            viewer,
            "fragments/key_created.html" if is_htmx(request) else "dialog_page.html",
            fragment="fragments/key_created.html",
            title="Key created",
            active="keys",
            key=key,
            plaintext=plaintext,
            status_code=201,
            headers={"HX-Trigger": "keys-changed"},
        )

    @get("/{key_id:int}/settings")
    async def settings(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        key_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_KEYS)
        async with gateway.sessionmaker() as session:
            key = await get_key(session, viewer.caller.account_id, key_id)
        return self._form(request, viewer, key=key, values=_form_values(key), errors={})

    @post("/{key_id:int}/settings", status_code=200)
    async def save_settings(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        key_id: FromPath[PathId],
    ) -> Response[Any]:
        form = await read_form(request, viewer)
        try:
            data = msgspec.convert(key_fields(form, update=True), KeyUpdate, strict=False)
            key = await update_account_key(gateway, viewer.caller, key_id, data)
        except FORM_ERRORS as error:
            if getattr(error, "status_code", 400) in (403, 404):
                raise
            async with gateway.sessionmaker() as session:
                key = await get_key(session, viewer.caller.account_id, key_id)
            return self._form(
                request, viewer, key=key, values=_submitted(form), errors=field_errors(error), status_code=422
            )
        return _done(request, viewer, f"Saved the settings of {key.name}.")

    @get("/{key_id:int}/delete")
    async def confirm_delete(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        key_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MANAGE_KEYS)
        async with gateway.sessionmaker() as session:
            key = await get_key(session, viewer.caller.account_id, key_id)
        return page(
            request,
            viewer,
            "fragments/key_delete.html" if is_htmx(request) else "dialog_page.html",
            fragment="fragments/key_delete.html",
            title=f"Delete {key.name}?",
            active="keys",
            key=key,
        )

    @post("/{key_id:int}/delete", status_code=200)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        key_id: FromPath[PathId],
    ) -> Response[Any]:
        await read_form(request, viewer)
        await delete_account_key(gateway, viewer.caller, key_id)
        return _done(request, viewer, "The key is deleted; calls with it are refused from now on.")

    @get("/{key_id:int}/token")
    async def token_form(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        key_id: FromPath[PathId],
    ) -> Template:
        require(viewer.caller.role, Permission.MINT_TOKENS)
        async with gateway.sessionmaker() as session:
            key = await get_key(session, viewer.caller.account_id, key_id)
        return self._token(request, viewer, key=key, minted=None, ttl=DEFAULT_TTL_S, errors={})

    @post("/{key_id:int}/token", status_code=201)
    async def mint(
        self,
        request: Request[Any, Any, Any],
        gateway: Injected[GatewayState],
        viewer: Injected[Viewer],
        key_id: FromPath[PathId],
    ) -> Template:
        form = await read_form(request, viewer)
        ttl_text = form.get("ttl")
        ttl = int(ttl_text) if isinstance(ttl_text, str) and ttl_text.isdigit() and len(ttl_text) < 7 else 0
        async with gateway.sessionmaker() as session:
            key = await get_key(session, viewer.caller.account_id, key_id)
        if not MIN_TTL_S <= ttl <= MAX_TTL_S:
            errors = {"ttl": f"between {MIN_TTL_S} and {MAX_TTL_S} seconds"}
            return self._token(request, viewer, key=key, minted=None, ttl=DEFAULT_TTL_S, errors=errors, status_code=422)
        minted = await mint_browser_token(gateway, viewer.caller, key_id, ttl)
        return self._token(request, viewer, key=key, minted=minted, ttl=ttl, errors={}, status_code=201)

    def _token(
        self,
        request: Request[Any, Any, Any],
        viewer: Viewer,
        *,
        key: ApiKey,
        minted: Any,
        ttl: int,
        errors: dict[str, str],
        status_code: int = 200,
    ) -> Template:
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return page(
            request,
            viewer,
            "fragments/key_token.html" if is_htmx(request) else "dialog_page.html",
            fragment="fragments/key_token.html",
            title=f"Test token for {key.name}",
            active="keys",
            key=key,
            minted=minted,
            ttl=ttl,
            ttl_choices=TTL_CHOICES,
            base_url=origin + "/v1",
            errors=errors,
            status_code=status_code,
        )


def _done(request: Request[Any, Any, Any], viewer: Viewer, message: str) -> Response[Any]:
    """A dialog's action succeeded: htmx closes the dialog, refreshes the table and says so."""
    if is_htmx(request):
        trigger = msgspec.json.encode({"keys-changed": True, "close-modal": True, "flash": message}).decode()
        return Response(
            None, status_code=200, headers={"HX-Trigger": trigger, "HX-Reswap": "none"}, cookies=viewer.cookies
        )
    return see_other(request, viewer, "/keys")


__all__ = ["KeysPages", "key_fields"]
