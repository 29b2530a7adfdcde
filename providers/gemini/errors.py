"""Google's error envelope as our error tree, and the requests Gemini cannot express.

Google answers a wrong key with 400 and ``API_KEY_INVALID`` (not 401), and may put an error
inside a 200 stream with only its canonical status name: both are mapped here.
"""

from __future__ import annotations

import msgspec

from providers.errors import ProviderError, UpstreamHTTPError
from providers.gemini.types import ErrorBodyView, ErrorView, error_decoder


class GeminiRequestError(ProviderError):
    """The OpenAI body cannot be expressed as a Gemini request: the caller's fault, not the upstream's."""

    status_code = 400
    type = "invalid_request_error"
    code = "unsupported_for_provider"


# google.rpc.ErrorInfo reason Google sends, with a 400, for a wrong API key.
API_KEY_INVALID = "API_KEY_INVALID"


class UpstreamErrorInfo(msgspec.Struct, frozen=True):
    message: str
    status: str = ""
    code: int = 0
    reasons: tuple[str, ...] = ()

    @property
    def bad_credentials(self) -> bool:
        return API_KEY_INVALID in self.reasons


def error_info(view: ErrorView | None) -> UpstreamErrorInfo:
    if view is None or view.error is None:
        return UpstreamErrorInfo(message="upstream error")
    error = view.error
    return UpstreamErrorInfo(
        message=error.message or "upstream error",
        status=error.status,
        code=error.code,
        reasons=tuple(detail.reason for detail in error.details if detail.reason),
    )


def parse_error(raw: bytes) -> UpstreamErrorInfo:
    """The Google error envelope ``{"error": {"code", "message", "status", "details"}}``, any shape tolerated."""
    try:
        decoded = error_decoder.decode(raw)
    except msgspec.DecodeError:
        text = raw[:300].decode("utf-8", "replace").strip()
        return UpstreamErrorInfo(message=text or "upstream error")
    if isinstance(decoded, list):
        return error_info(decoded[0] if decoded else None)
    return error_info(decoded)


# Google's canonical status names, for errors that arrive inside a 200 stream.
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def http_error(provider: str, status: int, info: UpstreamErrorInfo) -> ProviderError:
    """An upstream error as our tree. Google answers a wrong key with 400 + ``API_KEY_INVALID``."""
    if info.bad_credentials:
        status = 401
    if status in (401, 403):
        # The upstream's text may quote part of our provider key: never pass it on.
        message, code = "the provider rejected the gateway's credentials", ""
    else:
        # Google's status names are meaningful to a caller only for its own mistakes (4xx).
        message, code = info.message, info.status.lower() if status < 500 else ""
    return UpstreamHTTPError(
        f"upstream {provider} answered {status}: {message}",
        provider=provider,
        upstream_status=status,
        upstream_code=code,
    )


def stream_error(provider: str, error: ErrorBodyView) -> ProviderError:
    """The error for an ``error`` object inside a stream (its HTTP status was 200)."""
    status = error.code or _STATUS_CODES.get(error.status, 500)
    return http_error(provider, status, error_info(ErrorView(error=error)))
