"""``/v1/responses``: a thin controller over :mod:`gateway.pipeline.responses`."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from gateway.api.openapi import errors
from gateway.api.openapi_v1 import ResponseCreateRequest, documented_body
from gateway.pipeline.metered import cancel_on_disconnect
from gateway.pipeline.responses import create_response
from gateway.request_id import request_id_of
from gateway.state import GatewayState


@post(
    "/v1/responses",
    status_code=200,
    operation_id="create_response",
    operation_class=documented_body(ResponseCreateRequest),
    responses=errors(400, 401, 402, 403, 404, 413, 429, 499, 502, 503, 504),
)
async def create_response_handler(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    """OpenAI's Responses API, stateless (``store: false``), streamed as typed server-sent events
    with ``stream: true``; served over chat completions and metered like them."""
    state: GatewayState = request.app.state.gateway
    request_id = request_id_of(request.scope)
    raw_body = await request.body()
    facts = state.request_facts(request)
    return await cancel_on_disconnect(
        request.receive, create_response(state, request.headers, facts, raw_body, request_id)
    )
