"""Pure conversions between OpenAI wire payloads and the gateway's types."""

from __future__ import annotations

from typing import Any

import msgspec

from providers.base import StreamChunk, Usage
from providers.errors import UpstreamBadResponse
from providers.openai.types import ChunkView, UsageView, chunk_decoder


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


def stream_chunk(provider: str, data: bytes) -> StreamChunk:
    """One SSE ``data`` payload, forwarded as sent, with the text and usage metering reads."""
    try:
        view = chunk_decoder.decode(data)
    except msgspec.DecodeError as error:
        raise UpstreamBadResponse(f"upstream {provider} sent a malformed chunk", provider=provider) from error
    choices = view.choices
    if len(choices) == 1:
        # Nearly every chunk: one choice whose delta carries content alone (or nothing).
        choice = choices[0]
        delta = choice.delta
        if delta is not None and choice.text is None and delta.refusal is None and delta.tool_calls is None:
            text = delta.content or ""
        else:
            text = chunk_text(view)
        finished = bool(choice.finish_reason)
    else:
        text = chunk_text(view)
        finished = any(choice.finish_reason for choice in choices)
    model = view.model
    return StreamChunk(
        data=data,
        text=text,
        usage=usage_from_view(view.usage) if view.usage is not None else None,
        finished=finished,
        model=model if isinstance(model, str) else None,
    )


def with_stream_usage(body: dict[str, Any]) -> dict[str, Any]:
    """Ask the upstream to report usage at the end of a stream (billing needs it)."""
    options = body.get("stream_options")
    merged = dict(options) if isinstance(options, dict) else {}
    merged["include_usage"] = True
    return {**body, "stream_options": merged}
