"""A forward HTTP proxy on 127.0.0.1 for tests of ``egress_proxy``: it records what went through it.

It speaks the two forms a client uses with a proxy: absolute-form requests for ``http://`` targets
(``POST http://host:port/path HTTP/1.1``, rewritten to origin-form and sent on with
``Connection: close``, so every request is its own connection and is recorded) and ``CONNECT``
tunnels for ``https://`` targets (recorded, then piped blindly). With ``credentials`` set, a request
without the matching ``Proxy-Authorization`` gets a 407; the header never travels further.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.fakes.servers import free_port

_AUTH = b"proxy-authorization"
_REFUSED = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_HOP_HEADERS = frozenset({b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive"})


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    target: str  # the absolute URL, or host:port for CONNECT
    proxy_authorization: str


class HttpProxy:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.requests: list[ProxiedRequest] = []
        self._expected = (
            "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode() if credentials else None
        )
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=5)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        request_line, *header_lines = head[:-4].split(b"\r\n")
        method, target, version = request_line.decode("latin-1").split(" ", 2)
        headers = [line.split(b":", 1) for line in header_lines if b":" in line]
        auth = next((v.strip().decode("latin-1") for k, v in headers if k.strip().lower() == _AUTH), "")
        self.requests.append(ProxiedRequest(method, target, auth))
        if self._expected is not None and auth != self._expected:
            writer.write(_REFUSED)
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(target)
            upstream_reader, upstream_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kept = [k + b":" + v for k, v in headers if k.strip().lower() not in _HOP_HEADERS]
            upstream_writer.write(
                f"{method} {path} {version}\r\n".encode("latin-1")
                + b"\r\n".join([*kept, b"Connection: close"])
                + b"\r\n\r\n"
            )
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()
