"""Offline token counting: shipped encodings, hash checks, model mapping and chat recipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from billing.tokens import (
    ENCODINGS,
    IMAGE_UNKNOWN_SIZE,
    EncodingFileError,
    count_chat_tokens,
    count_text_tokens,
    encoding_name_for_model,
    encoding_path,
    estimate_image_tokens,
    get_encoding,
    load_ranks,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_tokens_known_counts(name: str) -> None:
    encoding = get_encoding(name)
    assert len(encoding.encode_ordinary("hello world")) == 2
    assert encoding.decode(encoding.encode_ordinary("Tollway meters tokens.")) == "Tollway meters tokens."
    assert encoding.n_vocab > 100_000


def test_tokens_match_published_ids() -> None:
    # Token ids OpenAI's tokenizer gives for "hello world" in each encoding.
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("openai/gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("openai/text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("anthropic/claude-sonnet-4-5", "o200k_base"),
        ("echo", "o200k_base"),
    ],
)
def test_tokens_model_to_encoding(model: str, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_tokens_hash_mismatch_is_refused(tmp_path: Path) -> None:
    corrupted = tmp_path / "o200k_base.tiktoken"
    data = bytearray(encoding_path("o200k_base").read_bytes())
    data[10] ^= 1
    corrupted.write_bytes(bytes(data))
    with pytest.raises(EncodingFileError, match="sha256"):
        load_ranks(corrupted, ENCODINGS["o200k_base"].sha256)


def test_tokens_special_token_text_counts_as_text() -> None:
    assert count_text_tokens("<|endoftext|>", "gpt-4o") > 1
    assert count_text_tokens("", "gpt-4o") == 0


def test_tokens_chat_recipe() -> None:
    encoding = get_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi", "name": "ann"},
    ]
    expected = (
        3
        + 3
        + len(encoding.encode_ordinary("system"))
        + len(encoding.encode_ordinary("You are terse."))
        + 3
        + len(encoding.encode_ordinary("user"))
        + len(encoding.encode_ordinary("Hi"))
        + 1
        + len(encoding.encode_ordinary("ann"))
    )
    assert count_chat_tokens(messages, "gpt-4o-mini") == expected


def test_tokens_chat_parts_tools_and_images() -> None:
    plain = count_chat_tokens([{"role": "user", "content": "look"}], "gpt-4o")
    with_image = count_chat_tokens(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
        "gpt-4o",
    )
    assert with_image == plain + IMAGE_UNKNOWN_SIZE
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    assert count_chat_tokens([{"role": "user", "content": "look"}], "gpt-4o", [tool]) > plain + 10
    call: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    assert count_chat_tokens(call, "gpt-4o") > 3 + 2 * 3


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [((1024, 1024), "high", 765), ((2048, 4096), "high", 1105), ((512, 512), "high", 255), ((4000, 3000), "low", 85)],
)
def test_tokens_image_tile_formula(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert estimate_image_tokens(*size, detail=detail) == tokens


def test_tokens_never_download(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO),
    }
    script = "from billing.tokens import count_text_tokens as c; print(c('hello world', 'gpt-4o'), c('hi', 'gpt-4'))"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1"]
    assert not (tmp_path / "empty-cache").exists()
