"""``POST /v1/images/generations``: images returned × the price of their size/quality variant,
plus tokens when the model reports them (gpt-image-1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Response

from billing.errors import OutOfBudget, RateLimitExceeded
from billing.estimates import image_variant, images_worst_case, price_of
from billing.tokens import count_text_tokens
from gateway.pipeline.chat import count_tokens, decode_object, view_of
from gateway.pipeline.common import Lazy, RoutedView, bill_json, post_json, prompt_bound, serves_json
from gateway.pipeline.metered import Admission, MeteredCall
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import Usage

ROUTE = "/v1/images/generations"
IMAGE = frozenset({"image"})


class ImagesView(RoutedView, kw_only=True):
    prompt: Annotated[str, msgspec.Meta(min_length=1)]
    n: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    size: str | None = None
    quality: str | None = None


def image_usage(answer: dict[str, Any]) -> Usage | None:
    """gpt-image-1 reports ``{input_tokens, output_tokens, input_tokens_details}``."""
    raw = answer.get("usage")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Usage(malformed=True)
    details = raw.get("input_tokens_details")
    if details is not None and not isinstance(details, dict):
        return Usage(malformed=True)
    return Usage.reported(raw.get("input_tokens"), raw.get("output_tokens"), (details or {}).get("cached_tokens"))


async def images(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    async with Admission(state, headers, facts, request_id) as door:
        body = decode_object(raw) if raw else {}
        view = view_of(body, ImagesView)
        plan = door.plan(view, route=ROUTE, categories=IMAGE, serves=serves_json)
        model = plan[0].upstream_model
        prompt_tokens = Lazy(lambda: count_tokens(len(view.prompt), lambda: count_text_tokens(view.prompt, model)))
        bound = prompt_bound(raw, view.prompt)
        try:
            admitted = await door.reserve(plan, images_worst_case(plan, view.n, view.size, view.quality, bound))
        except (OutOfBudget, RateLimitExceeded):
            exact = await prompt_tokens()
            admitted = await door.reserve(plan, images_worst_case(plan, view.n, view.size, view.quality, exact))
    async with MeteredCall(state, admitted) as call:
        answer = await post_json(call, "/images/generations", body)
        data = answer.get("data")
        # Never more images than were asked for (and reserved), whatever the list holds.
        images_made = min(len(data), view.n) if isinstance(data, list) else 0
        tokens = image_usage(answer)
        served = call.served
        variant = image_variant(price_of(served), view.size, view.quality)

        async def counted() -> Usage:
            # Nothing to count in pixels: a lie about token usage is billed as the worst case
            # for the images delivered (held, so within the hold).
            output = images_made * served.max_output_tokens if price_of(served).output else 0
            return Usage(
                input_tokens=await prompt_tokens(), output_tokens=output, units=images_made, unit_variant=variant
            )

        if tokens is None or tokens.malformed:
            reported = tokens or Usage(units=images_made, unit_variant=variant)
        else:
            reported = msgspec.structs.replace(tokens, units=images_made, unit_variant=variant)
        return await bill_json(call, answer, reported, counted)
