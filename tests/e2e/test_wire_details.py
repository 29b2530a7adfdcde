"""The details of the /v1 wire that clients read (issue 15), through the real app and the
official ``openai`` package: rate-limit headers, an upstream 429's Retry-After, the upstream
error's ``param``, ``created`` in /v1/models, ``n`` from the demo provider, the caller's
X-Request-Id, and the error event of a broken legacy completions stream."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.api.views import CATALOGUE_CREATED
from gateway.settings import ModelSettings, ProviderSettings
from tests.fakes.gateway_fixtures import FAKE_MODEL, Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
DURATION = re.compile(r"([0-9]+m)?[0-9]+(\.[0-9]+)?s|[0-9]+ms")


def sdk(gateway: Gateway, key: str | None = None, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key or gateway.key, max_retries=max_retries)


def new_key(gateway: Gateway, **limits: int) -> str:
    created = httpx.post(
        gateway.url + "/api/keys/",
        json={"name": "paced", **limits},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


@pytest.fixture
def one_attempt(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    """A gateway that tries the upstream once per request, so every upstream call the fake
    counts is one the SDK made; with the demo provider beside it for ``n``."""
    settings = gateway_settings(backend, fake_openai, retry_attempts=1, demo_provider=True)
    gateway, server = start_gateway(settings, fake_openai)
    try:
        yield gateway
    finally:
        server.stop()


def test_rate_limit_headers_from_the_reservation(gateway: Gateway) -> None:
    # The windows are wall-clock minutes: at the top of one, the test's requests all share it
    # (run near the end of a minute they straddled two, and the count started again).
    gateway.clock.set_now(datetime.now(UTC).replace(second=0, microsecond=0))
    key = new_key(gateway, rpm_limit=3, tpm_limit=1_000_000)
    raw = sdk(gateway, key).chat.completions.with_raw_response.create(model=FAKE_MODEL, messages=HI)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000000"
    held = 1_000_000 - int(raw.headers["x-ratelimit-remaining-tokens"])
    assert held > 0  # the request's worst case, counted by the same apply that reserved it
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert DURATION.fullmatch(raw.headers[name]), raw.headers[name]
    streamed = sdk(gateway, key).chat.completions.with_raw_response.create(model=FAKE_MODEL, messages=HI, stream=True)
    assert streamed.headers["x-ratelimit-remaining-requests"] == "1"
    list(streamed.parse())
    sdk(gateway, key).chat.completions.create(model=FAKE_MODEL, messages=HI)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(gateway, key).chat.completions.create(model=FAKE_MODEL, messages=HI)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "0"
    assert DURATION.fullmatch(headers["x-ratelimit-reset-requests"])
    assert 1 <= int(headers["retry-after"]) <= 60


def test_no_rate_limit_headers_without_limits(gateway: Gateway) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(model=FAKE_MODEL, messages=HI)
    assert not [name for name in raw.headers if name.startswith("x-ratelimit-")]


def test_upstream_429_retry_after_makes_the_sdk_wait(one_attempt: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upstream 429's Retry-After reaches the SDK, which waits that long and retries once
    (its sleep observed, not timed), instead of retrying at once."""
    fake = one_attempt.fake
    fake.fail_status, fake.fail_times = 429, 2
    fake.fail_headers = {"Retry-After": "1", "retry-after-ms": "1000"}
    slept: list[float] = []
    monkeypatch.setattr("openai._base_client.time.sleep", slept.append)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(one_attempt, max_retries=1).chat.completions.create(model=FAKE_MODEL, messages=HI)
    assert slept == [1.0]
    assert len(fake.received) == 2  # the first try and the one retry, nothing in between
    headers = refused.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("1", "1000")
    assert refused.value.code == "upstream_rate_limited"


def test_upstream_retry_headers_on_a_stream_refusal_and_dates_dropped(one_attempt: Gateway) -> None:
    fake = one_attempt.fake
    fake.fail_status, fake.fail_times = 429, 1
    fake.fail_headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(one_attempt).chat.completions.create(model=FAKE_MODEL, messages=HI, stream=True)
    assert "retry-after" not in refused.value.response.headers  # only plain numbers are passed on
    fake.fail_times, fake.fail_headers = 1, {"Retry-After": "7"}
    with pytest.raises(openai.RateLimitError) as again:
        sdk(one_attempt).chat.completions.create(model=FAKE_MODEL, messages=HI, stream=True)
    assert again.value.response.headers["retry-after"] == "7"


def test_upstream_error_param_kept(one_attempt: Gateway) -> None:
    fake = one_attempt.fake
    fake.fail_status, fake.fail_times, fake.fail_param = 400, 1, "messages[0].content"
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(one_attempt).chat.completions.create(model=FAKE_MODEL, messages=HI)
    assert refused.value.param == "messages[0].content"
    assert refused.value.body["param"] == "messages[0].content"  # type: ignore[index]
    fake.fail_status, fake.fail_times, fake.fail_param = 400, 1, "bad\nparam with spaces"
    with pytest.raises(openai.BadRequestError) as odd:
        sdk(one_attempt).chat.completions.create(model=FAKE_MODEL, messages=HI)
    assert odd.value.param is None


def test_models_have_a_stable_created(gateway: Gateway) -> None:
    models = list(sdk(gateway).models.list())
    assert models and {m.created for m in models} == {CATALOGUE_CREATED}
    assert sdk(gateway).models.retrieve(FAKE_MODEL).created == CATALOGUE_CREATED


def test_demo_provider_honours_n(one_attempt: Gateway) -> None:
    client = sdk(one_attempt)
    words = "one two three"
    message: list[ChatCompletionMessageParam] = [{"role": "user", "content": words}]
    reply = client.chat.completions.create(model="demo/echo", messages=message, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {words}
    assert reply.usage is not None and reply.usage.completion_tokens == 9
    assert reply.model == "demo/echo"
    chunks = list(
        client.chat.completions.create(
            model="demo/echo",
            messages=message,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: words, 1: words}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_callers_request_id_reaches_the_sdk(gateway: Gateway) -> None:
    client = sdk(gateway).with_options(default_headers={"X-Request-Id": "order-7/try-1"})
    raw = client.chat.completions.with_raw_response.create(model=FAKE_MODEL, messages=HI)
    assert raw.headers["x-request-id"] == "order-7/try-1" == raw.request_id
    assert gateway.fake.received[-1].headers["x-request-id"] == "order-7/try-1"
    (record,) = gateway.usage_records()
    assert record.request_id == raw.headers["x-tollway-request-id"] != "order-7/try-1"


def test_completions_stream_broken_midway_raises_in_the_sdk(gateway: Gateway) -> None:
    gateway.fake.stream_error_after = 1
    with pytest.raises(openai.APIError) as raised:
        list(sdk(gateway).completions.create(model=FAKE_MODEL, prompt="Say hello", stream=True))
    assert raised.value.code == "upstream_unavailable"
    (record,) = gateway.usage_records()
    assert record.status_code == 502 and record.streamed


def test_completions_model_and_usage_chunk(gateway: Gateway) -> None:
    chunks = list(sdk(gateway).completions.create(model=FAKE_MODEL, prompt="Say hello", stream=True))
    assert chunks and {c.model for c in chunks} == {FAKE_MODEL}
    assert all(c.choices for c in chunks)
    assert chunks[-1].model_extra["_tollway"]["model_used"] == FAKE_MODEL  # type: ignore[index]


def test_fallback_slug_names_the_answer(backend: Backend, fake_openai: FakeOpenAI) -> None:
    """When the asked model is refused and its fallback serves, the answer names the fallback."""
    settings = gateway_settings(
        backend,
        fake_openai,
        retry_attempts=2,  # the asked model's deployment, then its fallback's
        providers={
            "fake": ProviderSettings(kind="openai", base_url=fake_openai.url + "/v1", api_key=fake_openai.api_key),  # type: ignore[attr-defined]
            "dead": ProviderSettings(kind="openai", base_url="http://127.0.0.1:9/v1", api_key="sk-none"),
        },
        models={
            FAKE_MODEL: ModelSettings(
                provider="fake", upstream_model="gpt-4o-mini", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1)
            ),
            "dead/gpt": ModelSettings(
                provider="dead", upstream_model="gpt-x", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1)
            ),
        },
    )
    gateway, server = start_gateway(settings, fake_openai)
    try:
        reply = sdk(gateway).chat.completions.create(model="dead/gpt", messages=HI, extra_body={"models": [FAKE_MODEL]})
        assert reply.model == FAKE_MODEL
        assert reply.model_extra["_tollway"]["upstream_model"] == "gpt-4o-mini"  # type: ignore[index]
    finally:
        server.stop()
