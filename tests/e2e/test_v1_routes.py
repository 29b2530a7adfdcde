"""Every /v1 route besides chat, through the real app with the official SDK: each goes through
the security chain, reserves, and bills what the upstream reports (or what we can measure)."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from gateway.settings import ModelSettings, ProviderSettings
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

EMBED, INSTRUCT, DALLE, GPT_IMAGE = "fake/embed-small", "fake/instruct", "fake/dall-e-3", "fake/gpt-image-1"
TTS, WHISPER, TRANSCRIBE = "fake/tts-1", "fake/whisper-1", "fake/gpt-4o-transcribe"
SORA = "fake/sora-2"


def _model(upstream: str, category: str, **prices: Any) -> ModelSettings:
    return ModelSettings(provider="fake", upstream_model=upstream, category=category, **prices)  # type: ignore[arg-type]


@pytest.fixture
def routes(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    anthropic = FakeAnthropic()
    claude = ThreadedServer(anthropic).start()
    base = gateway_settings(backend, fake_openai)
    settings = gateway_settings(
        backend,
        fake_openai,
        providers={
            **base.providers,
            "anthropic": ProviderSettings(kind="anthropic", base_url=claude.url, api_key=anthropic.api_key),
        },
        models={
            **base.models,
            EMBED: _model("text-embedding-3-small", "embedding", input_per_mtok=Decimal("0.02")),
            INSTRUCT: _model(
                "gpt-3.5-turbo-instruct", "text", input_per_mtok=Decimal("1.5"), output_per_mtok=Decimal("2")
            ),
            DALLE: _model(
                "dall-e-3",
                "image",
                per_unit_usd=Decimal("0.04"),
                per_unit_usd_variants={"1024x1024/hd": Decimal("0.08"), "1792x1024": Decimal("0.08")},
            ),
            GPT_IMAGE: _model(
                "gpt-image-1",
                "image",
                input_per_mtok=Decimal("5"),
                output_per_mtok=Decimal("40"),
                max_output_tokens=6240,
            ),
            TTS: _model("tts-1", "tts", per_unit_usd=Decimal("0.000015")),
            WHISPER: _model("whisper-1", "stt", per_unit_usd=Decimal("0.0001")),
            TRANSCRIBE: _model(
                "gpt-4o-transcribe", "stt", input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10")
            ),
            SORA: _model(
                "sora-2", "video", per_unit_usd=Decimal("0.01"), per_unit_usd_variants={"1792x1024": Decimal("0.05")}
            ),
            "anthropic/claude-embed": ModelSettings(
                provider="anthropic", upstream_model="nope", category="embedding", input_per_mtok=Decimal("1")
            ),
        },
    )
    gateway, server = start_gateway(settings, fake_openai)
    try:
        yield gateway
    finally:
        server.stop()
        claude.stop()


def sdk(gateway: Gateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key or gateway.key, max_retries=0)


def last_cost(gateway: Gateway) -> int:
    return gateway.usage_records()[-1].credits_micro


def new_key(gateway: Gateway, **restrictions: Any) -> str:
    response = httpx.post(
        gateway.url + "/api/keys/",
        json={"name": "k", **restrictions},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def test_models_lists_what_the_key_may_use_with_prices(routes: Gateway) -> None:
    models = {m.id: m for m in sdk(routes).models.list()}
    assert {EMBED, INSTRUCT, DALLE, TTS, WHISPER, FAKE_MODEL} <= set(models)
    chat = models[FAKE_MODEL].model_extra
    assert chat["category"] == "text" and chat["context_length"] == 128000
    assert chat["pricing"]["input_per_mtok"] == "150" and chat["pricing"]["output_per_mtok"] == "600"
    assert models[DALLE].model_extra["pricing"]["per_unit_variants"]["1024x1024/hd"] == "80"
    # Embeddings are text (docs/product-rules.md): a text-only key sees and calls embedding models.
    narrow = new_key(routes, allowed_categories=["text"])
    visible = {m.id for m in sdk(routes, narrow).models.list()}
    assert {EMBED, "anthropic/claude-embed", FAKE_MODEL} <= visible and not visible & {DALLE, TTS, WHISPER}
    assert models[EMBED].model_extra["category"] == "text"
    assert len(sdk(routes, narrow).embeddings.create(model=EMBED, input="hi").data) == 1
    one = new_key(routes, allowed_models=[TTS])
    assert sdk(routes, one).models.retrieve(TTS).id == TTS
    with pytest.raises(openai.NotFoundError):
        sdk(routes, one).models.retrieve(EMBED)
    with pytest.raises(openai.AuthenticationError):
        sdk(routes, "prx-" + "0" * 48).models.list()


def test_embeddings_bill_prompt_tokens(routes: Gateway) -> None:
    result = sdk(routes).embeddings.create(model=EMBED, input=["one", "two"])
    assert len(result.data) == 2 and result.usage.prompt_tokens == 21
    assert routes.fake.received[-1].body["model"] == "text-embedding-3-small"
    assert last_cost(routes) == 21 * 20  # 0.02 USD/Mtok = 20 micro-credits per token


def test_legacy_completions_plain_and_streamed(routes: Gateway) -> None:
    reply = sdk(routes).completions.create(model=INSTRUCT, prompt="Say hello", max_tokens=20)
    assert reply.choices[0].text == "Hello from the fake upstream"
    assert last_cost(routes) == 21 * 1500 + 5 * 2000
    chunks = list(sdk(routes).completions.create(model=INSTRUCT, prompt="Say hello", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake upstream"
    assert chunks[-1].model_extra["_tollway"]["credits_used"] == "0.0415"
    assert routes.usage_records()[-1].streamed


def test_images_bill_per_image_by_size_and_quality_or_by_tokens(routes: Gateway) -> None:
    made = sdk(routes).images.generate(model=DALLE, prompt="a lighthouse", n=2, size="1024x1024", quality="hd")
    assert len(made.data) == 2
    assert last_cost(routes) == 2 * 80_000_000  # two hd images at 0.08 USD = 80 credits each
    sdk(routes).images.generate(model=DALLE, prompt="a lighthouse", size="1024x1024")
    assert last_cost(routes) == 40_000_000  # the default price
    routes.fake.image_usage = True
    sdk(routes).images.generate(model=GPT_IMAGE, prompt="a lighthouse")
    assert last_cost(routes) == 21 * 5000 + 1056 * 40_000
    record = routes.usage_records()[-1]
    assert (record.input_tokens, record.output_tokens) == (21, 1056)


def test_speech_returns_raw_audio_billed_per_character(routes: Gateway) -> None:
    response = sdk(routes).audio.speech.create(model=TTS, voice="alloy", input="Hello there", response_format="wav")
    assert response.content.startswith(b"ID3Hello there")
    assert response.response.headers["content-type"] == "audio/wav"
    assert last_cost(routes) == 11 * 15_000  # 11 characters at 15 USD per million characters
    assert routes.fake.received[-1].body == {
        "model": "tts-1",
        "voice": "alloy",
        "input": "Hello there",
        "response_format": "wav",
    }


def _wav(seconds: float, rate: int = 8000) -> bytes:
    frames = int(seconds * rate)
    header = (
        b"RIFF"
        + struct.pack("<I", 36 + frames * 2)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    )
    return header + b"data" + struct.pack("<I", frames * 2) + bytes(frames * 2)


def test_transcriptions_bill_seconds_from_the_best_source(routes: Gateway) -> None:
    audio = ("speech.wav", io.BytesIO(_wav(3.2)), "audio/wav")
    result = sdk(routes).audio.transcriptions.create(model=WHISPER, file=audio)
    assert result.text == "Hello from the fake upstream"
    sent = routes.fake.received[-1].body
    assert sent["model"] == "whisper-1" and len(sent["file"]) == len(_wav(3.2))
    assert last_cost(routes) == 9 * 100_000  # usage {"type": "duration", "seconds": 9}

    subtitles = sdk(routes).audio.transcriptions.create(
        model=WHISPER, file=("a.wav", _wav(3.2), "audio/wav"), response_format="srt"
    )
    assert "-->" in subtitles
    assert last_cost(routes) == 10 * 100_000  # the last cue ends at 9.5 s: billed 10 s

    plain = sdk(routes).audio.transcriptions.create(
        model=WHISPER, file=("a.wav", _wav(3.2), "audio/wav"), response_format="text"
    )
    assert plain.strip() == "Hello from the fake upstream"
    assert last_cost(routes) == 4 * 100_000  # no duration in the answer: the WAV header says 3.2 s

    routes.fake.transcription_tokens = True
    sdk(routes).audio.transcriptions.create(model=TRANSCRIBE, file=("a.wav", _wav(1), "audio/wav"))
    assert last_cost(routes) == 70 * 2500 + 12 * 10_000


def test_generation_lookup_by_request_id(routes: Gateway) -> None:
    raw = sdk(routes).embeddings.with_raw_response.create(model=EMBED, input="hi")
    request_id = raw.headers["x-request-id"]
    found = httpx.get(
        routes.v1 + "/generation", params={"id": request_id}, headers={"Authorization": f"Bearer {routes.key}"}
    )
    assert found.status_code == 200
    data = found.json()["data"]
    assert (data["model"], data["provider"], data["credits_used"]) == (EMBED, "fake", "0.00042")
    missing = httpx.get(
        routes.v1 + "/generation", params={"id": "req_nope"}, headers={"Authorization": f"Bearer {routes.key}"}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_every_route_goes_through_the_chain_and_checks_the_category(routes: Gateway) -> None:
    image_only = new_key(routes, allowed_categories=["image"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(routes, image_only).embeddings.create(model=EMBED, input="hi")
    assert denied.value.body["code"] == "category_not_allowed"  # type: ignore[index]
    text_only = new_key(routes, allowed_categories=["text"])
    with pytest.raises(openai.PermissionDeniedError):
        sdk(routes, text_only).audio.speech.create(model=TTS, voice="alloy", input="hi")
    with pytest.raises(openai.BadRequestError) as wrong:
        sdk(routes).embeddings.create(model=DALLE, input="hi")
    assert wrong.value.body["code"] == "model_not_supported"  # type: ignore[index]
    # An embedding model generates nothing: chat refuses it before any upstream call.
    with pytest.raises(openai.BadRequestError) as embeds_only:
        sdk(routes).chat.completions.create(model=EMBED, messages=[{"role": "user", "content": "hi"}])
    assert embeds_only.value.body["code"] == "model_not_supported"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unsupported:
        sdk(routes).embeddings.create(model="anthropic/claude-embed", input="hi")
    assert "does not offer /v1/embeddings" in unsupported.value.message
    with pytest.raises(openai.AuthenticationError):
        sdk(routes, "prx-" + "0" * 48).images.generate(model=DALLE, prompt="x")
    with pytest.raises(openai.BadRequestError) as missing_file:
        httpx_post = httpx.post(
            routes.v1 + "/audio/transcriptions",
            data={"model": WHISPER},
            files={"other": ("x", b"1")},
            headers={"Authorization": f"Bearer {routes.key}"},
        )
        raise openai.BadRequestError("400", response=httpx_post, body=httpx_post.json()["error"])
    assert missing_file.value.body["param"] == "file"  # type: ignore[index]
    assert routes.balance_micro() == 500_000_000  # nothing refused cost anything


def test_video_jobs_are_charged_on_creation_and_refunded_once_if_they_fail(routes: Gateway) -> None:
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the Videos API deprecated
    client = sdk(routes)
    job = client.videos.create(model=SORA, prompt="a lighthouse at dawn", seconds="8", size="1792x1024")
    assert job.status == "queued" and job.id == "video_fake1"
    sent = routes.fake.received[-1]
    assert sent.path == "/v1/videos" and sent.body["model"] == "sora-2" and sent.body["seconds"] == "8"
    charge = 8 * 50_000_000  # 8 s at 0.05 USD = 50 credits a second
    assert last_cost(routes) == charge
    assert routes.balance_micro() == 500_000_000 - charge

    assert client.videos.retrieve(job.id).status == "in_progress"
    content = client.videos.download_content(job.id)
    assert content.content.startswith(b"\x00\x00\x00\x18ftypmp42")

    routes.fake.video_outcome = "failed"
    for _ in range(2):
        failed = client.videos.retrieve(job.id)
        assert failed.status == "failed" and failed.model_extra["_tollway"]["refunded"] is True
    assert routes.balance_micro() == 500_000_000  # refunded exactly once

    other = new_key(routes)
    assert sdk(routes, other).videos.retrieve(job.id).id == job.id  # same account, another key
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("video_unknown")
