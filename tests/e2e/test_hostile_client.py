"""Issue 10, items 1 (the door), 13 and 14 on /v1: what a hostile client sends gets a clear 4xx in
the OpenAI error shape, and nothing it sends can make a usage record Postgres would refuse."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

CAP = 64 * 1024


@pytest.fixture
def capped(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    settings = gateway_settings(backend, fake_openai, max_chat_body_bytes=CAP)
    gateway, server = start_gateway(settings, fake_openai, credits_micro=1_000_000)
    try:
        yield gateway
    finally:
        server.stop()


def post(gateway: Gateway, content: bytes) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
        timeout=30,
    )


def chat(gateway: Gateway, **body: object) -> httpx.Response:
    payload = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(
        gateway.v1 + "/chat/completions", json=payload, headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30
    )


def test_a_chat_body_over_the_cap_is_413_before_any_count(capped: Gateway) -> None:
    response = chat(capped, messages=[{"role": "user", "content": "x" * CAP}])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert not capped.fake.received


def test_a_large_prompt_the_balance_cannot_cover_is_a_402(capped: Gateway) -> None:
    response = chat(capped, messages=[{"role": "user", "content": "word " * 12_000}], max_tokens=10)
    assert response.status_code == 402 and response.json()["error"]["code"] == "insufficient_credits"
    assert not capped.fake.received


def test_nul_bytes_never_reach_a_usage_record(capped: Gateway) -> None:
    assert chat(capped, user="a\u0000b").status_code == 400
    assert chat(capped, user="x" * 257).status_code == 400
    unknown = chat(capped, model="fake/\u0000gpt")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "model_not_found", unknown.text
    multipart = httpx.post(
        capped.v1 + "/audio/transcriptions",
        data={"model": "fake/whisper", "user": "a\u0000b"},
        files={"file": ("a.wav", b"RIFF", "audio/wav")},
        headers={"Authorization": f"Bearer {capped.key}"},
        timeout=10,
    )
    assert multipart.status_code in (400, 404)
    assert chat(capped, user="alice").status_code == 200
    records = capped.usage_records()  # written on both backends: Postgres refused NUL before
    assert all("\x00" not in r.end_user_id + r.model for r in records)
    assert records[-1].end_user_id == "alice" and len(records) >= 4


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "fake/gpt-4o-mini", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"model": "fake/gpt-4o-mini", "messages": [{"role": "assistant", "content": "x", "tool_calls": 5}]}',
        b'{"model": "fake/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 1e400}',
        b'{"model": "fake/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": '
        + b"9" * 400
        + b"}",
        b'{"model": 5, "messages": []}',
    ],
    ids=["nested-array", "nested-messages", "tool_calls-5", "n-1e400", "huge-max_tokens", "wrong-types"],
)
def test_hostile_chat_bodies_are_4xx_never_500(capped: Gateway, content: bytes) -> None:
    response = post(capped, content)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"] and error["code"]
