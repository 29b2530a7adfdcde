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
        if b"\r" in buffer:
            lines = self._split_any(buffer)
        else:
            # Lines ended by \n alone, as nearly every upstream writes them: split in C. The
            # last piece is the partial line to keep (b"" when the bytes end with a line).
            lines = buffer.split(b"\n")
            self._buffer = lines.pop()
        return self._lines(lines)

    def _split_any(self, buffer: bytes) -> list[bytes]:
        """The complete lines of ``buffer`` under any of the three terminators; keeps the rest."""
        lines: list[bytes] = []
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
            lines.append(buffer[start:end])
            start = end + step
        self._buffer = buffer[start:]
        return lines

    def close(self) -> list[SSEEvent]:
        """End of body: a final event not followed by a blank line is still dispatched."""
        rest, self._buffer = self._buffer.rstrip(b"\r"), b""
        return self._lines([rest, b""] if rest else [b""])

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        """Apply complete lines to the event being read; the events they complete. One loop
        over all the lines of a read, the event's fields in locals (a call per line was the
        parser's largest cost)."""
        events: list[SSEEvent] = []
        data, has_data, event, last_id = self._data, self._has_data, self._event, self._id
        for line in lines:
            if line.startswith(b"data: "):  # the usual line first
                data.append(line[6:])
                has_data = True
                continue
            if not line:  # a blank line ends the event
                if has_data:
                    events.append(SSEEvent(b"\n".join(data), event, last_id))
                    data = []
                    has_data = False
                event = ""
                continue
            if line[0] == 0x3A:  # ":" comment / keep-alive
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
                has_data = True
            elif name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"id":
                last_id = value.decode("utf-8", "replace")
        self._data, self._has_data, self._event, self._id = data, has_data, event, last_id
        return events
