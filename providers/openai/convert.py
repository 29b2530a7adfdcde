"""Pure conversions between OpenAI wire payloads and the gateway's types."""

from __future__ import annotations

from typing import Any

import msgspec

from providers.base import Usage
from providers.openai.types import ChunkView, ErrorView, UsageView, error_decoder


def usage_from_view(view: UsageView) -> Usage:
    details = view.prompt_tokens_details
    if details is not None and not isinstance(details, dict):
        return Usage(malformed=True)
    cached = details.get("cached_tokens") if details else 0
    return Usage.reported(view.prompt_tokens, view.completion_tokens, cached)


def usage_from_body(body: dict[str, Any]) -> Usage | None:
    """The body's usage block; ``None`` when there is none, a malformed Usage when it is garbage."""
    raw = body.get("usage")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Usage(malformed=True)
    return usage_from_view(msgspec.convert(raw, UsageView))


def chunk_text(chunk: ChunkView) -> str:
    """Generated text in a chunk (content, refusals, tool-call names and arguments)."""
    parts: list[str] = []
    for choice in chunk.choices:
        if choice.text:
            parts.append(choice.text)
        delta = choice.delta
        if delta is None:
            continue
        if delta.content:
            parts.append(delta.content)
        if delta.refusal:
            parts.append(delta.refusal)
        for call in delta.tool_calls or ():
            if call.function is not None:
                parts.append(call.function.name or "")
                parts.append(call.function.arguments or "")
    return "".join(parts)


def error_message(raw: bytes) -> tuple[str, str, str]:
    """(message, type, code) from an upstream error body, tolerating any shape."""
    try:
        view: ErrorView = error_decoder.decode(raw)
    except msgspec.DecodeError:
        text = raw[:300].decode("utf-8", "replace").strip()
        return (text or "upstream error", "", "")
    error = view.error
    if isinstance(error, str):
        return (error, "", "")
    if error is None:
        return ("upstream error", "", "")
    return (error.message or "upstream error", error.type or "", str(error.code) if error.code is not None else "")


def with_stream_usage(body: dict[str, Any]) -> dict[str, Any]:
    """Ask the upstream to report usage at the end of a stream (billing needs it)."""
    options = body.get("stream_options")
    merged = dict(options) if isinstance(options, dict) else {}
    merged["include_usage"] = True
    return {**body, "stream_options": merged}
