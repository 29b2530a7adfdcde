"""A fake third-party API for proxy-function tests: records what it was sent, answers by path.

Every request is recorded (method, raw path, query, every header, the body as bytes) before it
is answered, so a test can check exactly what a function forwarded. The path picks the answer:

==========================  ======================================================================
path                        answer
==========================  ======================================================================
``/json`` (and anything     200 ``{"ok": true, "path": …}`` (JSON, with a Content-Length)
else not below)
``/text``                   200 ``text/plain`` ``hello, world``
``/binary``                 200 ``application/octet-stream``: :data:`BINARY` (every byte value)
``/big``                    200 JSON of about 100 kB
``/gzip``                   200 gzip-compressed JSON with ``Content-Encoding: gzip``, whatever was asked
``/chunked``                200 ``text/plain`` in three chunks, no Content-Length
``/sse``                    an SSE stream: one event, then it waits for :meth:`release_stream`
                            (or 10 s), then two more events and the end
``/sleep``                  sleeps ``?s=`` seconds (default 2), then 200 JSON
``/status/{code}``          that status with ``{"status": code}`` and extra headers
``/redirect``               302 to ``/json`` (a client that followed it would be recorded twice)
``/headers``                200 JSON with ``Set-Cookie``, ``X-Upstream-Secret`` and other headers
``/break``                  200 with a Content-Length of 100 and only 10 bytes, then the connection
                            closes (a target failing mid-body)
==========================  ======================================================================
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.asgi import serve_lifespan
from tests.fakes.servers import ThreadedServer

BINARY = bytes(range(256)) * 4
BIG = json.dumps({"items": ["x" * 100] * 1000}).encode()
SSE_FIRST = b'data: {"n": 1}\n\n'
SSE_REST = [b'data: {"n": 2}\n\n', b"event: done\ndata: [DONE]\n\n"]


@dataclass
class Received:
    method: str
    path: str  # raw path as sent, percent-encoding kept
    query: str  # raw query string
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ThirdParty:
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _release: threading.Event = field(default_factory=threading.Event)
    stream_finished: threading.Event = field(default_factory=threading.Event)

    def release_stream(self) -> None:
        self._release.set()

    @property
    def last(self) -> Received:
        assert self.received, "the third party received nothing"
        return self.received[-1]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        header_list = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        headers: dict[str, str] = {}
        for name, value in header_list:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raw_path = scope.get("raw_path") or scope["path"].encode()
        self.received.append(
            Received(
                scope["method"],
                raw_path.decode("latin-1"),
                scope["query_string"].decode("latin-1"),
                headers,
                header_list,
                body,
            )
        )
        await self._answer(scope, send)

    async def _answer(self, scope: dict[str, Any], send: Any) -> None:
        path: str = scope["path"]
        query = parse_qs(scope["query_string"].decode())
        if path == "/text":
            await _reply(send, 200, b"hello, world", "text/plain; charset=utf-8")
        elif path == "/binary":
            await _reply(send, 200, BINARY, "application/octet-stream")
        elif path == "/big":
            await _reply(send, 200, BIG, "application/json")
        elif path == "/gzip":
            compressed = gzip.compress(b'{"compressed": true}')
            await _reply(send, 200, compressed, "application/json", [(b"content-encoding", b"gzip")])
        elif path == "/chunked":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for part in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/sse":
            await self._sse(send)
        elif path == "/sleep":
            await asyncio.sleep(float(query.get("s", ["2"])[0]))
            await _reply(send, 200, b'{"slept": true}', "application/json")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            await _reply(send, code, json.dumps({"status": code}).encode(), "application/json", [(b"x-upstream", b"1")])
        elif path == "/redirect":
            await _reply(send, 302, b"", "text/plain", [(b"location", b"/json")])
        elif path == "/headers":
            extra = [
                (b"set-cookie", b"session=upstream-cookie; Path=/"),
                (b"x-upstream-secret", b"internal-value"),
                (b"server", b"third-party/1.0"),
                (b"access-control-allow-origin", b"https://upstream.example"),
            ]
            await _reply(send, 200, b'{"ok": true}', "application/json", extra)
        elif path == "/break":
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
            raise RuntimeError("the fake target breaks off mid-body")
        else:
            await _reply(send, 200, json.dumps({"ok": True, "path": path}).encode(), "application/json")

    async def _sse(self, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": SSE_FIRST, "more_body": True})
        deadline = time.monotonic() + 10
        while not self._release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for event in SSE_REST:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.stream_finished.set()


async def _reply(
    send: Any, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def start_third_party(tls: tuple[Path, Path] | None = None) -> tuple[ThirdParty, ThreadedServer]:
    """The fake on 127.0.0.1 (with ``tls`` = (certificate, key) it speaks https)."""
    fake = ThirdParty()
    server = ThreadedServer(fake)
    if tls is not None:
        server.server.config.ssl_certfile = str(tls[0])
        server.server.config.ssl_keyfile = str(tls[1])
    server.start()
    fake.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.port}"
    return fake, server


def running_third_party() -> Iterator[ThirdParty]:
    fake, server = start_third_party()
    try:
        yield fake
    finally:
        fake.release_stream()
        server.stop()


def self_signed(directory: Path, host: str) -> tuple[Path, Path, ssl.SSLContext]:
    """A certificate for ``host`` (and 127.0.0.1), its key, and a client context trusting it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(cafile=str(cert_path))
    return cert_path, key_path, context
