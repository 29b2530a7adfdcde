"""OpenAI's error envelope (``{"error": {"message", "type", "code"}}``) as our error tree.

Every OpenAI-compatible server (and Azure) answers errors in this shape, or close to it: any
body is tolerated, and what the upstream said is kept in ``detail`` for the operator.
"""

from __future__ import annotations

import msgspec

from providers.errors import ProviderError, UpstreamHTTPError
from providers.openai.types import ErrorView, error_decoder


def error_message(raw: bytes) -> tuple[str, str, str]:
    """(message, type, code) from an upstream error body, tolerating any shape."""
    message, kind, code, _param = error_fields(raw)
    return message, kind, code


def error_fields(raw: bytes) -> tuple[str, str, str, object]:
    """(message, type, code, param) from an upstream error body, tolerating any shape."""
    try:
        view: ErrorView = error_decoder.decode(raw)
    except msgspec.DecodeError:
        text = raw[:300].decode("utf-8", "replace").strip()
        return (text or "upstream error", "", "", None)
    error = view.error
    if isinstance(error, str):
        return (error, "", "", None)
    if error is None:
        return ("upstream error", "", "", None)
    code = str(error.code) if error.code is not None else ""
    return (error.message or "upstream error", error.type or "", code, error.param)


def http_error(provider: str, status: int, raw: bytes) -> ProviderError:
    """The error for a non-2xx answer from ``provider``."""
    if status in (401, 403):
        # The upstream's text may quote part of our provider key: never pass it on.
        message, kind, code, param = "the provider rejected the gateway's credentials", "", "", None
    else:
        message, kind, code, param = error_fields(raw)
    return UpstreamHTTPError(
        f"upstream {provider} answered {status}: {message}",
        provider=provider,
        upstream_status=status,
        upstream_type=kind,
        upstream_code=code,
        upstream_param=param,
    )
