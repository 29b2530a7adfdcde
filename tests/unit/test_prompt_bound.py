"""Issue 10, item 13: a prompt is sized without tokenising when a cheap bound already fits, and
tokenising a large one never runs on the event loop."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.tokens import chat_tokens_upper_bound, count_chat_tokens, prompt_fields
from gateway.pipeline.chat import TOKENISE_INLINE_BYTES, count_tokens

_text = st.text(max_size=300)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]), "content": _text},
    optional={"name": st.text(max_size=20)},
)
_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": _text})}),
)
_rich_message = st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(_part, max_size=4)})
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(st.one_of(_message, _rich_message), min_size=1, max_size=6),
    extra=st.dictionaries(st.sampled_from(["tools", "functions", "response_format", "tool_choice", "x"]), _json),
    model=st.sampled_from(["gpt-4o-mini", "gpt-4", "claude-3-5-sonnet"]),
)
def test_chat_bound_is_never_below_the_exact_count(
    messages: list[dict[str, Any]], extra: dict[str, Any], model: str
) -> None:
    body = {"model": model, "messages": messages, **extra}
    raw = msgspec.json.encode(body)
    fields = prompt_fields(body)
    exact = count_chat_tokens(messages, model, extra=fields)
    assert chat_tokens_upper_bound(len(raw), messages, fields) >= exact


def test_prompt_fields_count_tools_functions_and_schemas_but_not_sampling() -> None:
    body = {
        "model": "m",
        "messages": [],
        "temperature": 0.3,
        "max_tokens": 5,
        "n": 2,
        "tools": [1],
        "functions": [2],
        "response_format": {"json_schema": {}},
        "a_field_from_next_year": "text",
    }
    assert set(prompt_fields(body)) == {"tools", "functions", "response_format", "a_field_from_next_year"}


async def test_large_counts_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def count() -> int:
        seen.append(threading.get_ident())
        return 1

    await count_tokens(TOKENISE_INLINE_BYTES, count)
    await count_tokens(TOKENISE_INLINE_BYTES + 1, count)
    assert seen[0] == loop_thread and seen[1] != loop_thread
