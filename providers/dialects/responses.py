"""OpenAI's Responses API spoken over chat completions: pure translations, no I/O.

``POST /v1/responses`` is served statelessly: a request becomes a chat-completions body that the
chat pipeline meters and routes to any provider kind, and its answer becomes a ``response``
object (:func:`response_from_chat`; streams: :mod:`providers.dialects.responses_stream`).
Shapes follow the official SDK's types (openai-python ``src/openai/types/responses/``).

What needs stored state (``store: true``, ``previous_response_id``, ``conversation``,
``background``, a stored ``prompt``) and what chat completions cannot express (hosted tools,
file inputs) is refused with :class:`ResponsesRequestError`, naming the field in ``param``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "ResponsesRequest",
    "ResponsesRequestError",
    "chat_body_from_responses",
    "response_from_chat",
    "response_shell",
    "responses_usage",
]

OutputTokens = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
# Stateful fields: any value other than these is refused (we keep nothing between requests).
_STATELESS_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "store": (None, False),
    "background": (None, False),
    "previous_response_id": (None,),
    "conversation": (None,),
    "prompt": (None,),
}
# msgspec names the field "at `$.x[0].y`", or says "missing required field `x`".
_PARAM = re.compile(r"at `\$\.([^`]+)`|missing required field `([^`]+)`")
# Tollway's own routing fields, passed on to the chat pipeline as they are.
_GATEWAY_FIELDS = ("models", "provider", "user")
_SAMPLING_FIELDS = ("temperature", "top_p")


class ResponsesRequestError(ValueError):
    """A request the stateless translation refuses; ``param`` names the field (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ResponsesRequest(msgspec.Struct):
    """The fields of a Responses request we read; unknown ones are tolerated and ignored."""

    model: str
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: OutputTokens | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    metadata: dict[str, str] | None = None
    user: str | None = None
    models: list[str] | None = None
    provider: dict[str, Any] | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    prompt: Any = None


class _Message(msgspec.Struct):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]
    type: Literal["message"] = "message"


class _FunctionCall(msgspec.Struct):
    call_id: str
    name: str
    arguments: str
    type: Literal["function_call"] = "function_call"


class _FunctionCallOutput(msgspec.Struct):
    call_id: str
    output: str | list[dict[str, Any]]
    type: Literal["function_call_output"] = "function_call_output"


class _FunctionTool(msgspec.Struct):
    name: str
    type: Literal["function"] = "function"
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _convert(value: Any, kind: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as error:
        # msgspec says "at `$.x`"; the client's param names the whole path: input[2].content.
        detail = str(error).replace("`$", f"`{where}")
        raise ResponsesRequestError(f"invalid {where}: {detail}", param=where) from error


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """The request's view, or a refusal naming the field at fault."""
    try:
        request = msgspec.convert(body, ResponsesRequest)
    except msgspec.ValidationError as error:
        message = str(error)
        found = _PARAM.search(message)
        param = next((group for group in found.groups() if group), None) if found else None
        raise ResponsesRequestError(f"invalid request: {message}", param=param) from error
    for field, allowed in _STATELESS_DEFAULTS.items():
        if getattr(request, field) not in allowed:
            raise ResponsesRequestError(
                f"{field!r} needs stored state; Tollway serves /v1/responses statelessly (store: false)", param=field
            )
    return request


# -- request: Responses → chat completions -------------------------------------------------


def _content_parts(content: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "refusal"):
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise ResponsesRequestError(f"a {kind} part needs its text as a string", param=at)
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise ResponsesRequestError("an input_image needs an image_url (file_id is not supported)", param=at)
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise ResponsesRequestError(f"content part type {kind!r} is not supported here", param=f"{at}.type")
    return parts


def _message(item: _Message, where: str) -> dict[str, Any]:
    # Providers other than OpenAI know "system", not "developer"; both mean the same here.
    role = "system" if item.role == "developer" else item.role
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    parts = _content_parts(item.content, f"{where}.content")
    if role != "user" or all(part["type"] == "text" for part in parts):
        # Only user turns carry images; the others are their text.
        return {"role": role, "content": "".join(part.get("text", "") for part in parts)}
    return {"role": role, "content": parts}


def _output_text(output: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(output, str):
        return output
    return "".join(part.get("text", "") for part in _content_parts(output, where))


def _messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    items = request.input
    if items is None:
        raise ResponsesRequestError("'input' is required", param="input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    for index, raw in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(raw, dict):
            raise ResponsesRequestError(f"{where} must be an object", param=where)
        kind = raw.get("type", "message")
        if kind == "message":
            messages.append(_message(_convert(raw, _Message, where), where))
        elif kind == "function_call":
            call = _convert(raw, _FunctionCall, where)
            tool_call = {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                # Parallel calls (and the text before them) are one assistant turn in chat.
                last.setdefault("tool_calls", []).append(tool_call)
                if last.get("content") == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
        elif kind == "function_call_output":
            result = _convert(raw, _FunctionCallOutput, where)
            content = _output_text(result.output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": result.call_id, "content": content})
        elif kind == "reasoning":
            continue  # a model's own reasoning summary, sent back by agents: not a chat turn
        else:
            raise ResponsesRequestError(f"input item type {kind!r} is not supported", param=f"{where}.type")
    if not any(message["role"] != "system" for message in messages):
        raise ResponsesRequestError("'input' has no message to answer", param="input")
    return messages


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = []
    for index, raw in enumerate(tools):
        where = f"tools[{index}]"
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind != "function":
            raise ResponsesRequestError(
                f"tool type {kind!r} is not supported: only function tools are", param=f"{where}.type"
            )
        tool = _convert(raw, _FunctionTool, where)
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object"}
        if tool.strict is not None:
            function["strict"] = tool.strict
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
        raise ResponsesRequestError(f"tool_choice {choice!r} is not one of auto, none, required", param="tool_choice")
    name = choice.get("name")
    if choice.get("type") == "function" and isinstance(name, str):
        return {"type": "function", "function": {"name": name}}
    raise ResponsesRequestError(
        f"tool_choice of type {choice.get('type')!r} is not supported: use auto, none, required or a function",
        param="tool_choice",
    )


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    form = text.get("format")
    if form is None:
        return None
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(form, dict)
        if not isinstance(form.get("name"), str) or not isinstance(form.get("schema"), dict):
            raise ResponsesRequestError("a json_schema format needs a name and a schema", param="text.format")
        schema = {key: form[key] for key in ("name", "schema", "strict", "description") if key in form}
        return {"type": "json_schema", "json_schema": schema}
    raise ResponsesRequestError(f"text.format type {kind!r} is not supported", param="text.format.type")


def chat_body_from_responses(body: dict[str, Any]) -> tuple[ResponsesRequest, dict[str, Any]]:
    """The request's view and the chat-completions body that answers it."""
    request = parse_request(body)
    chat: dict[str, Any] = {"model": request.model, "messages": _messages(request)}
    if request.tools:
        chat["tools"] = _tools(request.tools)
        if request.parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tool_choice is not None:
        chat["tool_choice"] = _tool_choice(request.tool_choice)
    if request.text is not None:
        response_format = _response_format(request.text)
        if response_format is not None:
            chat["response_format"] = response_format
    if request.max_output_tokens is not None:
        chat["max_completion_tokens"] = request.max_output_tokens
    for field in (*_SAMPLING_FIELDS, *_GATEWAY_FIELDS):
        value = getattr(request, field)
        if value is not None:
            chat[field] = value
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the usage block response.completed carries
    return request, chat


# -- answer: chat completion → response -----------------------------------------------------


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """A chat ``usage`` block in the Responses API's names."""
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _count(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(completion_details.get("reasoning_tokens"))},
        "total_tokens": prompt + completion,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def response_shell(request: ResponsesRequest, response_id: str, created_at: int) -> dict[str, Any]:
    """A response object before any output: what ``response.created`` carries, and the frame of
    the final one. Settings echo the request as the API does."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "model": request.model,
        "output": [],
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": None,
        "store": False,
        "temperature": request.temperature,
        "text": request.text if request.text is not None else {"format": {"type": "text"}},
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": request.tools or [],
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
    }


def incomplete_reason(finish_reason: Any) -> str | None:
    """Why a response stopped short, in the Responses API's words (None: it did not)."""
    if finish_reason == "length":
        return "max_output_tokens"
    if finish_reason == "content_filter":
        return "content_filter"
    return None


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)] if status != "in_progress" else [],
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def item_id(prefix: str, response_id: str, index: int) -> str:
    """Output item ids derived from the response's, so they are unique and reproducible."""
    return f"{prefix}_{response_id.removeprefix('resp_')}{index:02d}"


def response_from_chat(
    chat: dict[str, Any], request: ResponsesRequest, response_id: str, created_at: int
) -> dict[str, Any]:
    """A ``chat.completion`` body as a ``response`` object (``_tollway`` kept)."""
    response = response_shell(request, response_id, created_at)
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    reason = incomplete_reason(choice.get("finish_reason"))
    status = "incomplete" if reason else "completed"
    output: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        output.append(message_item(item_id("msg", response_id, len(output)), content, status))
    elif isinstance(message.get("refusal"), str) and message["refusal"]:
        item = message_item(item_id("msg", response_id, len(output)), "", status)
        item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        output.append(
            function_call_item(
                item_id("fc", response_id, len(output)),
                str(call.get("id") or ""),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                "completed",
            )
        )
    response["status"] = status
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["output"] = output
    response["usage"] = responses_usage(chat.get("usage"))
    if "_tollway" in chat:
        response["_tollway"] = chat["_tollway"]
    return response
