"""Pure conversions between OpenAI chat-completions payloads and Gemini ``generateContent``.

Requests: OpenAI messages become Gemini ``contents`` (``user`` / ``model`` turns, consecutive
turns of one role merged because Gemini expects them to alternate) plus a ``systemInstruction``.
Responses and streamed fragments become ``chat.completion`` / ``chat.completion.chunk`` dicts.
Nothing here does I/O; ids and timestamps come in as arguments so the output is reproducible.
"""

from __future__ import annotations

import binascii
import mimetypes
from typing import Any
from urllib.parse import urlsplit

import msgspec

from providers.base import StreamChunk, Usage, reported_count
from providers.errors import UpstreamBadResponse
from providers.gemini.errors import GeminiRequestError, stream_error
from providers.gemini.types import CandidateView, ResponseView, UsageMetadataView, response_decoder
from providers.sse import SSEEvent

# JSON Schema keywords Gemini's OpenAPI-subset ``Schema`` rejects with INVALID_ARGUMENT.
# ``additionalProperties`` is accepted only by newer models, so it is dropped everywhere.
UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "$id", "$comment", "additionalProperties", "strict"})

CONTENT_FILTER_REASONS = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
)

_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_GENERATION_FIELDS = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
_json_encoder = msgspec.json.Encoder()


# ---------------------------------------------------------------- requests


def request_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions body as a Gemini ``GenerateContentRequest`` (model goes in the URL)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise GeminiRequestError("messages must be a list")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict):
            raise GeminiRequestError("each message must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _texts(message.get("content")))
            continue
        if role == "user":
            turn_role, parts = "user", _user_parts(message.get("content"))
        elif role == "assistant":
            turn_role, parts = "model", _assistant_parts(message, tool_names)
        elif role == "tool":
            turn_role, parts = "user", [_tool_result_part(message, tool_names)]
        else:
            raise GeminiRequestError(f"unsupported message role {role!r}")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
    tool_config = _tool_config(body.get("tool_choice"))
    if tool_config:
        request["toolConfig"] = tool_config
    generation = _generation_config(body)
    if generation:
        request["generationConfig"] = generation
    return request


def _texts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise GeminiRequestError("only text parts are allowed here")
            texts.append(part["text"])
        return texts
    raise GeminiRequestError("message content must be a string or a list of parts")


def _user_parts(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": text} for text in _texts(content)]
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise GeminiRequestError("image_url.url must be a string")
            parts.append(_media_part(url))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = _AUDIO_TYPES.get(str(audio.get("format")))
            if mime is None or not isinstance(audio.get("data"), str):
                raise GeminiRequestError("input_audio needs base64 data and a wav or mp3 format")
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        else:
            raise GeminiRequestError(f"unsupported content part type {kind!r}")
    return parts


def _media_part(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not mime:
            raise GeminiRequestError("data URLs must be base64 with a media type")
        try:
            binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError) as error:
            raise GeminiRequestError("data URL is not valid base64") from error
        return {"inlineData": {"mimeType": mime, "data": data}}
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", "gs"):
        raise GeminiRequestError("image URLs must be data:, http(s): or gs: URLs")
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    # Gemini requires a mimeType with fileData; most image URLs without an extension are JPEG.
    return {"fileData": {"mimeType": guessed or "image/jpeg", "fileUri": url}}


def _assistant_parts(message: dict[str, Any], tool_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": text} for text in _texts(message.get("content"))]
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise GeminiRequestError("assistant tool_calls need a function name")
        name: str = function["name"]
        if isinstance(call.get("id"), str):
            # Later tool messages name their call only by id; the latest assistant turn wins.
            tool_names[call["id"]] = name
        parts.append({"functionCall": {"name": name, "args": _arguments(function.get("arguments"))}})
    return parts


def _arguments(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        parsed = msgspec.json.decode(raw) if isinstance(raw, str) else None
    except msgspec.DecodeError as error:
        raise GeminiRequestError("tool call arguments must be a JSON object") from error
    if not isinstance(parsed, dict):
        raise GeminiRequestError("tool call arguments must be a JSON object")
    return parsed


def _tool_result_part(message: dict[str, Any], tool_names: dict[str, str]) -> dict[str, Any]:
    name = tool_names.get(str(message.get("tool_call_id"))) or message.get("name")
    if not isinstance(name, str) or not name:
        raise GeminiRequestError("a tool message must answer a tool call made earlier in the conversation")
    text = "".join(_texts(message.get("content")))
    try:
        content: Any = msgspec.json.decode(text)
    except msgspec.DecodeError:
        content = text
    return {"functionResponse": {"name": name, "response": {"content": content}}}


def clean_schema(schema: Any) -> Any:
    """A JSON Schema without the keywords in :data:`UNSUPPORTED_SCHEMA_KEYS`, at every depth."""
    if isinstance(schema, dict):
        return {key: clean_schema(value) for key, value in schema.items() if key not in UNSUPPORTED_SCHEMA_KEYS}
    if isinstance(schema, list):
        return [clean_schema(item) for item in schema]
    return schema


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise GeminiRequestError("only function tools with a name are supported")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        # Gemini rejects an OBJECT schema with no properties: a function without arguments omits it.
        if isinstance(parameters, dict) and parameters.get("properties"):
            declaration["parameters"] = clean_schema(parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any]:
    if choice is None:
        return {}
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_CHOICE_MODES[choice]}}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [function["name"]]}}
    raise GeminiRequestError("tool_choice must be auto, none, required or a named function")


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for openai_name, gemini_name in _GENERATION_FIELDS.items():
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        config["responseMimeType"] = "application/json"
        if isinstance(schema, dict):
            config["responseSchema"] = clean_schema(schema)
    return config


# ---------------------------------------------------------------- responses


def finish_reason(reason: str | None, has_tool_calls: bool) -> str | None:
    """Gemini's ``finishReason`` as OpenAI's; ``None`` while the candidate is still generating."""
    if not reason:
        return None
    if reason == "MAX_TOKENS":
        return "length"
    if reason in CONTENT_FILTER_REASONS:
        return "content_filter"
    # STOP, MALFORMED_FUNCTION_CALL, OTHER, …: OpenAI has nothing closer than a plain stop.
    return "tool_calls" if has_tool_calls else "stop"


def usage_from_metadata(metadata: UsageMetadataView) -> Usage:
    # Thinking tokens are billed as output, as OpenAI bills reasoning tokens.
    candidates = reported_count(metadata.candidates_token_count)
    thoughts = reported_count(metadata.thoughts_token_count)
    if candidates is None or thoughts is None:
        return Usage(malformed=True)
    return Usage.reported(metadata.prompt_token_count, candidates + thoughts, metadata.cached_content_token_count)


def openai_usage(metadata: UsageMetadataView) -> dict[str, Any]:
    usage = usage_from_metadata(metadata)
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": reported_count(metadata.thoughts_token_count) or 0},
    }


def tool_call_id(response_id: str, number: int) -> str:
    return f"call_{response_id}_{number}"


def _candidate_output(candidate: CandidateView, response_id: str) -> tuple[str | None, list[dict[str, Any]]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in candidate.content.parts if candidate.content else ():
        if part.function_call is not None:
            call = part.function_call
            calls.append(
                {
                    "id": call.id or tool_call_id(response_id, len(calls)),
                    "type": "function",
                    "function": {"name": call.name, "arguments": _json_encoder.encode(call.args or {}).decode()},
                }
            )
        elif part.text is not None and not part.thought:
            texts.append(part.text)
    return ("".join(texts) if texts else None), calls


def response_to_openai(view: ResponseView, *, model: str, fallback_id: str, created: int) -> dict[str, Any]:
    """A whole Gemini response as a ``chat.completion``.

    A prompt Gemini blocked (``promptFeedback.blockReason``, no candidates) becomes one empty
    ``content_filter`` choice rather than an error: the prompt tokens were still spent, and a
    stream must report it the same way after its 200 has been sent.
    """
    response_id = view.response_id or fallback_id
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(view.candidates):
        content, calls = _candidate_output(candidate, response_id)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": candidate.index if candidate.index is not None else position,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(candidate.finish_reason, bool(calls)) or "stop",
            }
        )
    if not choices and view.prompt_feedback is not None and view.prompt_feedback.block_reason:
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    body: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": view.model_version or model,
        "choices": choices,
    }
    if view.usage_metadata is not None:
        body["usage"] = openai_usage(view.usage_metadata)
    return body


class StreamTranslator:
    """Turns streamed Gemini fragments into ``chat.completion.chunk`` dicts.

    Each ``alt=sse`` event is a complete ``GenerateContentResponse`` holding only the new
    parts; function calls arrive whole, so each becomes one complete ``tool_calls`` delta.
    ``usageMetadata`` is cumulative, so only the last one seen is reported, by :meth:`finish`.
    """

    def __init__(self, *, model: str, fallback_id: str, created: int) -> None:
        self._model = model
        self._fallback_id = fallback_id
        self._created = created
        self._base: dict[str, Any] | None = None
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}
        self.usage_metadata: UsageMetadataView | None = None

    def feed(self, view: ResponseView) -> list[dict[str, Any]]:
        if self._base is None:
            self._base = {
                "id": view.response_id or self._fallback_id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": view.model_version or self._model,
            }
        if view.usage_metadata is not None:
            self.usage_metadata = view.usage_metadata
        chunks: list[dict[str, Any]] = []
        for position, candidate in enumerate(view.candidates):
            index = candidate.index if candidate.index is not None else position
            chunks.extend(self._candidate(index, candidate))
        if not view.candidates and view.prompt_feedback is not None and view.prompt_feedback.block_reason:
            chunks.extend(self._start(0))
            chunks.append(self._chunk(0, {}, "content_filter"))
        return chunks

    def finish(self) -> dict[str, Any] | None:
        """The final ``choices: []`` usage chunk, if the upstream reported usage."""
        if self._base is None or self.usage_metadata is None:
            return None
        return {**self._base, "choices": [], "usage": openai_usage(self.usage_metadata)}

    def _candidate(self, index: int, candidate: CandidateView) -> list[dict[str, Any]]:
        chunks = self._start(index)
        assert self._base is not None
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in candidate.content.parts if candidate.content else ():
            if part.function_call is not None:
                number = self._calls.get(index, 0)
                self._calls[index] = number + 1
                call = part.function_call
                arguments = _json_encoder.encode(call.args or {}).decode()
                calls.append(
                    {
                        "index": number,
                        "id": call.id or tool_call_id(self._base["id"], number),
                        "type": "function",
                        "function": {"name": call.name, "arguments": arguments},
                    }
                )
            elif part.text and not part.thought:
                texts.append(part.text)
        if texts:
            chunks.append(self._chunk(index, {"content": "".join(texts)}, None))
        if calls:
            chunks.append(self._chunk(index, {"tool_calls": calls}, None))
        reason = finish_reason(candidate.finish_reason, self._calls.get(index, 0) > 0)
        if reason is not None:
            chunks.append(self._chunk(index, {}, reason))
        return chunks

    def _start(self, index: int) -> list[dict[str, Any]]:
        if index in self._started:
            return []
        self._started.add(index)
        return [self._chunk(index, {"role": "assistant", "content": ""}, None)]

    def _chunk(self, index: int, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        assert self._base is not None
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**self._base, "choices": [choice]}


def chunk_text(chunk: dict[str, Any]) -> str:
    """Generated text in a translated chunk (content, tool-call names and arguments), for metering."""
    parts: list[str] = []
    for choice in chunk.get("choices", ()):
        delta = choice.get("delta") or {}
        if delta.get("content"):
            parts.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            parts.append(call["function"]["name"])
            parts.append(call["function"]["arguments"])
    return "".join(parts)


class EventTranslator:
    """Gemini's SSE events in, the OpenAI chunks to forward out: decodes each event, raises an
    error event as our error tree, and reports the usage only once the body has ended
    (:meth:`finish`), since ``usageMetadata`` is cumulative."""

    def __init__(self, provider: str, translator: StreamTranslator) -> None:
        self._provider = provider
        self._translator = translator

    def feed(self, event: SSEEvent) -> list[StreamChunk]:
        try:
            view = response_decoder.decode(event.data)
        except msgspec.DecodeError as error:
            raise UpstreamBadResponse(
                f"upstream {self._provider} sent a malformed chunk", provider=self._provider
            ) from error
        if view.error is not None:
            raise stream_error(self._provider, view.error)
        return [
            StreamChunk(
                data=_json_encoder.encode(chunk),
                text=chunk_text(chunk),
                finished=any(c.get("finish_reason") for c in chunk["choices"]),
                model=chunk["model"],
            )
            for chunk in self._translator.feed(view)
        ]

    def finish(self) -> list[StreamChunk]:
        final = self._translator.finish()
        if final is None or self._translator.usage_metadata is None:
            return []
        usage = usage_from_metadata(self._translator.usage_metadata)
        return [
            StreamChunk(
                data=_json_encoder.encode(final),
                usage=usage,
                finished=any(c.get("finish_reason") for c in final["choices"]),
                model=final["model"],
            )
        ]
