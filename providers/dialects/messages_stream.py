"""Chat completion chunks (SSE, split anywhere) → Anthropic Messages stream events, pure.

Anthropic's events on the wire are ``event: <type>\ndata: <json>\n\n``: ``message_start``,
``ping``, per content block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (stop reason, usage) and
``message_stop``; a failure is an ``error`` event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from providers.dialects.messages import KNOWN_ERROR_TYPES, anthropic_usage, obj, stop_reason, usage_from_chat
from providers.sse import SSEEvent, SSEParser

__all__ = ["MessagesStreamTranslator", "error_event", "event"]

_encoder = msgspec.json.Encoder()


def event(kind: str, payload: dict[str, Any]) -> bytes:
    """One Anthropic stream event on the wire."""
    return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode({"type": kind, **payload}) + b"\n\n"


def error_event(type_: str, message: str) -> bytes:
    return event("error", {"error": {"type": type_, "message": message}})


class MessagesStreamTranslator:
    """Chat ``chat.completion.chunk`` SSE bytes in (split anywhere), Anthropic events out.

    Stateful: a chat stream interleaves text and tool-call deltas by choice, Anthropic wants
    numbered content blocks opened and closed in turn; usage arrives in the last chunk and
    goes out on ``message_delta``. An error chunk (either the gateway's ``finish_reason:
    "error"`` chunk or a top-level ``error`` object) becomes an ``error`` event, sent when the
    chat stream ends (after the gateway settled) and nothing after it.
    """

    def __init__(self, *, message_id: str, model: str) -> None:
        self._parser = SSEParser()
        self._id = message_id
        self._model = model
        self._started = False
        self._done = False
        self._block = -1  # index of the open block, -1 when none is open
        self._open_kind = ""
        self._tool_blocks: dict[int, int] = {}  # chat tool-call index → block index
        self._stop = "end_turn"
        self._usage: dict[str, Any] | None = None
        self._meta: Any = None
        self._failed = b""  # the error event to end with, once the chat stream has ended

    @property
    def finished(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._event(e) for e in self._parser.feed(data))

    def close(self) -> bytes:
        """What is left when the chat stream ends; an ``error`` event if it ended early."""
        out = b"".join(self._event(e) for e in self._parser.close())
        if not self._done:
            self._done = True
            out += self._failed or error_event("api_error", "the stream ended before the answer was complete")
        return out

    def _event(self, sse: SSEEvent) -> bytes:
        if sse.data == b"[DONE]":
            return self._finish()
        if self._done or self._failed:
            return b""
        try:
            chunk = msgspec.json.decode(sse.data)
        except msgspec.DecodeError:
            return self._fail("api_error", "the upstream sent a malformed stream event")
        if not isinstance(chunk, dict):
            return b""
        failure = _failure_of(chunk)
        if failure is not None:
            return self._fail(*failure)
        out = [self._start()]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        if "_tollway" in chunk:
            self._meta = chunk["_tollway"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out.append(self._choice(choice))
        return b"".join(out)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event("message_start", {"message": message}) + event("ping", {})

    def _choice(self, choice: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        delta = obj(choice.get("delta"))
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open_kind != "text":
                out.append(self._open({"type": "text", "text": ""}, "text"))
            out.append(self._delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out.append(self._tool_delta(call))
        if choice.get("finish_reason"):
            self._stop = stop_reason(choice["finish_reason"])
        return b"".join(out)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        position = call.get("index", 0)
        function = obj(call.get("function"))
        if position not in self._tool_blocks:
            block = {"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or "")}
            out.append(self._open({**block, "input": {}}, "tool_use"))
            self._tool_blocks[position] = self._block
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            index = self._tool_blocks[position]
            piece = {"type": "input_json_delta", "partial_json": arguments}
            out.append(event("content_block_delta", {"index": index, "delta": piece}))
        return b"".join(out)

    def _open(self, block: dict[str, Any], kind: str) -> bytes:
        out = self._close_block()
        self._block += 1
        self._open_kind = kind
        return out + event("content_block_start", {"index": self._block, "content_block": block})

    def _close_block(self) -> bytes:
        if not self._open_kind:
            return b""
        self._open_kind = ""
        return event("content_block_stop", {"index": self._block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self._block, "delta": delta})

    def _finish(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        if self._failed:
            return self._failed
        out = self._start() + self._close_block()
        payload: dict[str, Any] = {
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": anthropic_usage(usage_from_chat(self._usage)),
        }
        if self._meta is not None:
            payload["_tollway"] = self._meta
        return out + event("message_delta", payload) + event("message_stop", {})

    def _fail(self, type_: str, message: str) -> bytes:
        # Held until the chat stream ends: the gateway settles before its last event, so a
        # client that raises on this event (and hangs up) has already been billed as it was.
        self._failed = error_event(type_, message)
        return b""


def _failure_of(chunk: dict[str, Any]) -> tuple[str, str] | None:
    """The error a chat chunk reports, as (Anthropic type, message), or None."""
    error = chunk.get("error")
    if not isinstance(error, dict):
        meta = chunk.get("_tollway")
        choices = chunk.get("choices")
        failed = isinstance(choices, list) and any(
            isinstance(c, dict) and c.get("finish_reason") == "error" for c in choices
        )
        if not failed:
            return None
        error = obj(obj(meta).get("error"))
    type_ = error.get("type")
    message = error.get("message")
    kind = type_ if isinstance(type_, str) and type_ in KNOWN_ERROR_TYPES else _TYPE_BY_CODE.get(str(error.get("code")))
    return kind or "api_error", message if isinstance(message, str) else "the upstream failed mid-stream"


_TYPE_BY_CODE = {"upstream_timeout": "timeout_error", "rate_limit_exceeded": "rate_limit_error"}
