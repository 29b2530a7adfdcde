"""The audio routes: ``POST /v1/audio/speech`` (input characters × the per-character price; the
answer is raw audio) and ``POST /v1/audio/transcriptions`` (audio seconds × the per-second price:
from the upstream's usage or ``duration``, else the last subtitle cue, else the file — a
consistent WAV header, or its size at 128 kbit/s; tokens when the upstream reports token usage)."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Response
from litestar.datastructures import UploadFile

from billing.estimates import transcription_worst_case, units_worst_case
from billing.money import format_credits
from gateway.catalog import CatalogModel
from gateway.errors import InvalidRequest
from gateway.pipeline.chat import decode_object, view_of
from gateway.pipeline.common import RoutedView, form_text, required_form_text, serves_json, serves_multipart
from gateway.pipeline.metered import Admission, MeteredCall, billable_usage, upstream_body
from gateway.state import GatewayState
from keys.chain import RequestFacts
from providers.base import ProviderHandle, UploadedFile, UpstreamReply, Usage

SPEECH_ROUTE = "/v1/audio/speech"
TRANSCRIPTIONS_ROUTE = "/v1/audio/transcriptions"
MAX_AUDIO_BYTES = 25 * 1024 * 1024
_ASSUMED_AUDIO_BYTES_PER_S = 16_000  # 128 kbit/s: a common encoding rate, used only without better data


class SpeechView(RoutedView, kw_only=True):
    input: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    voice: str | dict[str, Any]


class TranscriptionView(RoutedView, kw_only=True):
    response_format: str = "json"


async def speech(
    state: GatewayState, headers: Mapping[str, str], facts: RequestFacts, raw: bytes, request_id: str
) -> Response[bytes]:
    async with Admission(state, headers, facts, request_id) as door:
        body = decode_object(raw) if raw else {}
        view = view_of(body, SpeechView)
        plan = door.plan(view, route=SPEECH_ROUTE, categories=frozenset({"tts"}), serves=serves_json)
        admitted = await door.reserve(plan, units_worst_case(plan, len(view.input)))

    async def post(adapter: ProviderHandle, served: CatalogModel, deadline_at: float) -> UpstreamReply:
        reply: UpstreamReply = await adapter.json.post_json(
            "/audio/speech", served.upstream_model, upstream_body(body, served)
        )
        return reply

    async with MeteredCall(state, admitted) as call:
        reply = await call.dispatch(post)
        bill = await call.settle(Usage(units=len(view.input)))
    return Response(
        content=reply.content,
        media_type=reply.media_type,
        headers={
            "X-Request-Id": request_id,
            "X-Tollway-Credits-Used": format_credits(bill.cost_micro),
            **admitted.reservation.rate_headers,
        },
    )


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


def _transcription_view(form: Mapping[str, Any]) -> TranscriptionView:
    if not isinstance(form.get("file"), UploadFile):
        raise InvalidRequest("a multipart field 'file' with the audio is required", param="file")
    return TranscriptionView(
        model=required_form_text(form, "model"),
        response_format=form_text(form, "response_format") or "json",
        user=form_text(form, "user"),
    )


async def transcriptions(
    state: GatewayState,
    headers: Mapping[str, str],
    facts: RequestFacts,
    form: Mapping[str, Any],
    fields: list[tuple[str, str]],
    request_id: str,
) -> Response[bytes]:
    upload = form.get("file")
    # Read before anything is held: a failing or cancelled read must not strand a reservation.
    audio = await upload.read() if isinstance(upload, UploadFile) else b""
    if len(audio) > MAX_AUDIO_BYTES:
        raise InvalidRequest("audio files are limited to 25 MB", param="file")
    async with Admission(state, headers, facts, request_id) as door:
        view = _transcription_view(form)
        plan = door.plan(view, route=TRANSCRIPTIONS_ROUTE, categories=frozenset({"stt"}), serves=serves_multipart)
        admitted = await door.reserve(plan, transcription_worst_case(plan, len(audio)))
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
        headers={
            "X-Request-Id": request_id,
            "X-Tollway-Credits-Used": format_credits(bill.cost_micro),
            **admitted.reservation.rate_headers,
        },
    )
