"""The demo provider's answers, as pure functions of the call: what it says, how many
"tokens" (words) that is, and the OpenAI-shaped usage block it reports."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from providers.base import ChatCall, Usage

LOREM = [
    "Lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet,",
    "consectetur",
    "adipiscing",
    "elit,",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua.",
    "Ut",
    "enim",
    "ad",
    "minim",
    "veniam,",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "ut",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat.",
]
DEFAULT_MAX_WORDS = 64
_encoder = msgspec.json.Encoder()


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def prompt_words(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    # Like OpenAI's recipe: a few tokens of framing per message, plus the reply priming.
    return 3 + sum(3 + len(_message_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def answer_words(call: ChatCall) -> list[str]:
    body = call.body
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_WORDS
    limit = max(1, int(limit)) if isinstance(limit, int) else DEFAULT_MAX_WORDS
    if call.upstream_model == "lorem":
        words = [LOREM[i % len(LOREM)] for i in range(min(limit, DEFAULT_MAX_WORDS))]
    else:
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
        text = _message_text(last_user.get("content")) if last_user else ""
        words = (text.split() or ["(empty)"])[:limit]
    return words


def completion_id(call: ChatCall) -> str:
    digest = hashlib.sha256(_encoder.encode(call.body.get("messages"))).hexdigest()[:24]
    return f"chatcmpl-demo{digest}"


def output_limit(call: ChatCall) -> int:
    limit = call.body.get("max_completion_tokens") or call.body.get("max_tokens")
    return int(limit) if isinstance(limit, int) else DEFAULT_MAX_WORDS


def choice_count(call: ChatCall) -> int:
    """``n``: how many choices to answer (the gateway checked it is 1 to 128; anything else
    reaching the adapter directly is read as 1)."""
    n = call.body.get("n")
    return n if type(n) is int and 1 <= n <= 128 else 1


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
