"""Pure translations between Anthropic's Messages API (as a client speaks it to Tollway) and
OpenAI chat completions (what the gateway's pipeline runs).

Inbound: a Messages request → a chat body (:func:`to_chat_body`). Outbound: a chat completion
→ a Message (:func:`to_message`); a chat stream's bytes become Anthropic's events in
:mod:`providers.dialects.messages_stream`. Nothing here does I/O or reads the clock.

Usage conventions differ: Anthropic's ``input_tokens`` excludes the prompt tokens read from or
written to its cache, Tollway's :class:`Usage` (OpenAI's convention) includes them;
:func:`anthropic_usage` and :func:`usage_from_anthropic` convert, :func:`usage_from_chat`
reads a chat ``usage`` block.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec

from providers.base import Usage
from providers.errors import ProviderError

__all__ = [
    "DEFAULT_ANTHROPIC_VERSION",
    "ERROR_TYPES",
    "KNOWN_ERROR_TYPES",
    "CountTokensRequest",
    "InvalidMessagesRequest",
    "MessagesRequest",
    "anthropic_usage",
    "check_version",
    "error_type_for",
    "obj",
    "parse_request",
    "stop_reason",
    "to_chat_body",
    "to_message",
    "usage_from_anthropic",
    "usage_from_chat",
]

# What a request without ``anthropic-version`` is served as: the only version Anthropic has
# published for the Messages API, and the one every SDK sends.
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")

# HTTP status → Anthropic error type (the SDK picks its exception class by status; the type
# is what a client that reads the body sees). 402 is Anthropic's own ``billing_error``.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
KNOWN_ERROR_TYPES = frozenset(ERROR_TYPES.values())

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
_encoder = msgspec.json.Encoder()
T = TypeVar("T")


class InvalidMessagesRequest(ProviderError):
    """The caller's Messages body is malformed or asks for what cannot be translated."""

    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class MessageParam(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]]


class Metadata(msgspec.Struct):
    user_id: str | None = None


class MessagesRequest(msgspec.Struct):
    """The fields of a Messages request Tollway reads; ``max_tokens`` is required, as upstream."""

    model: str
    max_tokens: MaxTokens
    messages: Annotated[list[MessageParam], msgspec.Meta(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # no chat equivalent: accepted and dropped
    metadata: Metadata | None = None
    # Tollway's own routing fields, passed on to the chat pipeline as they are.
    models: list[str] | None = None
    provider: dict[str, Any] | None = None


class CountTokensRequest(msgspec.Struct):
    """``/v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: str
    messages: Annotated[list[MessageParam], msgspec.Meta(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


_PARAM = re.compile(r"`\$\.([A-Za-z_][A-Za-z0-9_]*)|field `([^`]+)`")


def parse_request(raw: bytes, kind: type[T]) -> T:
    """Decode and check a body: every failure is an :class:`InvalidMessagesRequest` naming the field."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as error:
        match = _PARAM.search(str(error))
        param = (match.group(1) or match.group(2)) if match else None
        raise InvalidMessagesRequest(f"invalid request: {error}", param=param) from error
    except msgspec.DecodeError as error:
        raise InvalidMessagesRequest(f"request body is not valid JSON: {error}") from error
    except RecursionError as error:
        raise InvalidMessagesRequest("request body is not valid JSON: it nests too deeply") from error


def check_version(value: str | None) -> str:
    """The ``anthropic-version`` to serve: the header's (a date), else the default."""
    if value is None or value == "":
        return DEFAULT_ANTHROPIC_VERSION
    if not _VERSION.fullmatch(value):
        raise InvalidMessagesRequest("anthropic-version must be a date such as 2023-06-01", param="anthropic-version")
    return value


def error_type_for(status: int, type_: str | None = None) -> str:
    """The Anthropic error type for one of the gateway's errors."""
    if type_ in KNOWN_ERROR_TYPES and status not in ERROR_TYPES:
        return str(type_)
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


# ---------------------------------------------------------------- Messages request → chat body


def to_chat_body(request: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    """An OpenAI chat body for a Messages request (``stream_options`` added when streaming)."""
    messages: list[dict[str, Any]] = []
    system = _system_text(request.system)
    if system:
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        messages.extend(_turn(message))
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    tools = [_tool(tool) for tool in request.tools or ()]
    if tools:
        body["tools"] = tools
    if request.tool_choice is not None:
        choice, parallel = _tool_choice(request.tool_choice)
        if choice is not None and tools:
            body["tool_choice"] = choice
        if parallel is not None and tools:
            body["parallel_tool_calls"] = parallel
    if isinstance(request, MessagesRequest):
        body["max_tokens"] = request.max_tokens
        if request.stop_sequences:
            body["stop"] = request.stop_sequences
        for name in ("temperature", "top_p"):
            if getattr(request, name) is not None:
                body[name] = getattr(request, name)
        if request.metadata is not None and request.metadata.user_id:
            body["user"] = request.metadata.user_id
        if request.models is not None:
            body["models"] = request.models
        if request.provider is not None:
            body["provider"] = request.provider
        if request.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
    return body


def _system_text(system: str | list[dict[str, Any]] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for block in system:
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise InvalidMessagesRequest("system blocks must be text blocks", param="system")
        texts.append(block["text"])
    return "\n\n".join(texts)


def _turn(message: MessageParam) -> list[dict[str, Any]]:
    if message.role not in ("user", "assistant"):
        raise InvalidMessagesRequest(f"message role must be user or assistant, not {message.role!r}", param="messages")
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return [_assistant(message.content)]
    # Tool results become tool messages, which chat wants right after the assistant's calls.
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in message.content:
        kind = block.get("type")
        if kind == "tool_result":
            tools.append(_tool_result(block))
        elif kind == "text":
            parts.append({"type": "text", "text": _text_of(block)})
        elif kind == "image":
            parts.append(_image(block))
        else:
            raise InvalidMessagesRequest(f"content block type {kind!r} is not supported here", param="messages")
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _text_of(block: dict[str, Any]) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidMessagesRequest("a text block needs a string text", param="messages")
    return text


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidMessagesRequest("an image block needs a source", param="messages")
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise InvalidMessagesRequest("a base64 image needs media_type and data", param="messages")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise InvalidMessagesRequest("an image source must be base64 or url", param="messages")


def _assistant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(_text_of(block))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise InvalidMessagesRequest("a tool_use block needs an id and a name", param="messages")
            arguments = _encoder.encode(block.get("input") if block.get("input") is not None else {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own reasoning: no chat equivalent, and not needed to continue
        else:
            raise InvalidMessagesRequest(f"assistant block type {kind!r} is not supported here", param="messages")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_result(block: dict[str, Any]) -> dict[str, Any]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise InvalidMessagesRequest("a tool_result block needs a tool_use_id", param="messages")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(_text_of(part) for part in content if isinstance(part, dict) and part.get("type") == "text")
    else:
        raise InvalidMessagesRequest("tool_result content must be a string or blocks", param="messages")
    if block.get("is_error") is True:
        text = "Error: " + text  # chat has no error flag on a tool message: said in words
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom") or not isinstance(tool.get("name"), str):
        raise InvalidMessagesRequest("only custom tools with a name are supported", param="tools")
    function: dict[str, Any] = {"name": tool["name"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    schema = tool.get("input_schema")
    function["parameters"] = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> tuple[Any, bool | None]:
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    kind = choice.get("type")
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise InvalidMessagesRequest("tool_choice type must be auto, any, tool or none", param="tool_choice")


# ---------------------------------------------------------------- usage, both ways


def anthropic_usage(usage: Usage) -> dict[str, int]:
    """Anthropic's usage block: ``input_tokens`` without the cache reads and writes."""
    fresh = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
    return {
        "input_tokens": fresh,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def usage_from_anthropic(block: dict[str, Any]) -> Usage:
    """Tollway's :class:`Usage` (cache reads and writes inside the prompt total) for Anthropic's block."""
    fresh, read, written = (block.get(name) or 0 for name in _ANTHROPIC_INPUTS)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (fresh, read, written)):
        return Usage(malformed=True)
    return Usage.reported(fresh + read + written, block.get("output_tokens") or 0, read, written)


_ANTHROPIC_INPUTS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def usage_from_chat(block: Any) -> Usage:
    """A chat ``usage`` block read as Tollway's :class:`Usage`. Cache writes are read where
    gateways put them: ``prompt_tokens_details.cache_write_tokens`` or a top-level
    ``cache_creation_input_tokens``."""
    if not isinstance(block, dict):
        return Usage()
    details = block.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    written = details.get("cache_write_tokens") or block.get("cache_creation_input_tokens") or 0
    return Usage.reported(
        block.get("prompt_tokens") or 0, block.get("completion_tokens") or 0, details.get("cached_tokens") or 0, written
    )


# ---------------------------------------------------------------- chat completion → Message


def stop_reason(finish_reason: Any) -> str:
    return _STOP_REASONS.get(finish_reason if isinstance(finish_reason, str) else "", "end_turn")


def to_message(completion: dict[str, Any], *, message_id: str, model: str) -> dict[str, Any]:
    """A Message for a chat completion; ``model`` is the slug the client asked for, and the
    completion's ``_tollway`` member, when it has one, is kept."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    reply = obj(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = _reply_text(reply.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(_tool_use(str(call.get("id") or ""), str(function.get("name") or ""), function))
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(usage_from_chat(completion.get("usage"))),
    }
    if "_tollway" in completion:
        message["_tollway"] = completion["_tollway"]
    return message


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _reply_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tool_use(call_id: str, name: str, function: dict[str, Any]) -> dict[str, Any]:
    arguments = function.get("arguments")
    try:
        decoded = msgspec.json.decode(arguments) if isinstance(arguments, str) and arguments else {}
    except msgspec.DecodeError:
        decoded = {}
    # Anthropic's tool_use.input is always an object; a model's malformed arguments are not.
    return {"type": "tool_use", "id": call_id, "name": name, "input": decoded if isinstance(decoded, dict) else {}}
