"""The non-chat ``/v1`` routes: embeddings, legacy completions, images, speech, transcriptions.

Each is parse → :func:`admit` → :func:`dispatch` → :func:`settle` like chat; what differs is the
worst case and where the billable quantity comes from:

    embeddings       input tokens (the upstream's usage, else tiktoken)
    completions      input + output tokens, like chat (``max_tokens`` defaults to 16, as OpenAI)
    images           images returned × the price of the size/quality, plus tokens if reported
    speech           input characters × the per-character price (the answer is raw audio)
    transcriptions   audio seconds × the per-second price: from the upstream's usage or
                     ``duration``, else the last subtitle cue, else the file (WAV header, or
                     its size at 128 kbit/s); tokens when the upstream reports token usage

Bodies are passed to the upstream untouched except for ``model`` and the gateway's own fields.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Response
from litestar.datastructures import UploadFile
from litestar.response import Stream

from billing.money import format_credits
from billing.tokens import count_text_tokens
from gateway.catalog import CatalogModel
from gateway.errors import InvalidRequest
from gateway.pipeline.chat import decode_object, output_estimate, stream_response, view_of
from gateway.pipeline.metered import (
    Admitted,
    DeadlineStream,
    Estimate,
    admit,
    dispatch,
    settle,
    tollway_meta,
    upstream_body,
)
from gateway.routing import ProviderPreferences
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import UploadedFile, UpstreamReply, Usage
from providers.errors import UpstreamBadResponse
from providers.openai.convert import usage_from_body

MAX_AUDIO_BYTES = 25 * 1024 * 1024
_ASSUMED_AUDIO_BYTES_PER_S = 16_000  # 128 kbit/s: a common encoding rate, used only without better data
# Audio can be no shorter per byte than 8 kbit/s speech codecs: the hold for a file of unknown length.
_WORST_AUDIO_BYTES_PER_S = 1_000
_encoder = msgspec.json.Encoder()

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
V = TypeVar("V", bound="_Routed")


def _serves_routes(adapter: object) -> bool:
    return hasattr(adapter, "post_json")


async def _admit_json(
    state: GatewayState,
    headers: Mapping[str, str],
    facts: RequestFacts,
    request_id: str,
    body: dict[str, Any],
    view_type: type[V],
    *,
    category: str,
    route: str,
    estimate: Callable[[V, list[CatalogModel]], Estimate],
) -> tuple[Admitted, V]:
    """``admit`` for a JSON route served by OpenAI-format providers."""
    return await admit(
        state,
        headers,
        facts,
        request_id,
        parse=lambda: view_of(body, view_type),
        categories=frozenset({category}),
        route=route,
        estimate=estimate,
        serves=_serves_routes,
    )


class _Routed(msgspec.Struct, kw_only=True):
    model: str
    models: list[str] | None = None
    provider: ProviderPreferences | None = None
    user: str | None = None


# msgspec unions allow one array type: the four OpenAI shapes (text, texts, token ids, lists
# of token ids) are checked by _input_tokens.
TextOrTokens = str | Annotated[list[Any], msgspec.Meta(min_length=1)]


class EmbeddingsView(_Routed, kw_only=True):
    input: TextOrTokens


class CompletionsView(_Routed, kw_only=True):
    prompt: TextOrTokens
    max_tokens: PositiveInt | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] = 1
    best_of: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stream: bool = False


class ImagesView(_Routed, kw_only=True):
    prompt: Annotated[str, msgspec.Meta(min_length=1)]
    n: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    size: str | None = None
    quality: str | None = None


class SpeechView(_Routed, kw_only=True):
    input: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    voice: str | dict[str, Any]


class TranscriptionView(_Routed, kw_only=True):
    response_format: str = "json"


def _input_tokens(value: str | list[Any], model: str, param: str) -> int:
    """Tokens of a prompt or embeddings input, whichever of its four OpenAI shapes it has."""
    if isinstance(value, str):
        return count_text_tokens(value, model)
    total = 0
    for item in value:
        if isinstance(item, str):
            total += count_text_tokens(item, model)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += 1
        elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            total += len(item)
        else:
            raise InvalidRequest(f"{param} must be a string, strings, token ids or lists of token ids", param=param)
    return total


def _json_reply(
    state: GatewayState, admitted: Admitted, served: CatalogModel, body: Any, usage: Usage, cost: int
) -> Response[bytes]:
    if isinstance(body, dict):
        body["_tollway"] = tollway_meta(state, admitted.ctx, served, usage, cost)
    return Response(
        content=_encoder.encode(body),
        media_type="application/json",
        headers={"X-Request-Id": admitted.ctx.request_id, "X-Tollway-Credits-Used": format_credits(cost)},
    )


def _decode_reply(reply: UpstreamReply, provider: str) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(reply.content)
    except msgspec.DecodeError as error:
        raise UpstreamBadResponse(f"upstream {provider} sent invalid JSON", provider=provider) from error
    if not isinstance(decoded, dict):
        raise UpstreamBadResponse(f"upstream {provider} sent an unexpected body", provider=provider)
    return decoded


async def _post_json(
    state: GatewayState, admitted: Admitted, route: str, body: dict[str, Any]
) -> tuple[CatalogModel, dict[str, Any]]:
    async def call(adapter: Any, served: CatalogModel, deadline_at: float) -> dict[str, Any]:
        reply: UpstreamReply = await adapter.post_json(route, served.upstream_model, upstream_body(body, served))
        return _decode_reply(reply, served.provider)

    return await dispatch(state, admitted, call)


# -- embeddings ------------------------------------------------------------------------------


async def embeddings(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    body = decode_object(raw) if raw else {}
    input_tokens = 0

    def estimate(view: EmbeddingsView, plan: list[CatalogModel]) -> Estimate:
        nonlocal input_tokens
        input_tokens = _input_tokens(view.input, plan[0].upstream_model, "input")
        amount = max(_price(s).worst_case_micro(input_tokens, 0) for s in plan)
        return Estimate(tokens=input_tokens, amount_micro=amount)

    admitted, _view = await _admit_json(
        state,
        headers,
        facts,
        request_id,
        body,
        EmbeddingsView,
        category="embedding",
        route="/v1/embeddings",
        estimate=estimate,
    )
    served, answer = await _post_json(state, admitted, "/embeddings", body)
    usage = usage_from_body(answer) or Usage(input_tokens=input_tokens)
    usage = Usage(input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens)
    cost = await settle(state, admitted, served, usage, status_code=200)
    return _json_reply(state, admitted, served, answer, usage, cost)


def _price(served: CatalogModel) -> Any:
    assert served.price is not None
    return served.price


# -- legacy completions ----------------------------------------------------------------------


async def completions(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes] | Stream:
    body = decode_object(raw) if raw else {}
    input_tokens = 0

    def estimate(view: CompletionsView, plan: list[CatalogModel]) -> Estimate:
        nonlocal input_tokens
        prompts = (
            1 if isinstance(view.prompt, str) or (view.prompt and isinstance(view.prompt[0], int)) else len(view.prompt)
        )
        input_tokens = _input_tokens(view.prompt, plan[0].upstream_model, "prompt")
        choices = max(prompts, 1) * max(view.n, view.best_of or 1)
        single = output_estimate(plan, view.max_tokens or 16, 0)
        amount = max(_price(s).worst_case_micro(input_tokens, 0) for s in plan) + single.amount_micro * choices
        return Estimate(tokens=input_tokens + single.tokens * choices, amount_micro=amount)

    admitted, view = await _admit_json(
        state,
        headers,
        facts,
        request_id,
        body,
        CompletionsView,
        category="text",
        route="/v1/completions",
        estimate=estimate,
    )
    if view.stream:

        async def open_stream(adapter: Any, served: CatalogModel, deadline_at: float) -> DeadlineStream:
            stream = await adapter.open_json_stream("/completions", served.upstream_model, upstream_body(body, served))
            return DeadlineStream(stream, deadline_at, served.provider)

        served, stream = await dispatch(state, admitted, open_stream, streamed=True)
        return stream_response(state, admitted, served, stream, input_tokens, "text_completion")

    served, answer = await _post_json(state, admitted, "/completions", body)
    usage = usage_from_body(answer) or Usage(
        input_tokens=input_tokens,
        output_tokens=count_text_tokens(
            "".join(c.get("text", "") for c in answer.get("choices") or () if isinstance(c, dict)),
            served.upstream_model,
        ),
    )
    cost = await settle(state, admitted, served, usage, status_code=200)
    return _json_reply(state, admitted, served, answer, usage, cost)


# -- images ----------------------------------------------------------------------------------


def image_variant(served: CatalogModel, size: str | None, quality: str | None) -> str:
    """The priced variant for a size and quality: ``size/quality``, else ``size``, else the default."""
    variants = _price(served).per_unit_variants
    for candidate in (f"{size}/{quality}" if size and quality else "", size or ""):
        if candidate and candidate in variants:
            return candidate
    return ""


async def images(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    body = decode_object(raw) if raw else {}
    prompt_tokens = 0

    def estimate(view: ImagesView, plan: list[CatalogModel]) -> Estimate:
        nonlocal prompt_tokens
        prompt_tokens = count_text_tokens(view.prompt, plan[0].upstream_model)
        amount = 0
        for served in plan:
            price = _price(served)
            variant = image_variant(served, view.size, view.quality)
            units = price.worst_case_units_micro(view.n, variant, prompt_tokens)
            # Token-priced image models (gpt-image-1) bill output tokens per image as well.
            amount = max(amount, units + price.worst_case_micro(0, view.n * served.max_output_tokens))
        return Estimate(tokens=prompt_tokens, amount_micro=amount)

    admitted, view = await _admit_json(
        state,
        headers,
        facts,
        request_id,
        body,
        ImagesView,
        category="image",
        route="/v1/images/generations",
        estimate=estimate,
    )
    served, answer = await _post_json(state, admitted, "/images/generations", body)
    images_made = len(answer.get("data") or ())
    tokens = _image_usage(answer)
    usage = Usage(
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cached_input_tokens=tokens.cached_input_tokens,
        units=images_made,
        unit_variant=image_variant(served, view.size, view.quality),
    )
    cost = await settle(state, admitted, served, usage, status_code=200)
    return _json_reply(state, admitted, served, answer, usage, cost)


def _image_usage(answer: dict[str, Any]) -> Usage:
    """gpt-image-1 reports ``{input_tokens, output_tokens, input_tokens_details}``."""
    raw = answer.get("usage")
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("input_tokens_details") if isinstance(raw.get("input_tokens_details"), dict) else {}
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_input_tokens=int((details or {}).get("cached_tokens") or 0),
    )


# -- speech ----------------------------------------------------------------------------------


async def speech(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    body = decode_object(raw) if raw else {}

    def estimate(view: SpeechView, plan: list[CatalogModel]) -> Estimate:
        return Estimate(tokens=0, amount_micro=max(_price(s).worst_case_units_micro(len(view.input)) for s in plan))

    admitted, view = await _admit_json(
        state, headers, facts, request_id, body, SpeechView, category="tts", route="/v1/audio/speech", estimate=estimate
    )

    async def call(adapter: Any, served: CatalogModel, deadline_at: float) -> UpstreamReply:
        reply: UpstreamReply = await adapter.post_json(
            "/audio/speech", served.upstream_model, upstream_body(body, served)
        )
        return reply

    served, reply = await dispatch(state, admitted, call)
    usage = Usage(units=len(view.input))
    cost = await settle(state, admitted, served, usage, status_code=200)
    return Response(
        content=reply.content,
        media_type=reply.media_type,
        headers={"X-Request-Id": request_id, "X-Tollway-Credits-Used": format_credits(cost)},
    )


# -- transcriptions --------------------------------------------------------------------------

_CUE_END = re.compile(rb"-->\s*(\d+):(\d{2}):(\d{2})[.,](\d{3})")


def audio_seconds_from_file(content: bytes) -> float:
    """Duration of an uploaded file: exact for WAV, else its size at a common bitrate."""
    if len(content) >= 44 and content[:4] == b"RIFF" and content[8:12] == b"WAVE":
        byte_rate = int(struct.unpack_from("<I", content, 28)[0])
        if byte_rate:
            return max(0.0, (len(content) - 44) / byte_rate)
    return len(content) / _ASSUMED_AUDIO_BYTES_PER_S


def transcription_seconds(reply: UpstreamReply, fallback_s: float) -> tuple[float, Usage | None]:
    """(seconds of audio, token usage if the upstream billed in tokens)."""
    if reply.media_type.startswith("application/json"):
        try:
            answer = msgspec.json.decode(reply.content)
        except msgspec.DecodeError:
            return fallback_s, None
        if isinstance(answer, dict):
            usage = answer.get("usage")
            if isinstance(usage, dict) and usage.get("type") == "tokens":
                return 0.0, Usage(
                    input_tokens=int(usage.get("input_tokens") or 0), output_tokens=int(usage.get("output_tokens") or 0)
                )
            if isinstance(usage, dict) and usage.get("type") == "duration":
                return float(usage.get("seconds") or 0), None
            if isinstance(answer.get("duration"), int | float):
                return float(answer["duration"]), None
        return fallback_s, None
    cues = _CUE_END.findall(reply.content)
    if cues:
        hours, minutes, seconds, millis = (int(part) for part in cues[-1])
        return hours * 3600 + minutes * 60 + seconds + millis / 1000, None
    return fallback_s, None


async def transcriptions(
    state: GatewayState,
    headers: Mapping[str, str],
    facts: RequestFacts,
    form: Mapping[str, Any],
    fields: list[tuple[str, str]],
    request_id: str,
) -> Response[bytes]:
    upload = form.get("file")
    audio = b""

    def parse() -> TranscriptionView:
        nonlocal audio
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("a multipart field 'file' with the audio is required", param="file")
        model = form.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("the 'model' field is required", param="model")
        return TranscriptionView(
            model=model,
            response_format=str(form.get("response_format") or "json"),
            user=str(form.get("user")) if form.get("user") else None,
        )

    def estimate(view: TranscriptionView, plan: list[CatalogModel]) -> Estimate:
        worst_s = math.ceil(len(audio) / _WORST_AUDIO_BYTES_PER_S) or 1
        amount = max(
            max(_price(s).worst_case_units_micro(worst_s), _price(s).worst_case_micro(len(audio) // 100, 4096))
            for s in plan
        )
        return Estimate(tokens=0, amount_micro=amount)

    if isinstance(upload, UploadFile):
        audio = await upload.read()
        if len(audio) > MAX_AUDIO_BYTES:
            raise InvalidRequest("audio files are limited to 25 MB", param="file")
    admitted, _view = await admit(
        state,
        headers,
        facts,
        request_id,
        parse=parse,
        categories=frozenset({"stt"}),
        route="/v1/audio/transcriptions",
        estimate=estimate,
        serves=_serves_routes,
    )
    assert isinstance(upload, UploadFile)
    file = UploadedFile(
        field="file",
        filename=upload.filename or "audio",
        content=audio,
        content_type=upload.content_type or "application/octet-stream",
    )
    forwarded = [(k, v) for k, v in fields if k not in {"model", "user", "models", "provider"}]

    async def call(adapter: Any, served: CatalogModel, deadline_at: float) -> UpstreamReply:
        reply: UpstreamReply = await adapter.post_multipart(
            "/audio/transcriptions", served.upstream_model, [("model", served.upstream_model), *forwarded], [file]
        )
        return reply

    served, reply = await dispatch(state, admitted, call)
    seconds, token_usage = transcription_seconds(reply, audio_seconds_from_file(audio))
    usage = token_usage if token_usage is not None else Usage(units=math.ceil(seconds))
    cost = await settle(state, admitted, served, usage, status_code=200)
    return Response(
        content=reply.content,
        media_type=reply.media_type,
        headers={"X-Request-Id": request_id, "X-Tollway-Credits-Used": format_credits(cost)},
    )
