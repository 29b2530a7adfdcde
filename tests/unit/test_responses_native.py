"""The Responses pass-through's pure parts: usage read from answers and events, the prompt's
bound against its count, the generated text, the setting's validation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.pipeline.chat import view_of
from gateway.pipeline.responses_native import (
    EventView,
    NativePrompt,
    NativeView,
    _output_text,
    _view_usage,
    responses_usage,
)
from gateway.settings import ProviderSettings, Settings, SettingsError, validate_settings
from providers.base import Usage
from providers.sse import SSEParser

GOLDEN = Path(__file__).parent.parent / "golden" / "responses"


def test_usage_is_read_and_garbage_distrusted() -> None:
    assert responses_usage(None) is None
    good = {"input_tokens": 19, "output_tokens": 10, "input_tokens_details": {"cached_tokens": 4}}
    assert responses_usage(good) == Usage(input_tokens=19, output_tokens=10, cached_input_tokens=4)
    for bad in (
        "lots",
        {"input_tokens": -1, "output_tokens": 1},
        {"input_tokens": 1, "output_tokens": 2**70},
        {"input_tokens": 1, "output_tokens": 1, "input_tokens_details": {"cached_tokens": 5}},
        {"input_tokens": 1, "output_tokens": 1, "input_tokens_details": "x"},
        {"input_tokens": "9", "output_tokens": 1},
    ):
        usage = responses_usage(bad)
        assert usage is not None and usage.malformed, bad


def test_golden_stream_events_read_every_split() -> None:
    """The golden stream through the SSE parser at every split: the same final usage each time."""
    raw = (GOLDEN / "stream_text.responses.sse").read_bytes()
    decoder = msgspec.json.Decoder(EventView)
    expected: list[tuple[str, Usage | None]] | None = None
    for cut in range(len(raw) + 1):
        parser = SSEParser()
        events = [*parser.feed(raw[:cut]), *parser.feed(raw[cut:]), *parser.close()]
        views = [decoder.decode(event.data) for event in events]
        seen = [(v.type, _view_usage(v.response.usage if v.response else None)) for v in views]
        if expected is None:
            expected = seen
        assert seen == expected
    assert expected is not None and expected[-1] == (
        "response.completed",
        Usage(input_tokens=21, output_tokens=3),
    )


def test_prompt_bound_covers_its_count() -> None:
    body: dict[str, Any] = json.loads((GOLDEN / "request.responses.json").read_text())
    raw = json.dumps(body).encode()
    view = view_of(body, NativeView)
    prompt = NativePrompt(len(raw), view, "gpt-4o-mini")
    exact = asyncio.run(prompt.exact())
    assert 0 < exact <= prompt.bound


def test_image_parts_are_bounded_at_their_largest() -> None:
    body = {
        "model": "m/x",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}],
    }
    small = NativePrompt(100, view_of({"model": "m/x", "input": "hi"}, NativeView), "gpt-4o-mini")
    with_image = NativePrompt(100, view_of(body, NativeView), "gpt-4o-mini")
    assert with_image.bound - small.bound > 1000


def test_output_text_of_the_golden_answers() -> None:
    text = json.loads((GOLDEN / "response_text.responses.json").read_text())
    assert _output_text(text) == "Hello! How can I assist you today?"
    tools = json.loads((GOLDEN / "response_tools.responses.json").read_text())
    assert "get_weather" in _output_text(tools)
    assert _output_text({"output": ["junk", {"content": [1, {"text": 5}]}]}) == ""


def test_responses_api_only_where_json_routes_pass_through() -> None:
    validate_settings(Settings(providers={"o": ProviderSettings(kind="openai", responses_api=True)}))
    for kind, base_url in (("anthropic", ""), ("azure", "https://r.openai.azure.com")):
        with pytest.raises(SettingsError, match="responses_api"):
            validate_settings(
                Settings(providers={"p": ProviderSettings(kind=kind, base_url=base_url, responses_api=True)})
            )


def test_deeply_nested_input_is_walked_without_recursion() -> None:
    nested: Any = "deep"
    for _ in range(5000):
        nested = [{"content": nested}]
    prompt = NativePrompt(20_000, NativeView(model="m/x", input=nested), "gpt-4o-mini")
    assert asyncio.run(prompt.exact()) >= 1 and prompt.bound >= 20_000
