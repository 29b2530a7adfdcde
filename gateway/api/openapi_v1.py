"""What the ``/v1`` routes accept, for the OpenAPI schema only.

The ``/v1`` handlers read their raw body and the pipeline decodes it with its own view types
(fast, and tolerant of fields we do not model, which pass through to the upstream). These
Structs document OpenAI's request shapes at the level a client generator needs: the fields
Tollway reads or adds, each route's required ones. They are never used to parse a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema

__all__ = ["V1_BODY_TYPES", "documented_body", "json_schema"]


class ProviderPreferences(msgspec.Struct, omit_defaults=True):
    """Tollway's routing preferences (OpenRouter's ``provider`` object)."""

    order: list[str] | None = None
    allow_fallbacks: bool | None = None
    sort: Literal["price", "latency", "throughput"] | None = None


class ChatMessage(msgspec.Struct, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool | None = None


class ChatCompletionRequest(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[ChatMessage]
    models: list[str] | None = None  # fallbacks, tried in order
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None  # the end user, recorded on the usage record
    provider: ProviderPreferences | None = None


class CompletionRequest(msgspec.Struct, omit_defaults=True):
    model: str
    prompt: str | list[Any]  # a string, strings, or token ids
    max_tokens: int | None = None
    n: int | None = None
    best_of: int | None = None
    stream: bool = False
    user: str | None = None


class EmbeddingRequest(msgspec.Struct, omit_defaults=True):
    model: str
    input: str | list[Any]  # a string, strings, or token ids
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None


class ImageRequest(msgspec.Struct, omit_defaults=True):
    model: str
    prompt: str
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = None


class SpeechRequest(msgspec.Struct, omit_defaults=True):
    model: str
    input: str
    voice: str
    response_format: str | None = None
    speed: float | None = None


class TranscriptionForm(msgspec.Struct, omit_defaults=True):
    """multipart/form-data: the audio ``file`` and these fields."""

    file: bytes
    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: str | None = None
    user: str | None = None


class VideoForm(msgspec.Struct, omit_defaults=True):
    """multipart/form-data: these fields (and an optional reference image)."""

    model: str
    prompt: str
    seconds: str | None = None
    size: str | None = None


class ResponseCreateRequest(msgspec.Struct, omit_defaults=True):
    """OpenAI's Responses API, stateless: ``store`` must be false (or absent) and
    ``previous_response_id``, ``conversation``, ``background`` are refused."""

    model: str
    input: str | list[dict[str, Any]]  # messages (input_text / input_image), function_call(_output) items
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None  # function tools only
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None  # text.format: text, json_object or json_schema
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    store: bool | None = None  # false or absent: true is refused
    metadata: dict[str, str] | None = None  # accepted, not stored
    user: str | None = None
    models: list[str] | None = None  # fallbacks, tried in order
    provider: ProviderPreferences | None = None


V1_BODY_TYPES: tuple[type[msgspec.Struct], ...] = (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
    SpeechRequest,
    TranscriptionForm,
    VideoForm,
    ResponseCreateRequest,
)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/X"}`` replaced by X itself (these shapes are not recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def json_schema(body: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of ``body``, self-contained (OpenAPI 3.1 takes JSON Schema as it is)."""
    (root,), defs = msgspec.json.schema_components([body])
    schema: dict[str, Any] = _inline(root, defs)
    return schema


def documented_body(body: type[msgspec.Struct], media_type: str = "application/json") -> type[Operation]:
    """An Operation that documents ``body`` as the request body of a handler that reads raw bytes.

    Inline rather than a component: Litestar builds the components from the types its handlers
    declare, and these handlers declare none."""
    schema = json_schema(body)

    @dataclass  # so that the inherited __init__ calls __post_init__
    class DocumentedBody(Operation):
        def __post_init__(self) -> None:
            # A plain dict: Litestar's spec objects serialise it as it is.
            media = OpenAPIMediaType(schema=cast(Schema, schema))
            self.request_body = RequestBody(content={media_type: media}, required=True)

    DocumentedBody.__name__ = DocumentedBody.__qualname__ = f"{body.__name__}Operation"
    return DocumentedBody
