"""View types: only the fields of Anthropic Messages payloads the gateway reads.

msgspec ignores every field not declared here, so new upstream fields never break decoding.
Stream events are a tagged union on ``type``; event types we do not know are skipped before
decoding (Anthropic's versioning policy allows new ones), see :data:`KNOWN_EVENTS`.
"""

from __future__ import annotations

from typing import Any

import msgspec


class UsageView(msgspec.Struct):
    # Anthropic sends ``null`` for cache counters on models or requests without caching. Untyped
    # so that a lying upstream's garbage is caught by providers.base.Usage.reported, not by a
    # decode error that would lose the whole message.
    input_tokens: Any = None
    output_tokens: Any = None
    cache_creation_input_tokens: Any = None
    cache_read_input_tokens: Any = None


class BlockView(msgspec.Struct):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: Any = None


class MessageView(msgspec.Struct):
    id: str = ""
    model: str = ""
    content: list[BlockView] = []
    stop_reason: str | None = None
    usage: UsageView | None = None


class DeltaView(msgspec.Struct):
    type: str
    text: str = ""
    partial_json: str = ""


class MessageDeltaBody(msgspec.Struct):
    stop_reason: str | None = None
    stop_sequence: str | None = None


class ErrorDetail(msgspec.Struct):
    type: str = ""
    message: str = ""


class ErrorView(msgspec.Struct):
    error: ErrorDetail | None = None


class MessageStart(msgspec.Struct, tag="message_start", tag_field="type"):
    message: MessageView


class ContentBlockStart(msgspec.Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: BlockView


class ContentBlockDelta(msgspec.Struct, tag="content_block_delta", tag_field="type"):
    index: int
    delta: DeltaView


class ContentBlockStop(msgspec.Struct, tag="content_block_stop", tag_field="type"):
    index: int


class MessageDelta(msgspec.Struct, tag="message_delta", tag_field="type"):
    delta: MessageDeltaBody
    usage: UsageView | None = None


class MessageStop(msgspec.Struct, tag="message_stop", tag_field="type"):
    pass


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


class StreamError(msgspec.Struct, tag="error", tag_field="type"):
    error: ErrorDetail


StreamEvent = (
    MessageStart
    | ContentBlockStart
    | ContentBlockDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | Ping
    | StreamError
)

KNOWN_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)

message_decoder = msgspec.json.Decoder(MessageView)
event_decoder: msgspec.json.Decoder[StreamEvent] = msgspec.json.Decoder(StreamEvent)
error_decoder = msgspec.json.Decoder(ErrorView)
