"""What the OpenAI-format ``/v1`` routes beyond chat share: their routed body fields, how they
post JSON upstream, how they read its answer and how they bill and answer it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import msgspec
from litestar import Response

from billing.money import format_credits
from billing.tokens import count_text_tokens
from gateway.catalog import CatalogModel
from gateway.errors import InvalidRequest
from gateway.pipeline.metered import Admitted, MeteredCall, billable_usage, tollway_meta, upstream_body
from gateway.routing import ProviderPreferences
from gateway.state import GatewayState
from providers.base import Capability, ProviderHandle, UpstreamReply, Usage
from providers.errors import UpstreamBadResponse

_encoder = msgspec.json.Encoder()

# msgspec unions allow one array type: the four OpenAI shapes (text, texts, token ids, lists
# of token ids) are checked by input_tokens.
TextOrTokens = str | Annotated[list[Any], msgspec.Meta(min_length=1)]


class RoutedView(msgspec.Struct, kw_only=True):
    """The gateway's own fields of any routed body: the model, its fallbacks, routing
    preferences and the end user."""

    model: str
    models: list[str] | None = None
    provider: ProviderPreferences | None = None
    user: str | None = None


def form_text(form: Mapping[str, Any], name: str) -> str | None:
    """A multipart text field: ``None`` when absent or empty."""
    value = form.get(name)
    return value if isinstance(value, str) and value else None


def required_form_text(form: Mapping[str, Any], name: str) -> str:
    """A multipart text field the route cannot do without (a 400 naming it when missing)."""
    value = form_text(form, name)
    if value is None:
        raise InvalidRequest(f"the {name!r} field is required", param=name)
    return value


def serves_json(adapter: ProviderHandle) -> bool:
    return adapter.offers(Capability.JSON)


def serves_multipart(adapter: ProviderHandle) -> bool:
    return adapter.offers(Capability.MULTIPART)


def input_tokens(value: str | list[Any], model: str, param: str) -> int:
    """Tokens of a prompt or embeddings input, whichever of its four OpenAI shapes it has."""
    if isinstance(value, str):
        return count_text_tokens(value, model)
    total = 0
    for item in value:
        if isinstance(item, str):
            total += count_text_tokens(item, model)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += 1
        elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            total += len(item)
        else:
            raise InvalidRequest(f"{param} must be a string, strings, token ids or lists of token ids", param=param)
    return total


def prompt_bound(raw: bytes, value: str | list[Any]) -> int:
    """Tokens a prompt or embeddings input can hold at most, for any byte-level tokenizer: one
    per byte of the body (token ids take a byte or more each too), plus a few per input for
    the start and end tokens some models add."""
    return len(raw) + 4 * (len(value) if isinstance(value, list) else 1)


def decode_reply(reply: UpstreamReply, provider: str) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(reply.content)
    except (msgspec.DecodeError, RecursionError) as error:
        raise UpstreamBadResponse(f"upstream {provider} sent invalid JSON", provider=provider) from error
    if not isinstance(decoded, dict):
        raise UpstreamBadResponse(f"upstream {provider} sent an unexpected body", provider=provider)
    return decoded


async def post_json(call: MeteredCall, route: str, body: dict[str, Any]) -> dict[str, Any]:
    """Dispatch ``body`` (its model replaced by each deployment's) to ``route`` upstream."""

    async def post(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> dict[str, Any]:
        reply: UpstreamReply = await adapter.json.post_json(route, served.upstream_model, upstream_body(body, served))
        return decode_reply(reply, served.provider)

    return await call.dispatch(post)


def json_reply(
    state: GatewayState, admitted: Admitted, served: CatalogModel, body: Any, usage: Usage, cost: int
) -> Response[bytes]:
    if isinstance(body, dict):
        # The answer names the model the client asked for (or the fallback that served); the
        # upstream's own name rides in _tollway.
        upstream = body.get("model")
        if isinstance(upstream, str):
            body["model"] = served.slug
        upstream_model = upstream if isinstance(upstream, str) else ""
        body["_tollway"] = tollway_meta(state, admitted.ctx, served, usage, cost, upstream_model)
    return Response(
        content=_encoder.encode(body),
        media_type="application/json",
        headers={
            "X-Request-Id": admitted.ctx.request_id,
            "X-Tollway-Credits-Used": format_credits(cost),
            **admitted.reservation.rate_headers,
        },
    )


async def bill_json(
    call: MeteredCall, answer: dict[str, Any], reported: Usage | None, count: Callable[[], Awaitable[Usage]]
) -> Response[bytes]:
    """Settle a JSON answer's usage (believed, else counted) and answer with its bill."""
    usage, anomaly = await billable_usage(reported, count)
    bill = await call.settle(usage, anomaly=anomaly)
    return json_reply(call.state, call.admitted, call.served, answer, usage, bill.cost_micro)


class Lazy:
    """A count made at most once, and only if asked for (the bill needs it only when the
    upstream reported no usage, the reservation only when a cheap bound did not fit)."""

    def __init__(self, count: Callable[[], Awaitable[int]]) -> None:
        self._count = count
        self._value: int | None = None

    async def __call__(self) -> int:
        if self._value is None:
            self._value = await self._count()
        return self._value
