"""``/v1/messages`` passed through to a model of the ``anthropic`` provider kind, with the official
``anthropic`` client, on both backends: the body reaches the Anthropic fake untouched (cache marks,
``top_k``, thinking, documents), usage keeps its cache counts, money moves to the micro-credit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, TextBlockParam

from gateway.settings import ModelSettings, ProviderSettings
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gateway_fixtures import Backend, Gateway, gateway_settings, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.servers import ThreadedServer

OPENING = 500_000_000
CLAUDE = "anthropic/claude-sonnet-4-5"
HELLO: list[MessageParam] = [{"role": "user", "content": "Say hello"}]


def sdk(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)


def _micro(tokens: int, usd_per_mtok: str) -> int:
    return int(tokens * Decimal(usd_per_mtok) * 1000)


@pytest.fixture
def claude_gateway(backend: Backend, fake_openai: FakeOpenAI) -> Iterator[tuple[Gateway, FakeAnthropic]]:
    claude = FakeAnthropic(cache_read_tokens=4, cache_creation_tokens=2)
    server = ThreadedServer(claude).start()
    base = gateway_settings(backend, fake_openai)
    settings = gateway_settings(
        backend,
        fake_openai,
        providers={
            **base.providers,
            "anthropic": ProviderSettings(kind="anthropic", base_url=server.url, api_key=claude.api_key),
        },
        models={
            **base.models,
            CLAUDE: ModelSettings(
                provider="anthropic",
                upstream_model="claude-sonnet-4-5",
                input_per_mtok=Decimal("3"),
                output_per_mtok=Decimal("15"),
                cached_input_per_mtok=Decimal("0.30"),
                cache_write_per_mtok=Decimal("3.75"),
                max_output_tokens=8192,
            ),
        },
    )
    gateway, gateway_server = start_gateway(settings, fake_openai)
    try:
        yield gateway, claude
    finally:
        gateway_server.stop()
        server.stop()


CACHED_SYSTEM: list[TextBlockParam] = [
    {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
]
CACHED_TURN: list[MessageParam] = [
    {
        "role": "user",
        "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a memo"}},
            {"type": "text", "text": "Summarise", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
    }
]
# The fake's usage: 21 fresh input tokens, 4 read from the cache, 2 written to it, 5 output.
CLAUDE_COST = _micro(21, "3") + _micro(4, "0.30") + _micro(2, "3.75") + _micro(5, "15")


def test_messages_native_body_reaches_anthropic_untouched(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, claude = claude_gateway
    raw = sdk(gateway).messages.with_raw_response.create(
        model=CLAUDE,
        max_tokens=100,
        system=CACHED_SYSTEM,
        messages=CACHED_TURN,
        thinking={"type": "enabled", "budget_tokens": 64},
        extra_body={"top_k": 5},  # no longer a parameter of the SDK, still one of the API
        metadata={"user_id": "end-user-9"},
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"},
    )
    message = raw.parse()
    received = claude.received[-1]
    assert received.body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": CACHED_SYSTEM,
        "messages": CACHED_TURN,
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 64},
        "metadata": {"user_id": "end-user-9"},
    }
    # The provider's key and version, never the client's key nor its betas.
    assert received.headers["x-api-key"] == claude.api_key and received.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in received.headers
    assert message.model == CLAUDE and message.id == "msg_fake123"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (21, 4, 2)
    assert usage.output_tokens == 5
    assert message.model_extra is not None
    meta = message.model_extra["_tollway"]
    assert meta["upstream_model"] == "claude-sonnet-4-5" and meta["input_tokens"] == 27
    (record,) = gateway.usage_records()
    assert (record.input_tokens, record.cached_tokens, record.output_tokens) == (27, 4, 5)
    assert record.credits_micro == CLAUDE_COST and gateway.balance_micro() == OPENING - CLAUDE_COST
    assert record.request_id == raw.headers["request-id"] and record.end_user_id == "end-user-9"


def test_messages_native_caps_max_tokens_at_the_model(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, claude = claude_gateway
    response = httpx.post(  # the SDK refuses a max_tokens this large without streaming
        gateway.url + "/v1/messages",
        json={"model": CLAUDE, "max_tokens": 100_000, "messages": HELLO},
        headers={"x-api-key": gateway.key},
        timeout=20,
    )
    assert response.status_code == 200 and response.json()["model"] == CLAUDE
    assert claude.received[-1].body["max_tokens"] == 8192  # the model's max_output_tokens, as reserved


def test_messages_native_stream_forwards_events(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, claude = claude_gateway
    with sdk(gateway).messages.stream(
        model=CLAUDE,
        max_tokens=100,
        system=CACHED_SYSTEM,
        messages=HELLO,
        extra_body={"top_k": 3},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake Claude" and final.model == CLAUDE
    usage = final.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (21, 4, 2)
    assert usage.output_tokens == 5
    sent = claude.received[-1].body
    assert sent["system"] == CACHED_SYSTEM and sent["top_k"] == 3 and sent["stream"] is True
    (record,) = gateway.usage_records()
    assert record.streamed and not record.cancelled and record.status_code == 200
    assert record.credits_micro == CLAUDE_COST and gateway.balance_micro() == OPENING - CLAUDE_COST


def test_messages_native_stream_wire_is_the_upstreams(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, _ = claude_gateway
    response = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": CLAUDE, "max_tokens": 20, "messages": HELLO, "stream": True},
        headers={"x-api-key": gateway.key},
        timeout=20,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = [frame for frame in response.text.split("\n\n") if frame]
    kinds_seen = [frame.split("\n")[0].removeprefix("event: ") for frame in frames]
    assert kinds_seen[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds_seen[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    # The fake writes its JSON with Python's spacing: passed on byte for byte, not re-encoded.
    delta = 'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}'
    assert frames[3] == "event: content_block_delta\n" + delta
    start, final = (json.loads(frames[i].split("\n", 1)[1].removeprefix("data: ")) for i in (0, -2))
    assert start["message"]["model"] == CLAUDE
    assert final["usage"] == {"output_tokens": 5} and final["_tollway"]["credits_used"]


def test_messages_native_dropped_stream_is_settled_once(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, claude = claude_gateway
    claude.reply_words = [f"w{i}" for i in range(200)]
    claude.chunk_delay_s = 0.02
    with sdk(gateway).messages.stream(model=CLAUDE, max_tokens=500, messages=HELLO) as stream:
        for seen, _text in enumerate(stream.text_stream, 1):
            if seen >= 5:
                break  # leaving the block closes the connection mid-stream
    (record,) = gateway.awaited_usage_records()
    assert record.cancelled and record.status_code == 499 and record.streamed
    # message_start's prompt, cache counts included, and what was streamed before the drop.
    assert record.input_tokens == 27 and record.cached_tokens == 4 and 0 < record.output_tokens < 200
    assert gateway.balance_micro() == OPENING - record.credits_micro
    assert gateway.debit_count(record.request_id) <= 1


def test_messages_native_upstream_error_mid_stream(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, claude = claude_gateway
    claude.stream_error_after = 2
    with (
        pytest.raises(anthropic.APIStatusError, match="request id"),
        sdk(gateway).messages.stream(model=CLAUDE, max_tokens=50, messages=HELLO) as stream,
    ):
        for _text in stream.text_stream:
            pass
    (record,) = gateway.usage_records()
    assert record.status_code == 502 and record.input_tokens == 27  # an upstream 5xx is a 502 here
    assert gateway.balance_micro() == OPENING - record.credits_micro
    assert gateway.debit_count(record.request_id) <= 1


def test_messages_native_upstream_refusal_is_anthropic_shaped(
    claude_gateway: tuple[Gateway, FakeAnthropic],
) -> None:
    gateway, claude = claude_gateway
    claude.fail_status = 429
    with pytest.raises(anthropic.RateLimitError):
        sdk(gateway).messages.create(model=CLAUDE, max_tokens=50, messages=HELLO)
    (record,) = gateway.usage_records()
    assert record.status_code == 429 and record.credits_micro == 0 and gateway.balance_micro() == OPENING


def test_messages_native_lying_usage_is_counted_and_flagged(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, claude = claude_gateway
    claude.input_tokens = -5  # not a count: the gateway counts the prompt and the answer itself
    message = sdk(gateway).messages.create(model=CLAUDE, max_tokens=50, messages=HELLO)
    assert message.model == CLAUDE
    (record,) = gateway.usage_records()
    assert record.anomaly == "malformed_usage" and record.input_tokens > 0 and record.output_tokens > 0
    assert record.cached_tokens == 0 and gateway.balance_micro() == OPENING - record.credits_micro > 0


def test_messages_native_retry_sends_the_same_body(claude_gateway: tuple[Gateway, FakeAnthropic]) -> None:
    gateway, claude = claude_gateway
    claude.fail_status, claude.fail_times = 529, 1  # the first attempt is overloaded, the retry serves
    message = sdk(gateway).messages.create(model=CLAUDE, max_tokens=50, messages=HELLO, extra_body={"top_k": 2})
    assert message.content[0].type == "text" and claude.served == 1
    assert [request.body["top_k"] for request in claude.received] == [2, 2]
    assert len(gateway.usage_records()) == 1 and gateway.balance_micro() == OPENING - CLAUDE_COST
