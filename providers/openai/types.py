"""View types: only the fields of OpenAI payloads the gateway reads (msgspec ignores the rest)."""

from __future__ import annotations

from typing import Any

import msgspec


class UsageView(msgspec.Struct, gc=False):
    # Untyped on purpose: a lying upstream's "12" or 1e308 must not break the chunk that carries
    # it; providers.base.Usage.reported checks each counter.
    prompt_tokens: Any = None
    completion_tokens: Any = None
    prompt_tokens_details: Any = None


class FunctionDelta(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, gc=False):
    function: FunctionDelta | None = None


class Delta(msgspec.Struct, gc=False):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct, gc=False):
    delta: Delta | None = None
    text: str | None = None  # legacy completions stream text here, not in a delta
    finish_reason: Any = None


class ChunkView(msgspec.Struct, gc=False):
    choices: list[ChunkChoice] = []
    model: Any = None  # untyped: a chunk with an odd model is forwarded, its model left alone
    usage: UsageView | None = None


class ErrorDetail(msgspec.Struct):
    message: str = ""
    type: str | None = None
    code: str | int | None = None
    param: Any = None  # untyped: checked by UpstreamHTTPError, never trusted to be a string


class ErrorView(msgspec.Struct):
    error: ErrorDetail | str | None = None


chunk_decoder = msgspec.json.Decoder(ChunkView)
error_decoder = msgspec.json.Decoder(ErrorView)
