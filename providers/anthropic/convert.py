"""Pure conversions between OpenAI chat-completions payloads and Anthropic's Messages API.

Requests go OpenAI → Anthropic (:func:`to_messages_request`); answers come back Anthropic →
OpenAI, whole (:func:`to_chat_completion`) or as a stream (:class:`StreamTranslator`). Nothing
here does I/O or reads the clock: callers pass ``created``.

``response_format`` is honoured with an instruction appended to the system prompt rather than
a forced tool: the answer then stays ordinary assistant text (streamed as ``delta.content``,
as OpenAI clients expect) and ``tool_choice`` stays free for the caller's own tools.
"""

from __future__ import annotations

from typing import Any

import msgspec

from providers.anthropic.errors import InvalidChatRequest, stream_error
from providers.anthropic.types import (
    KNOWN_EVENTS,
    ContentBlockDelta,
    ContentBlockStart,
    MessageDelta,
    MessageStart,
    MessageStop,
    MessageView,
    StreamError,
    UsageView,
    event_decoder,
)
from providers.base import StreamChunk, Usage, reported_count
from providers.errors import UpstreamBadResponse
from providers.sse import SSEEvent

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # The server paused a long-running server tool; the turn is over as far as the caller sees.
    "pause_turn": "stop",
}

_json_encoder = msgspec.json.Encoder()


# ---------------------------------------------------------------- OpenAI request → Anthropic


def to_messages_request(body: dict[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """An Anthropic ``/v1/messages`` body (without ``stream``) for an OpenAI chat body.

    OpenAI-only parameters (``n``, ``logprobs``, ``presence_penalty``, ``seed``, …) are dropped.
    """
    system, messages = _messages(body.get("messages"))
    instruction = _response_format_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    request: dict[str, Any] = {"model": body.get("model", ""), "max_tokens": max_tokens, "messages": messages}
    if system:
        request["system"] = "\n\n".join(system)
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    stop = body.get("stop")
    if isinstance(stop, str):
        request["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        request["stop_sequences"] = [str(item) for item in stop]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            request[name] = body[name]
    if isinstance(body.get("user"), str) and body["user"]:
        request["metadata"] = {"user_id": body["user"]}
    return request


def _messages(raw: Any) -> tuple[list[str], list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidChatRequest("'messages' must be a non-empty list")
    system: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for message in raw:
        if not isinstance(message, dict):
            raise InvalidChatRequest("every message must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            text = _plain_text(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            target, blocks = "user", _content_blocks(message.get("content"))
        elif role == "assistant":
            target, blocks = "assistant", _assistant_blocks(message)
        elif role == "tool":
            target, blocks = "user", [_tool_result_block(message)]
        else:
            raise InvalidChatRequest(f"message role {role!r} is not supported by this provider")
        if not blocks:
            continue
        # Anthropic requires strictly alternating roles: merge what OpenAI allows to repeat.
        if turns and turns[-1][0] == target:
            turns[-1][1].extend(blocks)
        else:
            turns.append((target, blocks))
    return system, [{"role": role, "content": _compact(blocks)} for role, blocks in turns]


def _compact(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _plain_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    raise InvalidChatRequest("message content must be a string or a list of parts")


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        # Anthropic rejects empty text blocks.
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidChatRequest("message content must be a string or a list of parts")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise InvalidChatRequest("an image_url part needs a url")
            blocks.append(_image_block(url))
        else:
            raise InvalidChatRequest(f"content part type {kind!r} is not supported by this provider")
    return blocks


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type:
            raise InvalidChatRequest("image data URLs must look like data:<media type>;base64,<data>")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidChatRequest("image URLs must be http(s) or base64 data URLs")


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = _content_blocks(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise InvalidChatRequest("an assistant tool call needs a function")
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": _arguments(function.get("arguments")),
            }
        )
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        decoded = msgspec.json.decode(raw) if isinstance(raw, str | bytes) else None
    except msgspec.DecodeError:
        decoded = None
    # Anthropic's tool_use.input must be an object; guessing would silently change the call.
    if not isinstance(decoded, dict):
        raise InvalidChatRequest("tool call arguments must be a JSON object")
    return decoded


def _tool_result_block(message: dict[str, Any]) -> dict[str, Any]:
    tool_use_id = message.get("tool_call_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise InvalidChatRequest("a tool message needs a tool_call_id")
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if isinstance(content, list):
        block["content"] = _content_blocks(content)
    elif content:
        block["content"] = str(content)
    return block


def _tools(raw: Any) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    for tool in raw or ():
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise InvalidChatRequest("only function tools are supported by this provider")
        function = tool["function"]
        converted: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            converted["description"] = function["description"]
        converted["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        tools.append(converted)
    return tools


def _tool_choice(raw: Any, parallel: Any) -> dict[str, Any] | None:
    choice: dict[str, Any] | None
    if raw is None:
        choice = None
    elif raw == "auto":
        choice = {"type": "auto"}
    elif raw == "required":
        choice = {"type": "any"}
    elif raw == "none":
        return {"type": "none"}
    elif isinstance(raw, dict) and isinstance(raw.get("function"), dict) and raw["function"].get("name"):
        choice = {"type": "tool", "name": raw["function"]["name"]}
    else:
        raise InvalidChatRequest("unsupported tool_choice")
    if parallel is False:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return choice


def _response_format_instruction(raw: Any) -> str:
    if not isinstance(raw, dict):
        return ""
    kind = raw.get("type")
    if kind == "json_object":
        return "Respond with a single valid JSON object and nothing else: no prose, no code fences."
    if kind == "json_schema":
        spec: dict[str, Any] = raw["json_schema"] if isinstance(raw.get("json_schema"), dict) else {}
        schema = _json_encoder.encode(spec.get("schema", {})).decode()
        name = f" named {spec['name']!r}" if spec.get("name") else ""
        return (
            "Respond with a single valid JSON object and nothing else (no prose, no code fences) "
            f"that conforms to this JSON Schema{name}: {schema}"
        )
    return ""


# ---------------------------------------------------------------- Anthropic answer → OpenAI


def finish_reason(stop_reason: str | None) -> str:
    return _FINISH_REASONS.get(stop_reason or "", "stop")


def usage_from_view(view: UsageView | None) -> Usage:
    """OpenAI's convention: cached reads and cache writes are part of the prompt total."""
    if view is None:
        return Usage()
    counts = [
        reported_count(view.input_tokens),
        reported_count(view.cache_read_input_tokens),
        reported_count(view.cache_creation_input_tokens),
    ]
    if any(count is None for count in counts):
        return Usage(malformed=True)
    fresh, read, written = (count or 0 for count in counts)
    return Usage.reported(fresh + read + written, view.output_tokens, read, written)


def openai_usage(usage: Usage) -> dict[str, Any]:
    details: dict[str, int] = {"cached_tokens": usage.cached_input_tokens}
    if usage.cache_write_tokens:
        # OpenAI's usage has no cache writes; named as OpenRouter names them, so a client (and
        # /v1/messages, which answers in Anthropic's usage) can tell them from fresh input.
        details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": details,
    }


def to_chat_completion(message: MessageView, *, created: int) -> tuple[dict[str, Any], Usage]:
    """A ``chat.completion`` body and its usage for a whole Anthropic message."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            arguments = _json_encoder.encode(block.input if block.input is not None else {}).decode()
            tool_calls.append(
                {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}}
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = usage_from_view(message.usage)
    body = {
        "id": message.id,
        "object": "chat.completion",
        "created": created,
        "model": message.model,
        "choices": [
            {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason(message.stop_reason)}
        ],
        "usage": openai_usage(usage),
    }
    return body, usage


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` payloads out.

    Stateful because OpenAI numbers tool calls by their position among tool calls while
    Anthropic numbers content blocks (text blocks included), and because usage is split
    between ``message_start`` (input) and ``message_delta`` (output).
    """

    def __init__(self, provider: str, *, created: int) -> None:
        self._provider = provider
        self._created = created
        self._id = ""
        self._model = ""
        self._usage = UsageView()
        self._tool_positions: dict[int, int] = {}

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        """The chunks for one SSE event; raises :class:`ProviderError` on an ``error`` event."""
        if event.event and event.event not in KNOWN_EVENTS:
            return []  # new event types may appear (Anthropic's versioning policy): skip them
        try:
            decoded = event_decoder.decode(event.data)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(
                f"upstream {self._provider} sent a malformed stream event", provider=self._provider
            ) from error
        match decoded:
            case MessageStart(message=message):
                self._id, self._model = message.id, message.model
                self._merge_usage(message.usage)
                return [self._chunk({"role": "assistant", "content": ""})]
            case ContentBlockStart(index=index, content_block=block):
                if block.type == "text" and block.text:
                    return [self._chunk({"content": block.text}, text=block.text)]
                if block.type == "tool_use":
                    position = self._tool_positions[index] = len(self._tool_positions)
                    call = {"index": position, "id": block.id, "type": "function"}
                    call["function"] = {"name": block.name, "arguments": ""}
                    return [self._chunk({"tool_calls": [call]}, text=block.name)]
            case ContentBlockDelta(index=index, delta=delta):
                if delta.type == "text_delta" and delta.text:
                    return [self._chunk({"content": delta.text}, text=delta.text)]
                if delta.type == "input_json_delta" and delta.partial_json and index in self._tool_positions:
                    call = {"index": self._tool_positions[index], "function": {"arguments": delta.partial_json}}
                    return [self._chunk({"tool_calls": [call]}, text=delta.partial_json)]
            case MessageDelta(delta=body, usage=update):
                self._merge_usage(update)
                return [self._chunk({}, finish=finish_reason(body.stop_reason))]
            case MessageStop():
                usage = usage_from_view(self._usage)
                payload = {**self._base(), "choices": [], "usage": openai_usage(usage)}
                return [StreamChunk(data=_json_encoder.encode(payload), usage=usage, model=self._model)]
            case StreamError(error=detail):
                raise stream_error(self._provider, detail.type, detail.message)
        return []  # ping, content_block_stop, thinking and other deltas carry nothing for OpenAI

    def _merge_usage(self, update: UsageView | None) -> None:
        # message_delta's counters are cumulative and may repeat or omit message_start's.
        if update is None:
            return
        for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            value = getattr(update, field)
            if value is not None:
                setattr(self._usage, field, value)

    def _base(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}

    def _chunk(self, delta: dict[str, Any], *, text: str = "", finish: str | None = None) -> StreamChunk:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return StreamChunk(
            data=_json_encoder.encode({**self._base(), "choices": [choice]}),
            text=text,
            finished=finish is not None,
            model=self._model,
        )
