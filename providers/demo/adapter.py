"""The built-in demo provider: deterministic answers with a real usage block, no network.

It exists so a newcomer's first call works on a machine with no internet and no provider
key, and so tests and benchmarks have an upstream that costs nothing. ``demo/echo`` repeats
the last user message; ``demo/lorem`` writes lorem ipsum up to ``max_tokens`` words. A
"token" here is a word: simple, deterministic and documented.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from providers.base import ChatCall, ChatResult, StreamChunk, Usage
from providers.demo.convert import (
    answer_words,
    choice_count,
    completion_id,
    output_limit,
    prompt_words,
    usage_body,
)

_encoder = msgspec.json.Encoder()


class DemoAdapter:
    def __init__(self, name: str = "demo") -> None:
        self.name = name

    async def complete(self, call: ChatCall) -> ChatResult:
        words = answer_words(call)
        finish = "length" if len(words) >= output_limit(call) else "stop"
        n = choice_count(call)
        usage = Usage(input_tokens=prompt_words(call.body.get("messages")), output_tokens=n * len(words))
        body = {
            "id": completion_id(call),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.upstream_model,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": " ".join(words)},
                    "finish_reason": finish,
                }
                for index in range(n)
            ],
            "usage": usage_body(usage),
        }
        return ChatResult(body=body, usage=usage)

    async def open_stream(self, call: ChatCall) -> DemoStream:
        return DemoStream(call)

    async def aclose(self) -> None:
        return None


class DemoStream:
    def __init__(self, call: ChatCall) -> None:
        self._call = call

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        call = self._call
        words = answer_words(call)
        base = {
            "id": completion_id(call),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.upstream_model,
        }

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _encoder.encode({**base, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})

        model = call.upstream_model
        finish = "length" if len(words) >= output_limit(call) else "stop"
        n = choice_count(call)
        # One choice after the other, each with its own index, as OpenAI's chunks may come.
        for index in range(n):
            yield StreamChunk(data=chunk(index, {"role": "assistant", "content": ""}), model=model)
            for position, word in enumerate(words):
                text = word if position == 0 else " " + word
                yield StreamChunk(data=chunk(index, {"content": text}), text=text, model=model)
            yield StreamChunk(data=chunk(index, {}, finish), finished=True, model=model)
        # Always report usage, as the gateway asks every upstream to (stream_options.include_usage).
        usage = Usage(input_tokens=prompt_words(call.body.get("messages")), output_tokens=n * len(words))
        yield StreamChunk(
            data=_encoder.encode({**base, "choices": [], "usage": usage_body(usage)}), usage=usage, model=model
        )

    async def aclose(self) -> None:
        return None
