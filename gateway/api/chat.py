"""``/v1/chat/completions``: a thin controller over :mod:`gateway.pipeline.chat`."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from gateway.pipeline.chat import chat_completions
from gateway.pipeline.metered import cancel_on_disconnect
from gateway.request_id import request_id_of
from gateway.state import GatewayState


@post("/v1/chat/completions", status_code=200)
async def create_chat_completion(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    state: GatewayState = request.app.state.gateway
    request_id = request_id_of(request.scope)  # set by the request-id middleware, named by the usage record
    raw_body = await request.body()
    facts = state.request_facts(request)
    return await cancel_on_disconnect(
        request.receive, chat_completions(state, request.headers, facts, raw_body, request_id)
    )
