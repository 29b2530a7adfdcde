"""View types: only the fields of Gemini ``GenerateContentResponse`` payloads the gateway reads.

Gemini's JSON is camelCase and omits proto3 defaults (a candidate at index 0 may carry no
``index``), so every field has a default and unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any

import msgspec


class FunctionCallView(msgspec.Struct, rename="camel"):
    name: str = ""
    args: dict[str, Any] | None = None
    id: str | None = None


class PartView(msgspec.Struct, rename="camel"):
    text: str | None = None
    # Thought summaries (``includeThoughts``) are reasoning, not answer text.
    thought: bool = False
    function_call: FunctionCallView | None = None


class ContentView(msgspec.Struct, rename="camel"):
    parts: list[PartView] = []
    role: str = ""


class CandidateView(msgspec.Struct, rename="camel"):
    content: ContentView | None = None
    finish_reason: str | None = None
    index: int | None = None


class UsageMetadataView(msgspec.Struct, rename="camel"):
    # Untyped: checked by providers.base.Usage.reported (a lying upstream must not break a chunk).
    prompt_token_count: Any = None
    candidates_token_count: Any = None
    thoughts_token_count: Any = None
    cached_content_token_count: Any = None


class PromptFeedbackView(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class ErrorDetailView(msgspec.Struct):
    reason: str = ""


class ErrorBodyView(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[ErrorDetailView] = []


class ResponseView(msgspec.Struct, rename="camel"):
    """One whole response, or one streamed fragment of it; ``error`` is set on an error payload."""

    candidates: list[CandidateView] = []
    prompt_feedback: PromptFeedbackView | None = None
    usage_metadata: UsageMetadataView | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: ErrorBodyView | None = None


class ErrorView(msgspec.Struct):
    error: ErrorBodyView | None = None


response_decoder = msgspec.json.Decoder(ResponseView)
# Google sends errors as an object, but the non-SSE stream endpoint wraps them in an array.
error_decoder = msgspec.json.Decoder(ErrorView | list[ErrorView])
