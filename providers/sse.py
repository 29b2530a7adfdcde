"""An incremental Server-Sent Events parser over bytes.

Upstream bodies arrive in arbitrary pieces (a line, an event, or half a UTF-8 character), so
the parser keeps partial lines between ``feed`` calls and only ever splits on line
terminators (``\\n``, ``\\r\\n`` or a lone ``\\r``, per the SSE spec). Data stays bytes: for
OpenAI-format upstreams the gateway forwards it without decoding.
"""

from __future__ import annotations

import msgspec


class SSEEvent(msgspec.Struct, frozen=True):
    data: bytes
    event: str = ""
    id: str = ""


class SSEParser:
    __slots__ = ("_buffer", "_data", "_event", "_has_data", "_id")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._has_data = False
        self._event = ""
        self._id = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return every event completed by them (possibly none)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SSEEvent] = []
        start = 0
        length = len(buffer)
        while start < length:
            newline = buffer.find(b"\n", start)
            carriage = buffer.find(b"\r", start, newline if newline != -1 else length)
            if carriage != -1:
                if carriage == length - 1:
                    break  # a lone \r at the end may be the first half of \r\n: wait
                end = carriage
                step = 2 if buffer[carriage + 1 : carriage + 2] == b"\n" else 1
            elif newline != -1:
                end, step = newline, 1
            else:
                break
            self._line(buffer[start:end], events)
            start = end + step
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """End of body: a final event not followed by a blank line is still dispatched."""
        events: list[SSEEvent] = []
        if self._buffer:
            self._line(self._buffer.rstrip(b"\r"), events)
            self._buffer = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                events.append(SSEEvent(data=b"\n".join(self._data), event=self._event, id=self._id))
            self._data = []
            self._has_data = False
            self._event = ""
            return
        if line[0] == 0x3A:  # ":" comment / keep-alive
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            self._id = value.decode("utf-8", "replace")
