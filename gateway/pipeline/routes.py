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
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Response
from litestar.datastructures import UploadFile
from litestar.response import Stream

from billing.errors import BillingError
from billing.money import format_credits
from billing.tokens import count_text_tokens
from gateway.catalog import CatalogModel
from gateway.errors import InvalidRequest
from gateway.pipeline.chat import count_tokens, decode_object, output_cap, output_estimate, stream_response, view_of
from gateway.pipeline.metered import (
    Admitted,
    DeadlineStream,
    Estimate,
    MeteredCall,
    admit,
    billable_usage,
    tollway_meta,
    upstream_body,
)
from gateway.routing import ProviderPreferences
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import Capability, ProviderHandle, UploadedFile, UpstreamReply, Usage
from providers.errors import UpstreamBadResponse
from providers.openai.convert import usage_from_body

MAX_AUDIO_BYTES = 25 * 1024 * 1024
_ASSUMED_AUDIO_BYTES_PER_S = 16_000  # 128 kbit/s: a common encoding rate, used only without better data
# Audio can be no shorter per byte than 8 kbit/s speech codecs: the hold for a file of unknown length.
_WORST_AUDIO_BYTES_PER_S = 1_000
_encoder = msgspec.json.Encoder()
LEGACY_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions

V = TypeVar("V", bound="_Routed")


def _serves_routes(adapter: ProviderHandle) -> bool:
    return adapter.offers(Capability.JSON)


def _serves_multipart(adapter: ProviderHandle) -> bool:
    return adapter.offers(Capability.MULTIPART)


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
    estimate: Callable[[V, list[CatalogModel]], Awaitable[Estimate]],
    refine: Callable[[V, list[CatalogModel], BillingError], Awaitable[Estimate | None]] | None = None,
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
        refine=refine,
        embeddings=route == "/v1/embeddings",
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
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
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


async def _post_json(call: MeteredCall, route: str, body: dict[str, Any]) -> dict[str, Any]:
    async def post(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> dict[str, Any]:
        reply: UpstreamReply = await adapter.json.post_json(route, served.upstream_model, upstream_body(body, served))
        return _decode_reply(reply, served.provider)

    return await call.dispatch(post)


async def _json_bill(
    call: MeteredCall, answer: dict[str, Any], reported: Usage | None, count: Callable[[], Awaitable[Usage]]
) -> Response[bytes]:
    """Settle a JSON answer's usage (believed, else counted) and answer with its bill."""
    usage, anomaly = await billable_usage(reported, count)
    bill = await call.settle(usage, anomaly=anomaly)
    return _json_reply(call.state, call.admitted, call.served, answer, usage, bill.cost_micro)


# -- embeddings ------------------------------------------------------------------------------


def _prompt_bound(raw: bytes, value: str | list[Any]) -> int:
    """Tokens a prompt or embeddings input can hold at most, for any byte-level tokenizer: one
    per byte of the body (token ids take a byte or more each too), plus a few per input for
    the start and end tokens some models add."""
    return len(raw) + 4 * (len(value) if isinstance(value, list) else 1)


async def embeddings(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    body = decode_object(raw) if raw else {}
    exact_tokens: list[int] = []
    views: list[EmbeddingsView] = []

    def estimate_for(plan: list[CatalogModel], tokens: int) -> Estimate:
        return Estimate(tokens=tokens, amount_micro=max(_price(s).worst_case_micro(tokens, 0) for s in plan))

    async def input_tokens(model: str) -> int:
        if not exact_tokens:
            view = views[0]
            exact_tokens.append(await count_tokens(len(raw), lambda: _input_tokens(view.input, model, "input")))
        return exact_tokens[0]

    async def estimate(view: EmbeddingsView, plan: list[CatalogModel]) -> Estimate:
        views.append(view)
        return estimate_for(plan, _prompt_bound(raw, view.input))

    async def refine(view: EmbeddingsView, plan: list[CatalogModel], refusal: BillingError) -> Estimate | None:
        return estimate_for(plan, await input_tokens(plan[0].upstream_model))

    admitted, _view = await _admit_json(
        state,
        headers,
        facts,
        request_id,
        body,
        EmbeddingsView,
        category="text",
        route="/v1/embeddings",
        estimate=estimate,
        refine=refine,
    )
    async with MeteredCall(state, admitted) as call:
        answer = await _post_json(call, "/embeddings", body)
        reported = usage_from_body(answer)
        if reported is not None and not reported.malformed:
            # Embeddings produce no output tokens, whatever the upstream says.
            reported = Usage(input_tokens=reported.input_tokens, cached_input_tokens=reported.cached_input_tokens)

        async def counted() -> Usage:
            return Usage(input_tokens=await input_tokens(call.served.upstream_model))

        return await _json_bill(call, answer, reported, counted)


def _price(served: CatalogModel) -> Any:
    assert served.price is not None
    return served.price


# -- legacy completions ----------------------------------------------------------------------


async def completions(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes] | Stream:
    body = decode_object(raw) if raw else {}
    exact_tokens: list[int] = []
    views: list[CompletionsView] = []

    async def exact(model: str) -> int:
        if not exact_tokens:
            view = views[0]
            exact_tokens.append(await count_tokens(len(raw), lambda: _input_tokens(view.prompt, model, "prompt")))
        return exact_tokens[0]

    def estimate_for(view: CompletionsView, plan: list[CatalogModel], tokens: int) -> Estimate:
        return output_estimate(plan, view.max_tokens or LEGACY_DEFAULT_MAX_TOKENS, tokens, _choices(view))

    async def estimate(view: CompletionsView, plan: list[CatalogModel]) -> Estimate:
        views.append(view)
        return estimate_for(view, plan, _prompt_bound(raw, view.prompt))

    async def refine(view: CompletionsView, plan: list[CatalogModel], refusal: BillingError) -> Estimate | None:
        return estimate_for(view, plan, await exact(plan[0].upstream_model))

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
        refine=refine,
    )

    def capped(served: CatalogModel) -> dict[str, Any]:
        # The upstream is never allowed more output per completion than was reserved.
        forwarded = upstream_body(body, served)
        forwarded["max_tokens"] = output_cap(served, view.max_tokens or LEGACY_DEFAULT_MAX_TOKENS)
        return forwarded

    async def prompt_tokens() -> int:
        return await exact(admitted.plan[0].upstream_model)

    if view.stream:
        call = MeteredCall(state, admitted, streamed=True)
        async with call:

            async def open_stream(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> DeadlineStream:
                stream = await adapter.json.open_json_stream("/completions", served.upstream_model, capped(served))
                return DeadlineStream(stream, deadline_at, served.provider)

            stream = await call.dispatch(open_stream)
            response = stream_response(call, stream, prompt_tokens, "text_completion")
            call.hand_over()
            return response

    async with MeteredCall(state, admitted) as call:

        async def post(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> dict[str, Any]:
            reply: UpstreamReply = await adapter.json.post_json("/completions", served.upstream_model, capped(served))
            return _decode_reply(reply, served.provider)

        answer = await call.dispatch(post)

        async def counted() -> Usage:
            text = "".join(
                c["text"] for c in answer.get("choices") or () if isinstance(c, dict) and isinstance(c.get("text"), str)
            )
            model = call.served.upstream_model
            return Usage(
                input_tokens=await exact(model),
                output_tokens=await count_tokens(len(text), lambda: count_text_tokens(text, model)),
            )

        return await _json_bill(call, answer, usage_from_body(answer), counted)


def _choices(view: CompletionsView) -> int:
    """Completions the upstream may generate: ``best_of`` (or ``n``) per prompt."""
    prompts = (
        1 if isinstance(view.prompt, str) or (view.prompt and isinstance(view.prompt[0], int)) else len(view.prompt)
    )
    return max(prompts, 1) * max(view.n, view.best_of or 1)


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

    async def estimate(view: ImagesView, plan: list[CatalogModel]) -> Estimate:
        nonlocal prompt_tokens
        prompt_tokens = await count_tokens(len(raw), lambda: count_text_tokens(view.prompt, plan[0].upstream_model))
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
    async with MeteredCall(state, admitted) as call:
        answer = await _post_json(call, "/images/generations", body)
        data = answer.get("data")
        # Never more images than were asked for (and reserved), whatever the list holds.
        images_made = min(len(data), view.n) if isinstance(data, list) else 0
        tokens = _image_usage(answer)
        variant = image_variant(call.served, view.size, view.quality)

        async def counted() -> Usage:
            # Nothing to count in pixels: a lie about token usage is billed as the worst case
            # for the images delivered (held, so within the hold).
            output = images_made * call.served.max_output_tokens if _price(call.served).output else 0
            return Usage(input_tokens=prompt_tokens, output_tokens=output, units=images_made, unit_variant=variant)

        if tokens is None or tokens.malformed:
            reported = tokens or Usage(units=images_made, unit_variant=variant)
        else:
            reported = msgspec.structs.replace(tokens, units=images_made, unit_variant=variant)
        return await _json_bill(call, answer, reported, counted)


def _image_usage(answer: dict[str, Any]) -> Usage | None:
    """gpt-image-1 reports ``{input_tokens, output_tokens, input_tokens_details}``."""
    raw = answer.get("usage")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Usage(malformed=True)
    details = raw.get("input_tokens_details")
    if details is not None and not isinstance(details, dict):
        return Usage(malformed=True)
    return Usage.reported(raw.get("input_tokens"), raw.get("output_tokens"), (details or {}).get("cached_tokens"))


# -- speech ----------------------------------------------------------------------------------


async def speech(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    body = decode_object(raw) if raw else {}

    async def estimate(view: SpeechView, plan: list[CatalogModel]) -> Estimate:
        return Estimate(tokens=0, amount_micro=max(_price(s).worst_case_units_micro(len(view.input)) for s in plan))

    admitted, view = await _admit_json(
        state, headers, facts, request_id, body, SpeechView, category="tts", route="/v1/audio/speech", estimate=estimate
    )

    async def call(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> UpstreamReply:
        reply: UpstreamReply = await adapter.json.post_json(
            "/audio/speech", served.upstream_model, upstream_body(body, served)
        )
        return reply

    async with MeteredCall(state, admitted) as metered:
        reply = await metered.dispatch(call)
        bill = await metered.settle(Usage(units=len(view.input)))
    return Response(
        content=reply.content,
        media_type=reply.media_type,
        headers={"X-Request-Id": request_id, "X-Tollway-Credits-Used": format_credits(bill.cost_micro)},
    )


# -- transcriptions --------------------------------------------------------------------------

_CUE_END = re.compile(rb"-->\s*(\d+):(\d{2}):(\d{2})[.,](\d{3})")


# What a WAV header may claim and still be believed (PCM: 8 kHz mono 8-bit up to 384 kHz,
# 8 channels, 32-bit).
_WAV_RATES = range(8_000, 384_001)
_WAV_CHANNELS = range(1, 9)
_WAV_BITS = frozenset({8, 16, 24, 32})


def audio_seconds_from_file(content: bytes) -> float:
    """Duration of an uploaded file: from its WAV header when the header is consistent, else
    its size at a common bitrate. A header is the client's word: one whose byte rate does not
    follow from its sample rate, channels and sample size (``byte_rate=1`` to bill a day, a huge
    one to bill nothing) is ignored."""
    if len(content) >= 44 and content[:4] == b"RIFF" and content[8:12] == b"WAVE" and content[12:16] == b"fmt ":
        header: tuple[int, int, int, int, int] = struct.unpack_from("<HIIHH", content, 22)
        channels, sample_rate, byte_rate, block_align, bits = header
        if (
            channels in _WAV_CHANNELS
            and sample_rate in _WAV_RATES
            and bits in _WAV_BITS
            and block_align == channels * bits // 8
            and byte_rate == sample_rate * block_align
        ):
            return max(0.0, (len(content) - 44) / byte_rate)
    return len(content) / _ASSUMED_AUDIO_BYTES_PER_S


def _seconds(value: object) -> float | None:
    """A duration an upstream reported, if it is one: a finite number of seconds, 0 to a day."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 86_400:
        return float(value)
    return None


def transcription_usage(reply: UpstreamReply, fallback_s: float) -> tuple[Usage | None, float]:
    """(token usage if the upstream billed in tokens, else None; seconds of audio otherwise).
    A usage or duration the upstream sent that cannot be believed gives a malformed usage."""
    if reply.media_type.startswith("application/json"):
        try:
            answer = msgspec.json.decode(reply.content)
        except (msgspec.DecodeError, RecursionError):
            return None, fallback_s
        if isinstance(answer, dict):
            usage = answer.get("usage")
            if isinstance(usage, dict) and usage.get("type") == "tokens":
                return Usage.reported(usage.get("input_tokens"), usage.get("output_tokens")), fallback_s
            if isinstance(usage, dict) and usage.get("type") == "duration":
                seconds = _seconds(usage.get("seconds"))
                return (None, seconds) if seconds is not None else (Usage(malformed=True), fallback_s)
            if "duration" in answer:
                seconds = _seconds(answer["duration"])
                return (None, seconds) if seconds is not None else (Usage(malformed=True), fallback_s)
        return None, fallback_s
    cues = _CUE_END.findall(reply.content)
    if cues:
        hours, minutes, seconds, millis = (int(part) for part in cues[-1])
        return None, hours * 3600 + minutes * 60 + seconds + millis / 1000
    return None, fallback_s


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
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("a multipart field 'file' with the audio is required", param="file")
        model = form.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("the 'model' field is required", param="model")
        user = form.get("user")
        return TranscriptionView(
            model=model,
            response_format=str(form.get("response_format") or "json"),
            user=user if isinstance(user, str) and user else None,
        )

    async def estimate(view: TranscriptionView, plan: list[CatalogModel]) -> Estimate:
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
        serves=_serves_multipart,
    )
    assert isinstance(upload, UploadFile)
    file = UploadedFile(
        field="file",
        filename=upload.filename or "audio",
        content=audio,
        content_type=upload.content_type or "application/octet-stream",
    )
    forwarded = [(k, v) for k, v in fields if k not in {"model", "user", "models", "provider"}]

    async def post(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> UpstreamReply:
        reply: UpstreamReply = await adapter.multipart.post_multipart(
            "/audio/transcriptions", served.upstream_model, [("model", served.upstream_model), *forwarded], [file]
        )
        return reply

    async with MeteredCall(state, admitted) as call:
        reply = await call.dispatch(post)
        from_file = audio_seconds_from_file(audio)
        reported, seconds = transcription_usage(reply, from_file)

        async def counted() -> Usage:
            return Usage(units=math.ceil(from_file))

        usage, anomaly = await billable_usage(reported or Usage(units=math.ceil(seconds)), counted)
        bill = await call.settle(usage, anomaly=anomaly)
    return Response(
        content=reply.content,
        media_type=reply.media_type,
        headers={"X-Request-Id": request_id, "X-Tollway-Credits-Used": format_credits(bill.cost_micro)},
    )
