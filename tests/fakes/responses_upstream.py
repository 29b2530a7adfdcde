"""The Responses API side of the fake OpenAI server (``POST /v1/responses``).

Its answers are the golden files of tests/golden/responses (shaped like openai-python's
``Response`` and ``ResponseStreamEvent`` types) without the gateway's ``_tollway``, naming the
model the request named, as api.openai.com answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent.parent / "golden" / "responses"


def _upstream_shape(response: dict[str, Any], model: str, usage: Any) -> dict[str, Any]:
    shaped = {k: v for k, v in response.items() if k != "_tollway"}
    shaped["model"] = model
    if shaped.get("usage") is not None:
        shaped["usage"] = usage
    return shaped


def golden_usage() -> dict[str, Any]:
    usage: dict[str, Any] = json.loads((GOLDEN / "response_text.responses.json").read_text())["usage"]
    return usage


def response_body(model: str, usage: Any) -> dict[str, Any]:
    """The non-streamed answer: a ``response`` object with one message."""
    return _upstream_shape(json.loads((GOLDEN / "response_text.responses.json").read_text()), model, usage)


def stream_events(model: str, usage: Any) -> list[bytes]:
    """The streamed answer, one SSE event (``event:`` and ``data:`` lines) per item."""
    events: list[bytes] = []
    for block in (GOLDEN / "stream_text.responses.sse").read_text().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if line)
        if "data" not in lines:
            continue
        data = json.loads(lines["data"])
        if isinstance(data.get("response"), dict):
            data["response"] = _upstream_shape(data["response"], model, usage)
        events.append(f"event: {lines['event']}\ndata: {json.dumps(data)}\n\n".encode())
    return events
