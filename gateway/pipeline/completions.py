"""``POST /v1/completions`` (legacy, stream or not): input and output tokens like chat;
``max_tokens`` defaults to 16, as OpenAI's does, and ``best_of``/``n`` completions per prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Response
from litestar.response import Stream

from billing.errors import OutOfBudget, RateLimitExceeded
from billing.estimates import OutputRequest, output_cap, tokens_worst_case
from billing.tokens import count_text_tokens
from gateway.catalog import CatalogModel
from gateway.pipeline.chat import count_tokens, decode_object, stream_response, view_of
from gateway.pipeline.common import (
    Lazy,
    RoutedView,
    TextOrTokens,
    bill_json,
    decode_reply,
    input_tokens,
    prompt_bound,
    serves_json,
)
from gateway.pipeline.metered import Admission, DeadlineStream, MeteredCall, upstream_body
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import ProviderHandle, UpstreamReply, Usage
from providers.openai.convert import usage_from_body

ROUTE = "/v1/completions"
TEXT = frozenset({"text"})
LEGACY_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class CompletionsView(RoutedView, kw_only=True):
    prompt: TextOrTokens
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] = 1
    best_of: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stream: bool = False


def choices(view: CompletionsView) -> int:
    """Completions the upstream may generate: ``best_of`` (or ``n``) per prompt."""
    prompts = 1 if isinstance(view.prompt, str) or isinstance(view.prompt[0], int) else len(view.prompt)
    return max(prompts, 1) * max(view.n, view.best_of or 1)


async def completions(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes] | Stream:
    async with Admission(state, headers, facts, request_id) as door:
        body = decode_object(raw) if raw else {}
        view = view_of(body, CompletionsView)
        plan = door.plan(view, route=ROUTE, categories=TEXT, serves=serves_json)
        model = plan[0].upstream_model
        exact = Lazy(lambda: count_tokens(len(raw), lambda: input_tokens(view.prompt, model, "prompt")))
        output = OutputRequest(asked=view.max_tokens or LEGACY_DEFAULT_MAX_TOKENS, choices=choices(view))
        try:
            admitted = await door.reserve(plan, tokens_worst_case(plan, prompt_bound(raw, view.prompt), output))
        except (OutOfBudget, RateLimitExceeded):
            admitted, _fitted = await door.reserve_output(plan, await exact(), output)

    def capped(served: CatalogModel) -> dict[str, Any]:
        # The upstream is never allowed more output per completion than was reserved.
        forwarded = upstream_body(body, served)
        forwarded["max_tokens"] = output_cap(served, output.asked)
        return forwarded

    if view.stream:
        async with MeteredCall(state, admitted, streamed=True) as call:

            async def open_stream(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> DeadlineStream:
                stream = await adapter.json.open_json_stream("/completions", served.upstream_model, capped(served))
                return DeadlineStream(stream, deadline_at, served.provider)

            stream = await call.dispatch(open_stream)
            response = stream_response(call, stream, exact, "text_completion")
            call.hand_over()
            return response

    async with MeteredCall(state, admitted) as call:

        async def post(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> dict[str, Any]:
            reply: UpstreamReply = await adapter.json.post_json("/completions", served.upstream_model, capped(served))
            return decode_reply(reply, served.provider)

        answer = await call.dispatch(post)

        async def counted() -> Usage:
            text = "".join(
                c["text"] for c in answer.get("choices") or () if isinstance(c, dict) and isinstance(c.get("text"), str)
            )
            served_model = call.served.upstream_model
            return Usage(
                input_tokens=await exact(),
                output_tokens=await count_tokens(len(text), lambda: count_text_tokens(text, served_model)),
            )

        return await bill_json(call, answer, usage_from_body(answer), counted)
