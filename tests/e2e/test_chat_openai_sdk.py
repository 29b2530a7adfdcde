"""The official ``openai`` client against a real gateway, on both backends.

Every test checks money to the micro-credit: the balance drops by exactly the price of what
the upstream reported (or, without usage, what tiktoken counts over the streamed text).
"""

from __future__ import annotations

import httpx
import openai
import pytest

from billing.tokens import count_text_tokens
from tests.fakes.gateway_fixtures import FAKE_MODEL, Gateway, expected_cost_micro

OPENING = 500_000_000


def client(gateway: Gateway, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_chat_non_streaming_debits_exact_upstream_usage(gateway: Gateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream"
    cost = expected_cost_micro(prompt=21, completion=5)
    assert gateway.balance_micro() == OPENING - cost

    meta = completion.model_extra["_tollway"]  # type: ignore[index]
    request_id = raw.headers["x-request-id"]
    assert meta["request_id"] == request_id
    assert meta["model_used"] == FAKE_MODEL
    assert meta["provider"] == "fake"
    assert (meta["input_tokens"], meta["output_tokens"]) == (21, 5)
    assert meta["credits_used"] == raw.headers["x-tollway-credits-used"] == "0.00615"
    assert meta["cost_usd"] == "0.00000615"
    assert gateway.debit_count(request_id) == 1

    (record,) = gateway.usage_records()
    assert (record.request_id, record.model, record.credits_micro, record.status_code) == (
        request_id,
        FAKE_MODEL,
        cost,
        200,
    )
    forwarded = gateway.fake.received[-1]
    assert forwarded.body["model"] == "gpt-4o-mini"


def test_chat_streaming_debits_usage_from_final_chunk(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model=FAKE_MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    usage_chunk = chunks[-1]
    assert usage_chunk.usage is not None and usage_chunk.usage.prompt_tokens == 21
    assert usage_chunk.choices == []
    cost = expected_cost_micro(prompt=21, completion=5)
    assert usage_chunk.model_extra["_tollway"]["credits_used"] == "0.00615"  # type: ignore[index]
    assert gateway.balance_micro() == OPENING - cost
    assert gateway.fake.received[-1].body["stream_options"] == {"include_usage": True}
    (record,) = gateway.usage_records()
    assert record.streamed and not record.cancelled and record.credits_micro == cost


def test_chat_stream_without_include_usage_has_no_usage_chunk(gateway: Gateway) -> None:
    """A client that did not ask for usage gets no usage-only chunk (the SDKs' consumers index
    ``choices[0]``); the cost rides on the last chunk, the one that ends the choice, and the
    upstream is still asked for its usage, which is what is billed."""
    chunks = list(
        client(gateway).chat.completions.create(
            model=FAKE_MODEL, messages=[{"role": "user", "content": "Say hello"}], stream=True
        )
    )
    assert all(c.choices and c.usage is None for c in chunks)
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.model_extra["_tollway"]["credits_used"] == "0.00615"  # type: ignore[index]
    assert final.model_extra["_tollway"]["input_tokens"] == 21  # type: ignore[index]
    assert all("_tollway" not in (c.model_extra or {}) for c in chunks[:-1])
    assert gateway.fake.received[-1].body["stream_options"] == {"include_usage": True}
    assert gateway.balance_micro() == OPENING - expected_cost_micro(prompt=21, completion=5)


def test_chat_response_model_is_the_slug_asked_for(gateway: Gateway) -> None:
    """The answer's ``model`` is the slug the client asked for, in JSON and every chunk; the
    upstream's own name rides in ``_tollway.upstream_model``."""
    completion = client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert completion.model == FAKE_MODEL != "gpt-4o-mini"
    assert completion.model_extra["_tollway"]["upstream_model"] == "gpt-4o-mini"  # type: ignore[index]
    chunks = list(
        client(gateway).chat.completions.create(
            model=FAKE_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) > 3 and {c.model for c in chunks} == {FAKE_MODEL}
    assert chunks[-1].model_extra["_tollway"]["upstream_model"] == "gpt-4o-mini"  # type: ignore[index]


def test_chat_cached_input_tokens_billed_at_cached_rate(gateway: Gateway) -> None:
    gateway.fake.cached_tokens = 16
    client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert gateway.balance_micro() == OPENING - expected_cost_micro(prompt=21, completion=5, cached=16)


def test_chat_stream_without_usage_billed_by_tiktoken(gateway: Gateway) -> None:
    gateway.fake.omit_usage = True
    chunks = list(
        client(gateway).chat.completions.create(
            model=FAKE_MODEL,
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    final = chunks[-1]
    assert final.usage is not None and final.choices == []  # the gateway's own count, as asked
    output_tokens = count_text_tokens("Hello from the fake upstream", "gpt-4o-mini")
    assert final.usage.completion_tokens == output_tokens
    cost = expected_cost_micro(prompt=final.usage.prompt_tokens, completion=output_tokens)
    assert gateway.balance_micro() == OPENING - cost


def test_chat_mid_stream_upstream_failure_raises_in_the_sdk(gateway: Gateway) -> None:
    """A stream that breaks midway ends with an OpenAI ``error`` event: the SDK raises
    ``APIError`` instead of returning half an answer as a success; the partial answer is billed once."""
    gateway.fake.stream_error_after = 2
    seen: list[str] = []
    raw = client(gateway).chat.completions.with_raw_response.create(
        model=FAKE_MODEL, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    with pytest.raises(openai.APIError) as raised:
        for chunk in raw.parse():
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "Hello from"
    error = raised.value
    assert error.code == "upstream_unavailable" and error.type == "api_error"
    request_id = raw.headers["x-request-id"]
    assert request_id in error.message
    output_tokens = count_text_tokens("Hello from", "gpt-4o-mini")
    (record,) = gateway.usage_records()
    assert record.output_tokens == output_tokens and record.status_code == 502
    assert gateway.balance_micro() == OPENING - record.credits_micro > 0
    assert gateway.debit_count(request_id) == 1


def test_chat_end_user_id_recorded_not_forwarded(gateway: Gateway) -> None:
    client(gateway).chat.completions.create(
        model=FAKE_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        user="body-user",
        extra_headers={"X-Tollway-User-Id": "user-42"},
    )
    (record,) = gateway.usage_records()
    assert record.end_user_id == "user-42"
    forwarded = gateway.fake.received[-1]
    assert "user" not in forwarded.body
    assert "x-tollway-user-id" not in forwarded.headers


def test_chat_bad_key_is_401_invalid_api_key(gateway: Gateway) -> None:
    bad = openai.OpenAI(base_url=gateway.v1, api_key="prx-" + "0" * 48, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert gateway.fake.received == []


def test_chat_missing_key_is_401_missing_api_key(gateway: Gateway) -> None:
    response = httpx.post(gateway.v1 + "/chat/completions", json={"model": FAKE_MODEL, "messages": []})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_chat_unknown_model_is_400(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="nope/missing", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert gateway.balance_micro() == OPENING


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": "fake/gpt-4o-mini"}', "messages"),
        (b'{"model": "fake/gpt-4o-mini", "messages": []}', "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "fake/gpt-4o-mini", "messages": [{"role": "user"}], "max_tokens": 0}', "max_tokens"),
    ],
)
def test_chat_bad_body_is_400(gateway: Gateway, body: bytes, param: str | None) -> None:
    response = httpx.post(
        gateway.v1 + "/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert gateway.fake.received == []
    # An authenticated request is recorded even when refused, and costs nothing.
    (record,) = gateway.usage_records()
    assert (record.status_code, record.credits_micro, record.request_id) == (
        400,
        0,
        response.headers["x-request-id"],
    )


def test_chat_upstream_5xx_is_502_and_free(gateway: Gateway) -> None:
    gateway.fake.fail_status, gateway.fake.fail_times = 500, 99
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert len(gateway.fake.received) == 3  # retry_attempts, with backoff, then give up
    assert gateway.balance_micro() == OPENING
    (record,) = gateway.usage_records()
    assert (record.status_code, record.credits_micro) == (502, 0)


def test_chat_transient_5xx_is_retried_and_billed_once(gateway: Gateway) -> None:
    gateway.fake.fail_status, gateway.fake.fail_times = 503, 2
    reply = client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from the fake upstream"
    assert len(gateway.fake.received) == 3
    (record,) = gateway.usage_records()
    assert record.status_code == 200 and gateway.debit_count(record.request_id) == 1
    assert gateway.balance_micro() == OPENING - expected_cost_micro(21, 5)


def test_chat_upstream_4xx_keeps_status_and_masks_the_text(gateway: Gateway) -> None:
    gateway.fake.fail_status, gateway.fake.fail_times = 400, 1
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    # The provider's words are the operator's (logged); the caller keeps the status and a code.
    assert "told to fail" not in caught.value.message and "rejected the request (400)" in caught.value.message
    assert gateway.balance_micro() == OPENING


def test_chat_upstream_auth_failure_hides_upstream_text(gateway: Gateway) -> None:
    gateway.fake.api_key = "sk-rotated"
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert "sk-" not in caught.value.message


def test_chat_insufficient_credits_is_402_before_upstream(gateway: Gateway) -> None:
    from tests.fakes.gateway_fixtures import _with_session

    # A first call: the gateway now mirrors the balance, and will until the next refresh.
    client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    served = len(gateway.fake.received)
    left = gateway.balance_micro()

    async def drain(session: object) -> None:
        from billing.accounts import grant_credits

        await grant_credits(session, gateway.account_id, -(left - 1_000), reason="test")  # type: ignore[arg-type]

    gateway.run(_with_session(gateway.settings, drain))
    # A grant made outside the gateway shows up when its balance mirror next refreshes.
    gateway.clock.advance(gateway.settings.balance_refresh_s + 0.1)
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model=FAKE_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 402
    assert caught.value.code == "insufficient_credits"
    assert len(gateway.fake.received) == served  # refused before the upstream
