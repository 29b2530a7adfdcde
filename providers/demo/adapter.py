"""The built-in demo provider: deterministic answers with a real usage block, no network.

It exists so a newcomer's first call works on a machine with no internet and no provider
key, and so tests and benchmarks have an upstream that costs nothing. ``demo/echo`` repeats
the last user message; ``demo/lorem`` writes lorem ipsum up to ``max_tokens`` words. A
"token" here is a word: simple, deterministic and documented.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from providers.base import ChatCall, ChatResult, StreamChunk, Usage

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


def _completion_id(call: ChatCall) -> str:
    digest = hashlib.sha256(_encoder.encode(call.body.get("messages"))).hexdigest()[:24]
    return f"chatcmpl-demo{digest}"


class DemoAdapter:
    def __init__(self, name: str = "demo") -> None:
        self.name = name

    async def complete(self, call: ChatCall) -> ChatResult:
        words = answer_words(call)
        finish = "length" if len(words) >= _limit(call) else "stop"
        usage = Usage(input_tokens=prompt_words(call.body.get("messages")), output_tokens=len(words))
        body = {
            "id": _completion_id(call),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words)},
                    "finish_reason": finish,
                }
            ],
            "usage": _usage_body(usage),
        }
        return ChatResult(body=body, usage=usage)

    async def open_stream(self, call: ChatCall) -> DemoStream:
        return DemoStream(call)

    async def aclose(self) -> None:
        return None


def _limit(call: ChatCall) -> int:
    limit = call.body.get("max_completion_tokens") or call.body.get("max_tokens")
    return int(limit) if isinstance(limit, int) else DEFAULT_MAX_WORDS


def _usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


class DemoStream:
    def __init__(self, call: ChatCall) -> None:
        self._call = call

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        call = self._call
        words = answer_words(call)
        base = {
            "id": _completion_id(call),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.upstream_model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _encoder.encode({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        yield StreamChunk(data=chunk({"role": "assistant", "content": ""}))
        for index, word in enumerate(words):
            text = word if index == 0 else " " + word
            yield StreamChunk(data=chunk({"content": text}), text=text)
        yield StreamChunk(data=chunk({}, "stop"))
        # Always report usage, as the gateway asks every upstream to (stream_options.include_usage).
        usage = Usage(input_tokens=prompt_words(call.body.get("messages")), output_tokens=len(words))
        yield StreamChunk(data=_encoder.encode({**base, "choices": [], "usage": _usage_body(usage)}), usage=usage)

    async def aclose(self) -> None:
        return None
