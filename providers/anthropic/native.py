"""Anthropic's Messages API passed through as it is, for clients that speak it themselves
(``POST /v1/messages`` served by an Anthropic model): nothing of the body is translated, so
``cache_control``, ``thinking``, ``top_k`` and document blocks reach the upstream untouched.

Only what the gateway meters is read, with view Structs: a whole message's ``model``, usage
and text; each stream event's type, usage and delta text (the text is counted only when the
upstream reports no usage). Usage is converted to Tollway's convention, where the prompt
total includes the cache reads and writes Anthropic's ``input_tokens`` leaves out.
"""

from __future__ import annotations

from typing import Any

import msgspec

from providers.anthropic.convert import usage_from_view
from providers.anthropic.errors import stream_error
from providers.anthropic.types import ErrorDetail, MessageView, UsageView
from providers.base import StreamChunk, Usage
from providers.errors import UpstreamBadResponse
from providers.sse import SSEEvent

__all__ = ["NativeEvent", "NativeMessage", "NativeStreamReader", "message_text"]


class NativeMessage(msgspec.Struct):
    """A whole Message: the upstream's bytes, what they decoded to, and the usage read from them
    (``None`` when the upstream sent none)."""

    raw: bytes
    body: dict[str, Any]
    usage: Usage | None
    text: str


class NativeEvent(StreamChunk, kw_only=True):
    """One upstream event to forward: ``data`` is its ``data`` payload as the upstream sent it,
    ``event`` its type. ``usage`` is the usage known so far, set on ``message_start`` and
    ``message_delta``; ``model`` is set on ``message_start`` (the upstream's own name)."""

    event: str


class _MessageHead(msgspec.Struct):
    model: str = ""
    usage: UsageView | None = None


class _DeltaHead(msgspec.Struct):
    text: str = ""
    partial_json: str = ""
    thinking: str = ""


class _EventHead(msgspec.Struct):
    """The fields of any stream event the gateway reads; every other field is skipped."""

    type: str = ""
    message: _MessageHead | None = None
    usage: UsageView | None = None
    delta: _DeltaHead | None = None
    error: ErrorDetail | None = None


_head_decoder = msgspec.json.Decoder(_EventHead)
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def message_text(message: MessageView) -> str:
    """What a message generated, as text to count when it reports no usage."""
    parts: list[str] = []
    for block in message.content:
        if block.text:
            parts.append(block.text)
        elif block.input is not None:
            parts.append(msgspec.json.encode(block.input).decode())
    return "".join(parts)


class NativeStreamReader:
    """One upstream stream's events as :class:`NativeEvent`\\ s (``translate``, for
    :class:`providers.http.SSEStream`). An ``error`` event raises; a body that ends before
    ``message_stop`` raises too (``finish``): either way the client's stream ends in an error."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._usage = UsageView()
        self._stopped = False

    def translate(self, sse: SSEEvent) -> list[StreamChunk]:
        try:
            head = _head_decoder.decode(sse.data)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(
                f"upstream {self._provider} sent a malformed stream event", provider=self._provider
            ) from error
        kind = sse.event or head.type
        if kind == "error":
            detail = head.error or ErrorDetail()
            raise stream_error(self._provider, detail.type, detail.message)
        event = NativeEvent(data=sse.data, event=kind)
        if kind == "message_start" and head.message is not None:
            event.model = head.message.model
            self._merge(head.message.usage)
            event.usage = usage_from_view(self._usage) if head.message.usage is not None else None
        elif kind == "message_delta":
            self._merge(head.usage)
            event.usage = usage_from_view(self._usage) if head.usage is not None else None
        elif kind == "content_block_delta" and head.delta is not None:
            event.text = head.delta.text or head.delta.partial_json or head.delta.thinking
        elif kind == "message_stop":
            self._stopped = True
        return [event]

    def finish(self) -> list[StreamChunk]:
        if not self._stopped:
            raise UpstreamBadResponse(
                f"upstream {self._provider} ended its stream before message_stop", provider=self._provider
            )
        return []

    def _merge(self, update: UsageView | None) -> None:
        # message_delta's counters are cumulative and may repeat or omit message_start's.
        if update is None:
            return
        for field in _USAGE_FIELDS:
            value = getattr(update, field)
            if value is not None:
                setattr(self._usage, field, value)
