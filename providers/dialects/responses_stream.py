"""Chat-completion chunks (as SSE bytes) → the Responses API's event stream, sans I/O.

The chat pipeline streams ``data: {chat.completion.chunk}`` events ending in ``data: [DONE]``;
a client of ``/v1/responses`` expects typed events, each ``event: <type>\\ndata: <json>`` with a
``sequence_number``::

    response.created, response.in_progress
    per text answer:   output_item.added, content_part.added, output_text.delta…,
                       output_text.done, content_part.done, output_item.done
    per tool call:     output_item.added, function_call_arguments.delta…,
                       function_call_arguments.done, output_item.done
    response.completed (or response.incomplete when the output cap cut it short)
    on an upstream failure instead: error, then response.failed

A text item closes when a tool call starts; tool calls stay open to the end (chat may
interleave their argument deltas). The final event carries the usage of the chat stream's usage
chunk and its ``_tollway`` block.
"""

from __future__ import annotations

from typing import Any

import msgspec

from providers.dialects.responses import (
    ResponsesRequest,
    function_call_item,
    incomplete_reason,
    item_id,
    message_item,
    output_text_part,
    response_shell,
    responses_usage,
)
from providers.sse import SSEParser

__all__ = ["ResponsesStreamTranslator"]

_encoder = msgspec.json.Encoder()


class _ToolCall:
    __slots__ = ("arguments", "call_id", "id", "name", "output_index")

    def __init__(self, output_index: int, item_id: str, call_id: str, name: str) -> None:
        self.output_index = output_index
        self.id = item_id
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []


class ResponsesStreamTranslator:
    """Feed it the chat stream's bytes in any pieces; it returns the Responses events' bytes."""

    def __init__(self, request: ResponsesRequest, response_id: str, created_at: int) -> None:
        self._response = response_shell(request, response_id, created_at)
        self._id = response_id
        self._parser = SSEParser()
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._text: list[str] | None = None  # the open text item's pieces
        self._text_index = -1
        self._tools: dict[int, _ToolCall] = {}  # by the chat delta's tool index
        self._finish_reason: Any = None
        self._usage: Any = None
        self._meta: Any = None
        self._error: dict[str, Any] | None = None
        self.started = False
        self.finished = False

    # -- input ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        out = self.start()
        for event in self._parser.feed(data):
            out += self._event(event.data)
        return out

    def close(self) -> list[bytes]:
        """The chat stream ended: the last events (the terminal one even without ``[DONE]``)."""
        out = self.start()
        for event in self._parser.close():
            out += self._event(event.data)
        return out + self.finish()

    def start(self) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        return [
            self._emit("response.created", response=self._response),
            self._emit("response.in_progress", response=self._response),
        ]

    def fail(self, message: str, code: str) -> None:
        """The stream broke outside the chunks (the terminal events follow on :meth:`finish`)."""
        if self._error is None:
            self._error = {"code": code, "message": message}

    def finish(self) -> list[bytes]:
        if self.finished:
            return []
        self.finished = True
        out = self.start() + self._close_text()
        for call in sorted(self._tools.values(), key=lambda c: c.output_index):
            out += self._close_tool(call)
        response = self._final()
        if self._error is not None:
            out.append(self._emit("error", code=self._error["code"], message=self._error["message"], param=None))
            return [*out, self._emit("response.failed", response=response)]
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return [*out, self._emit(kind, response=response)]

    # -- one chat event -------------------------------------------------------------------------

    def _event(self, data: bytes) -> list[bytes]:
        if self.finished:
            return []
        if data == b"[DONE]":
            return self.finish()
        try:
            chunk = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return []  # not JSON: nothing a chat stream sends, nothing to translate
        if not isinstance(chunk, dict):
            return []
        if isinstance(chunk.get("_tollway"), dict):
            self._meta = chunk["_tollway"]
            error = self._meta.get("error")
            if isinstance(error, dict):
                self.fail(str(error.get("message") or "upstream error"), str(error.get("code") or "server_error"))
        if isinstance(chunk.get("error"), dict):  # an OpenAI-style error event
            error = chunk["error"]
            self.fail(str(error.get("message") or "upstream error"), str(error.get("code") or "server_error"))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        out: list[bytes] = []
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        return out

    def _choice(self, choice: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._text_delta(content)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out += self._tool_delta(call)
        reason = choice.get("finish_reason")
        if reason is not None and reason != "error":
            self._finish_reason = reason
        return out

    def _text_delta(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._text is None:
            self._text, self._text_index = [], len(self._output)
            item = message_item(item_id("msg", self._id, self._text_index), "", "in_progress")
            self._output.append(item)
            out.append(self._emit("response.output_item.added", output_index=self._text_index, item=item))
            out.append(
                self._emit(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._text_index,
                    content_index=0,
                    part=output_text_part(""),
                )
            )
        self._text.append(text)
        out.append(
            self._emit(
                "response.output_text.delta",
                item_id=self._output[self._text_index]["id"],
                output_index=self._text_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _tool_delta(self, call: dict[str, Any]) -> list[bytes]:
        index = call.get("index", 0)
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        out: list[bytes] = []
        tool = self._tools.get(index) if isinstance(index, int) else None
        if tool is None:
            out += self._close_text()
            output_index = len(self._output)
            tool = _ToolCall(
                output_index,
                item_id("fc", self._id, output_index),
                str(call.get("id") or ""),
                str(function.get("name") or ""),
            )
            self._tools[index if isinstance(index, int) else -1 - output_index] = tool
            item = function_call_item(tool.id, tool.call_id, tool.name, "", "in_progress")
            self._output.append(item)
            out.append(self._emit("response.output_item.added", output_index=output_index, item=item))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            tool.arguments.append(arguments)
            out.append(
                self._emit(
                    "response.function_call_arguments.delta",
                    item_id=tool.id,
                    output_index=tool.output_index,
                    delta=arguments,
                )
            )
        return out

    # -- closing items ------------------------------------------------------------------------

    def _item_status(self) -> str:
        failed = self._error is not None
        return "incomplete" if failed or incomplete_reason(self._finish_reason) else "completed"

    def _close_text(self) -> list[bytes]:
        if self._text is None:
            return []
        text, index = "".join(self._text), self._text_index
        self._text = None
        item = message_item(self._output[index]["id"], text, self._item_status())
        self._output[index] = item
        part = output_text_part(text)
        return [
            self._emit(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._emit(
                "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
            ),
            self._emit("response.output_item.done", output_index=index, item=item),
        ]

    def _close_tool(self, call: _ToolCall) -> list[bytes]:
        arguments = "".join(call.arguments)
        item = function_call_item(call.id, call.call_id, call.name, arguments, "completed")
        self._output[call.output_index] = item
        return [
            self._emit(
                "response.function_call_arguments.done",
                item_id=call.id,
                output_index=call.output_index,
                name=call.name,
                arguments=arguments,
            ),
            self._emit("response.output_item.done", output_index=call.output_index, item=item),
        ]

    def _final(self) -> dict[str, Any]:
        response = dict(self._response)
        reason = incomplete_reason(self._finish_reason)
        if self._error is not None:
            response["status"] = "failed"
            response["error"] = {"code": "server_error", "message": self._error["message"]}
        else:
            response["status"] = "incomplete" if reason else "completed"
            response["incomplete_details"] = {"reason": reason} if reason else None
        response["output"] = list(self._output)
        response["usage"] = responses_usage(self._usage)
        if self._meta is not None:
            response["_tollway"] = self._meta
        return response

    def _emit(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"
