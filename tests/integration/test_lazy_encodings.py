"""Encodings load with the first count, never for a request whose upstream reports usage
(billing/tokens.py: an o200k encoding is some 70 MiB of RSS)."""

from __future__ import annotations

import httpx

from billing import tokens
from tests.fakes.gateway_fixtures import FAKE_MODEL, Gateway

BODY = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": "Hello there"}]}


def _forget_encodings() -> None:
    tokens.get_encoding.cache_clear()
    tokens._loaded.clear()


def test_lazy_encodings_not_loaded_when_the_upstream_reports_usage(gateway: Gateway) -> None:
    _forget_encodings()
    headers = {"Authorization": f"Bearer {gateway.key}"}
    chat = httpx.post(f"{gateway.v1}/chat/completions", json=BODY, headers=headers, timeout=30)
    assert chat.status_code == 200
    stream = httpx.post(
        f"{gateway.v1}/chat/completions",
        json={**BODY, "stream": True, "stream_options": {"include_usage": True}},
        headers=headers,
        timeout=30,
    )
    assert stream.status_code == 200
    assert tokens.get_encoding.cache_info().currsize == 0
    assert not tokens.encoding_loaded("gpt-4o-mini")
    assert [record.input_tokens for record in gateway.usage_records()] == [gateway.fake.prompt_tokens] * 2


def test_lazy_encodings_loaded_by_a_stream_without_usage_and_billed(gateway: Gateway) -> None:
    _forget_encodings()
    gateway.fake.omit_usage = True
    response = httpx.post(
        f"{gateway.v1}/chat/completions",
        json={**BODY, "stream": True},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=30,
    )
    assert response.status_code == 200
    # The count ran (in a worker thread, the encoding being unloaded) and loaded only o200k.
    assert tokens.encoding_loaded("gpt-4o-mini")
    assert not tokens.encoding_loaded()
    (record,) = gateway.usage_records()
    assert record.output_tokens == tokens.count_text_tokens(" ".join(gateway.fake.reply_words), "gpt-4o-mini")
    assert record.input_tokens > 0
