"""Anthropic's errors as our error tree: its HTTP error bodies, the ``error`` event a stream
may carry mid-way, and the requests that cannot be expressed for Anthropic at all."""

from __future__ import annotations

import msgspec

from providers.anthropic.types import ErrorView, error_decoder
from providers.errors import ProviderError, UpstreamHTTPError


class InvalidChatRequest(ProviderError):
    """The caller's OpenAI body cannot be expressed for Anthropic (the caller's fault, not ours)."""

    status_code = 400
    type = "invalid_request_error"
    code = "unsupported_for_provider"


# Anthropic's documented error types and the HTTP status each comes with; a stream's ``error``
# event carries only the type, so this is how a mid-stream error gets a status.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def upstream_error(provider: str, status: int, kind: str, message: str, *, during: str = "") -> UpstreamHTTPError:
    """An :class:`UpstreamHTTPError` for an Anthropic error (HTTP status or stream ``error`` event)."""
    if status in (401, 403):
        # The upstream's text may quote part of our provider key: never pass it on.
        message, kind = "the provider rejected the gateway's credentials", ""
    # OpenAI clients know "invalid_request_error" for 4xx; Anthropic's finer type goes in the code.
    code = kind if kind != "invalid_request_error" else ""
    error = UpstreamHTTPError(
        f"upstream {provider} {during or f'answered {status}'}: {message}",
        provider=provider,
        upstream_status=status,
        upstream_type="invalid_request_error" if 400 <= status < 500 else "",
        upstream_code=code,
    )
    if status == 529:
        error.retryable = True  # overloaded: Anthropic asks clients to retry with backoff
    return error


def http_error(provider: str, status: int, raw: bytes) -> UpstreamHTTPError:
    """The error for a non-200 answer with an Anthropic (or any other) error body."""
    message, kind = error_message(raw)
    return upstream_error(provider, status, kind, message)


def error_message(raw: bytes) -> tuple[str, str]:
    """(message, Anthropic error type) from an error body, tolerating any shape."""
    try:
        view: ErrorView = error_decoder.decode(raw)
    except msgspec.DecodeError:
        text = raw[:300].decode("utf-8", "replace").strip()
        return (text or "upstream error", "")
    if view.error is None:
        return ("upstream error", "")
    return (view.error.message or "upstream error", view.error.type)


def stream_error(provider: str, kind: str, message: str) -> UpstreamHTTPError:
    """The error for a stream's ``error`` event, which carries a type but no status."""
    status = _ERROR_STATUS.get(kind, 500)
    return upstream_error(provider, status, kind, message or "stream error", during="failed mid-stream")
