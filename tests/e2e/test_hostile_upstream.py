"""Issue 10, money items 2 and 3: the upstream is never allowed more than was reserved, and its
usage is believed only when it is believable. Each test is a repro that took money on the
gateway before (negative tokens adding credits, a 10⁹-token bill, a 500 with the hold stuck,
``n`` and tools ignored by the reservation, a forged WAV header), run through the real HTTP app
on both backends."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from billing.money import credits_to_micro
from gateway.settings import ModelSettings
from tests.fakes.gateway_fixtures import ADMIN_TOKEN, FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

WHISPER = "fake/whisper-1"
FIFTY_CREDITS = 50_000_000


@pytest.fixture
def small(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    settings = gateway_settings(backend, fake_openai)
    models = {
        **settings.models,
        WHISPER: ModelSettings(
            provider="fake", upstream_model="whisper-1", category="stt", per_unit_usd=Decimal("0.0001")
        ),
    }
    gateway, server = start_gateway(
        gateway_settings(backend, fake_openai, models=models), fake_openai, credits_micro=FIFTY_CREDITS
    )
    try:
        yield gateway
    finally:
        server.stop()


def chat(gateway: Gateway, **body: Any) -> httpx.Response:
    payload = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(
        gateway.v1 + "/chat/completions", json=payload, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10
    )


def reserved_for(gateway: Gateway, **body: Any) -> int:
    """What a call reserves, read from the stream header (the same estimate as non-streamed)."""
    with httpx.stream(
        "POST",
        gateway.v1 + "/chat/completions",
        json={"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True, **body},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200, response.read()
        response.read()
        return credits_to_micro(response.headers["x-tollway-credits-reserved"])


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -1_000_000, "completion_tokens": -5},
        {"prompt_tokens": "21", "completion_tokens": 5},
        {"prompt_tokens": 1e308, "completion_tokens": 5},
        {"prompt_tokens": 2**70, "completion_tokens": 2**70},
        {"prompt_tokens": 21, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 10**6}},
        "lots",
    ],
    ids=["negative", "string", "float", "beyond-64-bits", "cached-beyond-prompt", "not-an-object"],
)
def test_unbelievable_usage_is_counted_instead_and_flagged(small: Gateway, usage: Any) -> None:
    small.fake.usage_override = usage
    before = small.balance_micro()
    response = chat(small, max_tokens=10)
    assert response.status_code == 200, response.text
    small.settled()
    record = small.usage_records()[-1]
    assert record.anomaly == "malformed_usage"
    # Billed by the gateway's own count: the prompt and the five words the fake wrote.
    debit = before - small.balance_micro()
    assert 0 < debit < 100_000 and record.output_tokens == 5 and record.input_tokens > 0


def test_usage_beyond_the_hold_is_billed_at_the_hold_and_flagged(small: Gateway) -> None:
    small.fake.usage_override = {"prompt_tokens": 10**9, "completion_tokens": 10**9}
    before = small.balance_micro()
    held = reserved_for(small, max_tokens=10)  # the same call streamed: what it reserves
    small.settled()
    small.fake.usage_override = {"prompt_tokens": 10**9, "completion_tokens": 10**9}
    middle = small.balance_micro()
    assert 0 < before - middle <= held  # the stream too is held to its reservation
    response = chat(small, max_tokens=10)
    assert response.status_code == 200, response.text
    small.settled()
    assert 0 < middle - small.balance_micro() <= held
    records = small.usage_records()
    assert [r.anomaly for r in records[-2:]] == ["usage_over_hold", "usage_over_hold"]
    # The operator sees them in one place.
    seen = httpx.get(small.url + "/api/admin/anomalies/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert seen["counts"]["usage_over_hold"] == 2 and seen["this_process"]["usage_over_hold"] == 2
    assert {r["request_id"] for r in seen["newest"]} == {r.request_id for r in records[-2:]}


def test_stream_with_lying_usage_counts_and_never_errors(small: Gateway) -> None:
    small.fake.usage_override = {"prompt_tokens": "many", "completion_tokens": -1}
    reserved_for(small, max_tokens=10)
    small.settled()
    record = small.usage_records()[-1]
    assert (record.status_code, record.anomaly, record.output_tokens) == (200, "malformed_usage", 5)


def test_the_reserved_output_cap_always_goes_upstream(small: Gateway) -> None:
    assert chat(small, max_tokens=10**6).status_code == 200
    sent = small.fake.received[-1].body
    assert sent["max_completion_tokens"] == 16384 and "max_tokens" not in sent  # the model's maximum
    assert chat(small, max_tokens=7).status_code == 200
    assert small.fake.received[-1].body["max_completion_tokens"] == 7
    assert chat(small).status_code == 200  # no max_tokens: the upstream's default is not ours to trust
    sent = small.fake.received[-1].body
    assert 1 <= sent["max_completion_tokens"] <= 16384
    assert chat(small, max_tokens=10**20).status_code == 400  # beyond any model: a clear 400


def test_n_choices_and_every_prompt_part_are_reserved(small: Gateway) -> None:
    one = reserved_for(small, max_tokens=100)
    ten = reserved_for(small, max_tokens=100, n=10)
    # Nine more completions of 100 tokens at 600 micro-credits (and the bytes of `"n": 10`).
    assert 9 * 100 * 600 <= ten - one <= 9 * 100 * 600 + 20 * 150
    schema = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(200)}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    functions = [{"name": "g", "parameters": schema}]
    response_format = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    for part in ({"tools": tools}, {"functions": functions}, {"response_format": response_format}):
        # Each part holds some 2,000 tokens of schema: at least 2,000 × 150 micro-credits more.
        assert reserved_for(small, max_tokens=100, **part) - one > 2_000 * 150, part


def _wav(byte_rate: int, data_bytes: int, *, sample_rate: int = 16_000, channels: int = 1, bits: int = 16) -> bytes:
    align = channels * bits // 8
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
    header += struct.pack("<HHIIHH", 1, channels, sample_rate, byte_rate, align, bits)
    return header + b"data" + struct.pack("<I", data_bytes) + bytes(data_bytes)


@pytest.mark.parametrize("byte_rate", [1, 2**32 - 1], ids=["tiny-byte-rate", "huge-byte-rate"])
def test_a_forged_wav_header_does_not_decide_the_bill(small: Gateway, byte_rate: int) -> None:
    audio = _wav(byte_rate, 200_000)  # 12.5 s at 16 kB/s, the size fallback
    before = small.balance_micro()
    response = httpx.post(
        small.v1 + "/audio/transcriptions",
        data={"model": WHISPER, "response_format": "text"},  # text: the upstream reports no duration
        files={"file": ("a.wav", audio, "audio/wav")},
        headers={"Authorization": f"Bearer {small.key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    small.settled()
    assert before - small.balance_micro() == 13 * 100_000  # 0.0001 USD a second = 100,000 µcredits


def test_a_consistent_wav_header_is_believed(small: Gateway) -> None:
    audio = _wav(32_000, 320_000)  # 16 kHz mono 16-bit: 10 s
    before = small.balance_micro()
    response = httpx.post(
        small.v1 + "/audio/transcriptions",
        data={"model": WHISPER, "response_format": "text"},
        files={"file": ("a.wav", audio, "audio/wav")},
        headers={"Authorization": f"Bearer {small.key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    small.settled()
    assert before - small.balance_micro() == 10 * 100_000


@pytest.mark.parametrize("duration", [-3600, "9", 1e308], ids=["negative", "string", "huge"])
def test_an_unbelievable_duration_falls_back_to_the_file(small: Gateway, duration: Any) -> None:
    small.fake.transcription_seconds = duration
    audio = _wav(32_000, 320_000)
    before = small.balance_micro()
    response = httpx.post(
        small.v1 + "/audio/transcriptions",
        data={"model": WHISPER},
        files={"file": ("a.wav", audio, "audio/wav")},
        headers={"Authorization": f"Bearer {small.key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    small.settled()
    assert before - small.balance_micro() == 10 * 100_000
    assert small.usage_records()[-1].anomaly == "malformed_usage"


@pytest.mark.parametrize(("status", "code"), [(400, 400), (429, 429), (503, 502)])
def test_upstream_error_text_never_reaches_the_caller(small: Gateway, status: int, code: int) -> None:
    small.fake.fail_status, small.fake.fail_times = status, 100
    response = chat(small, max_tokens=10)
    assert response.status_code == code
    error = response.json()["error"]
    assert "told to fail" not in response.text and error["code"] and error["type"]
    streamed = chat(small, max_tokens=10, stream=True)
    assert streamed.status_code == code and "told to fail" not in streamed.text
