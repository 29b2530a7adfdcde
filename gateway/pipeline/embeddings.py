"""``POST /v1/embeddings``: billed by input tokens (the upstream's usage, else tiktoken)."""

from __future__ import annotations

from collections.abc import Mapping

from litestar import Response

from billing.errors import OutOfBudget, RateLimitExceeded
from billing.estimates import input_worst_case
from gateway.pipeline.chat import count_tokens, decode_object, view_of
from gateway.pipeline.common import (
    Lazy,
    RoutedView,
    TextOrTokens,
    bill_json,
    input_tokens,
    post_json,
    prompt_bound,
    serves_json,
)
from gateway.pipeline.metered import EMBEDDINGS_ROUTE, Admission, MeteredCall
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import Usage
from providers.openai.convert import usage_from_body

TEXT = frozenset({"text"})


class EmbeddingsView(RoutedView, kw_only=True):
    input: TextOrTokens


async def embeddings(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    async with Admission(state, headers, facts, request_id) as door:
        body = decode_object(raw) if raw else {}
        view = view_of(body, EmbeddingsView)
        plan = door.plan(view, route=EMBEDDINGS_ROUTE, categories=TEXT, serves=serves_json)
        model = plan[0].upstream_model
        exact = Lazy(lambda: count_tokens(len(raw), lambda: input_tokens(view.input, model, "input")))
        try:
            admitted = await door.reserve(plan, input_worst_case(plan, prompt_bound(raw, view.input)))
        except (OutOfBudget, RateLimitExceeded):
            admitted = await door.reserve(plan, input_worst_case(plan, await exact()))
    async with MeteredCall(state, admitted) as call:
        answer = await post_json(call, "/embeddings", body)
        reported = usage_from_body(answer)
        if reported is not None and not reported.malformed:
            # Embeddings produce no output tokens, whatever the upstream says.
            reported = Usage(input_tokens=reported.input_tokens, cached_input_tokens=reported.cached_input_tokens)

        async def counted() -> Usage:
            return Usage(input_tokens=await exact())

        return await bill_json(call, answer, reported, counted)
