"""``/v1/messages`` and ``/v1/messages/count_tokens`` (Anthropic Messages): thin controllers over
:mod:`gateway.pipeline.messages`.

Errors on these routes are in Anthropic's shape, ``{"type": "error", "error": {"type",
"message"}, "request_id"}``, with the status the gateway gives every route: the app's own
handlers render each error (status, headers, logging), and the route's handlers re-shape the
body, so the Anthropic SDKs raise their own exception classes. Other routes keep OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.response import Stream

from gateway.api.openapi_v1 import documented_body
from gateway.errors import (
    DOMAIN_ERRORS,
    handle_domain_error,
    handle_http_exception,
    handle_recursion_error,
    handle_restriction_error,
    handle_unexpected,
    handle_validation_error,
)
from gateway.pipeline.messages import count_message_tokens, create_message
from gateway.pipeline.metered import cancel_on_disconnect
from gateway.request_id import correlation_id_of, request_id_of
from gateway.state import GatewayState
from keys.restrictions import RestrictionError
from providers.dialects.messages import CountTokensRequest, MessagesRequest, error_type_for

_encoder = msgspec.json.Encoder()
Handler = Callable[[Request[Any, Any, Any], Any], Response[bytes]]


class AnthropicErrorObject(msgspec.Struct):
    type: str
    message: str


class AnthropicError(msgspec.Struct):
    """Anthropic's error envelope (``type`` is always ``"error"``)."""

    type: str
    error: AnthropicErrorObject
    request_id: str | None = None


def anthropic_error(request: Request[Any, Any, Any], rendered: Response[bytes]) -> Response[bytes]:
    """The app's OpenAI-shaped error answer re-shaped as Anthropic's, status and headers kept."""
    try:
        body = msgspec.json.decode(rendered.content)
        error = body["error"] if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    except msgspec.DecodeError:
        error = {}
    message = error.get("message") if isinstance(error.get("message"), str) else "error"
    status = rendered.status_code or 500
    shaped = {
        "type": "error",
        "error": {"type": error_type_for(status, error.get("type")), "message": message},
        "request_id": correlation_id_of(request.scope),
    }
    return Response(
        content=_encoder.encode(shaped),
        status_code=status,
        media_type="application/json",
        headers=dict(rendered.headers),
    )


def _shaped(handler: Handler) -> Handler:
    def handle(request: Request[Any, Any, Any], error: Any) -> Response[bytes]:
        return anthropic_error(request, handler(request, error))

    return handle


# The app's handler table (gateway/app.py), each answer re-shaped: same keys, so these win here.
_HANDLERS: dict[type[Exception] | int, Handler] = {error: _shaped(handle_domain_error) for error in DOMAIN_ERRORS}
_HANDLERS[RestrictionError] = _shaped(handle_restriction_error)
_HANDLERS[HTTPException] = _shaped(handle_http_exception)
_HANDLERS[msgspec.ValidationError] = _shaped(handle_validation_error)
_HANDLERS[RecursionError] = _shaped(handle_recursion_error)
_HANDLERS[Exception] = _shaped(handle_unexpected)

_WHY = {
    400: "The body is malformed, or names an unknown model (invalid_request_error)",
    401: "Missing or invalid key: x-api-key or Authorization: Bearer (authentication_error)",
    402: "Not enough credits for the worst case of this call (billing_error)",
    403: "The key may not call this model, from here, or now (permission_error)",
    404: "Not found (not_found_error)",
    413: "The body is larger than max_chat_body_bytes (invalid_request_error)",
    429: "The key's rate or spending limit (rate_limit_error)",
    502: "The upstream failed (api_error)",
    503: "No provider can serve this model now (overloaded_error)",
    504: "The upstream timed out (timeout_error)",
}


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(data_container=AnthropicError, description=_WHY[status], generate_examples=False)
        for status in statuses
    }


@post(
    "/v1/messages",
    status_code=200,
    operation_id="create_message",
    operation_class=documented_body(MessagesRequest),
    responses=_errors(400, 401, 402, 403, 404, 413, 429, 502, 503, 504),
    exception_handlers=_HANDLERS,
)
async def create_message_route(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    """Anthropic's Messages API (streamed as Anthropic's events with ``stream: true``), served
    by any configured model and metered like chat. The key goes in ``x-api-key`` or
    ``Authorization: Bearer``; ``anthropic-version`` defaults to 2023-06-01."""
    state: GatewayState = request.app.state.gateway
    request_id = request_id_of(request.scope)
    raw_body = await request.body()
    facts = state.request_facts(request)
    return await cancel_on_disconnect(
        request.receive, create_message(state, request.headers, facts, raw_body, request_id)
    )


@post(
    "/v1/messages/count_tokens",
    status_code=200,
    operation_id="count_message_tokens",
    operation_class=documented_body(CountTokensRequest),
    responses=_errors(400, 401, 403, 404, 413),
    exception_handlers=_HANDLERS,
)
async def count_message_tokens_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The prompt's size in tokens by the gateway's tokenizer: ``{"input_tokens": N}``; not billed."""
    state: GatewayState = request.app.state.gateway
    raw_body = await request.body()
    facts = state.request_facts(request)
    return await count_message_tokens(state, request.headers, facts, raw_body)
