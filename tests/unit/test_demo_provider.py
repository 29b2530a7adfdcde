from __future__ import annotations

import msgspec

from providers.base import ChatCall
from providers.demo.adapter import DemoAdapter


def call(model: str, **body: object) -> ChatCall:
    return ChatCall(
        body={"model": model, "messages": [{"role": "user", "content": "Hello there, Tollway"}], **body},
        upstream_model=model,
    )


async def test_demo_echo_repeats_last_user_message_with_usage() -> None:
    result = await DemoAdapter().complete(call("echo"))
    assert result.body["choices"][0]["message"]["content"] == "Hello there, Tollway"
    assert result.usage is not None and result.usage.output_tokens == 3
    assert result.body["usage"]["completion_tokens"] == 3
    assert result.usage.input_tokens == result.body["usage"]["prompt_tokens"] == 3 + 3 + 3


async def test_demo_lorem_respects_max_tokens_and_is_deterministic() -> None:
    first = await DemoAdapter().complete(call("lorem", max_tokens=7))
    second = await DemoAdapter().complete(call("lorem", max_tokens=7))
    assert first.body["choices"] == second.body["choices"]
    assert len(first.body["choices"][0]["message"]["content"].split()) == 7
    assert first.body["choices"][0]["finish_reason"] == "length"


async def test_demo_stream_matches_completion_and_reports_usage() -> None:
    stream = await DemoAdapter().open_stream(call("echo", stream=True))
    chunks = [chunk async for chunk in stream]
    decoded = [msgspec.json.decode(c.data) for c in chunks]
    text = "".join(d["choices"][0]["delta"].get("content", "") for d in decoded if d["choices"])
    assert text == "Hello there, Tollway"
    assert "".join(c.text for c in chunks) == text
    assert decoded[-1]["choices"] == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.output_tokens == 3
