"""``max_request_body_bytes``: the ceiling of every route's request body (Litestar's
``request_max_body_size``), a 413 in the OpenAI error shape past it, whether the client announces
the length or streams the body chunked."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import msgspec
import pytest

from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

LIMIT = 64 * 1024  # far below max_chat_body_bytes (8 MiB): the 413 can only come from the new ceiling


@pytest.fixture
def capped(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    gateway, server = start_gateway(gateway_settings(backend, fake_openai, max_request_body_bytes=LIMIT), fake_openai)
    try:
        yield gateway
    finally:
        server.stop()


def _chat_body(size: int) -> bytes:
    body = msgspec.json.encode({"model": FAKE_MODEL, "messages": [{"role": "user", "content": ""}]})
    padding = size - len(body)
    assert padding >= 0
    return msgspec.json.encode({"model": FAKE_MODEL, "messages": [{"role": "user", "content": "x" * padding}]})


def _post(gateway: Gateway, content: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.post(
        f"{gateway.v1}/chat/completions",
        content=content,
        headers={"authorization": f"Bearer {gateway.key}", "content-type": "application/json"},
        timeout=30,
    )


def _assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    assert error["message"]


def test_body_at_the_limit_is_served(capped: Gateway) -> None:
    body = _chat_body(LIMIT)
    assert len(body) == LIMIT
    assert _post(capped, body).status_code == 200
    assert len(capped.fake.received) == 1


def test_body_over_the_limit_is_413_before_the_upstream(capped: Gateway) -> None:
    _assert_too_large(_post(capped, _chat_body(LIMIT + 1)))
    assert capped.fake.received == []


def test_chunked_body_over_the_limit_is_413(capped: Gateway) -> None:
    body = _chat_body(4 * LIMIT)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known while reading
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    _assert_too_large(_post(capped, chunks()))
    assert capped.fake.received == []
