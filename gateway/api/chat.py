"""``/v1/chat/completions``: a thin controller over :mod:`gateway.pipeline.chat`."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from gateway.api.openapi import errors
from gateway.api.openapi_v1 import ChatCompletionRequest, documented_body
from gateway.pipeline.chat import chat_completions
from gateway.pipeline.metered import cancel_on_disconnect
from gateway.request_id import request_id_of
from gateway.state import GatewayState


@post(
    "/v1/chat/completions",
    status_code=200,
    operation_id="create_chat_completion",
    operation_class=documented_body(ChatCompletionRequest),
    responses=errors(400, 401, 402, 403, 404, 413, 429, 499, 502, 503, 504),
)
async def create_chat_completion(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    """OpenAI's chat completions (streamed as server-sent events with ``stream: true``), metered."""
    state: GatewayState = request.app.state.gateway
    request_id = request_id_of(request.scope)  # set by the request-id middleware, named by the usage record
    raw_body = await request.body()
    facts = state.request_facts(request)
    return await cancel_on_disconnect(
        request.receive, chat_completions(state, request.headers, facts, raw_body, request_id)
    )
