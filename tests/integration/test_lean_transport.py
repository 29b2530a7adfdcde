"""providers.transport.LeanTransport against small asyncio servers on 127.0.0.1 that write the
HTTP/1.1 wire by hand: keep-alive reuse, the pool's limit, bodies framed every way, streams
closed early, every failure and the httpx exception it becomes, TLS with a certificate made here."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from providers.errors import UpstreamTimeout, UpstreamUnavailable
from providers.http import body_reads, build_client, close_reads, transport_error
from providers.transport import LeanTransport
from tests.fakes.servers import free_port
from tests.fakes.third_party import self_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Wire:
    """A server whose every connection runs ``handler``; counts connections and what they sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_client = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and body, kept); None once the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client += 1
            return None
        self.heads.append(head)
        headers = _header_lines(head)
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            await reader.readexactly(2)
        else:
            body = b""
        self.bodies.append(body)
        return head


def _header_lines(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Wire]:
    wire = Wire(handler)
    server = await asyncio.start_server(wire.serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    wire.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}"
    try:
        yield wire
    finally:
        server.close()


def keep_answering(answer: bytes = OK, *, delay_s: float = 0.0, gate: asyncio.Event | None = None) -> Handler:
    """Answers every request on a connection; after ``delay_s``, or once ``gate`` is set."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await wire_of(handler).request(reader) is not None:
            if delay_s:
                await asyncio.sleep(delay_s)
            if gate is not None:
                await gate.wait()
            writer.write(answer)
            await writer.drain()

    return handler


_WIRES: dict[Handler, Wire] = {}


def wire_of(handler: Handler) -> Wire:
    return _WIRES[handler]


@asynccontextmanager
async def upstream(
    handler: Handler, *, max_connections: int = 4, read_s: float = 5.0, pool_s: float = 5.0, **tls: ssl.SSLContext
) -> AsyncIterator[tuple[Wire, httpx.AsyncClient]]:
    async with serving(handler, tls.get("server")) as wire:
        _WIRES[handler] = wire
        transport = LeanTransport(limits=httpx.Limits(max_connections=max_connections), ssl_context=tls.get("client"))
        timeout = httpx.Timeout(5.0, read=read_s, pool=pool_s)
        async with httpx.AsyncClient(base_url=wire.url, transport=transport, timeout=timeout) as client:
            yield wire, client
        del _WIRES[handler]


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 2 s")


async def test_lean_transport_reuses_one_connection_for_sequential_requests() -> None:
    async with upstream(keep_answering()) as (wire, client):
        for _ in range(3):
            response = await client.post("/v1/chat", content=b'{"a":1}')
            assert response.status_code == 200 and response.content == b"ok"
            assert response.http_version == "HTTP/1.1" and response.reason_phrase == "OK"
    assert wire.connections == 1 and wire.bodies == [b'{"a":1}'] * 3


async def test_lean_transport_sends_host_and_length_exactly_once_on_both_client_paths() -> None:
    async with upstream(keep_answering()) as (wire, _client):
        client = build_client(
            wire.url + "/v1",
            headers={"authorization": "Bearer sk-x"},
            connect_timeout_s=5,
            read_timeout_s=5,
            max_connections=2,
        )
        await client.post("/chat", content=b"{}", headers={"content-type": "application/json"})  # short path
        await client.post("/chat", json={"a": 1})  # httpx's own path
        await client.get("/models")
        await client.aclose()
    for head in wire.heads:
        names = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:] if line]
        assert names.count(b"host") == 1 and names.count(b"authorization") == 1
    assert [head.split(b"\r\n")[0] for head in wire.heads] == [
        b"POST /v1/chat HTTP/1.1",
        b"POST /v1/chat HTTP/1.1",
        b"GET /v1/models HTTP/1.1",
    ]
    lengths = [_header_lines(head).get("content-length") for head in wire.heads]
    assert lengths == ["2", "7", None] and wire.bodies == [b"{}", b'{"a":1}', b""]


async def test_lean_transport_sends_a_streamed_request_body_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    async with upstream(keep_answering()) as (wire, client):
        response = await client.post("/upload", content=parts())
        files = await client.post("/upload", files={"file": ("a.txt", b"abc")})  # multipart: a length
    assert response.status_code == files.status_code == 200
    assert _header_lines(wire.heads[0])["transfer-encoding"] == "chunked" and wire.bodies[0] == b"hello world"
    assert int(_header_lines(wire.heads[1])["content-length"]) == len(wire.bodies[1]) and b"abc" in wire.bodies[1]


async def test_lean_transport_limits_connections_and_times_out_waiting_for_one() -> None:
    gate = asyncio.Event()
    handler = keep_answering(gate=gate)
    async with upstream(handler, max_connections=2, pool_s=0.2) as (wire, client):
        first = [asyncio.create_task(client.get("/")) for _ in range(2)]
        await until(lambda: len(wire.heads) == 2)
        with pytest.raises(httpx.PoolTimeout):
            await client.get("/")
        queued = asyncio.create_task(client.get("/", timeout=httpx.Timeout(5.0)))
        await asyncio.sleep(0.05)
        gate.set()
        responses = await asyncio.gather(*first, queued)
    assert [r.content for r in responses] == [b"ok"] * 3 and wire.connections == 2


async def test_lean_transport_a_cancelled_waiter_leaves_the_queue_and_the_slot_count_intact() -> None:
    gate = asyncio.Event()
    handler = keep_answering(gate=gate)
    async with upstream(handler, max_connections=1) as (wire, client):
        holder = asyncio.create_task(client.get("/"))
        await until(lambda: len(wire.heads) == 1)
        waiters = [asyncio.create_task(client.get("/")) for _ in range(3)]
        await asyncio.sleep(0.05)
        waiters[1].cancel()
        gate.set()
        served = await asyncio.gather(holder, waiters[0], waiters[2])
        assert [r.content for r in served] == [b"ok"] * 3 and waiters[1].cancelled()
        assert (await client.get("/")).content == b"ok"
        transport = client._transport
        assert isinstance(transport, LeanTransport)
        (pool,) = transport._pools.values()
        assert pool._count == 1 and not pool._waiters
    assert wire.connections == 1


async def test_lean_transport_reads_chunked_and_length_framed_bodies_and_keeps_repeated_headers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with upstream(keep_answering(chunked)) as (wire, client):
        response = await client.get("/")
        again = await client.get("/")
    assert response.content == again.content == b"hello world"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"] and wire.connections == 1


async def test_lean_transport_leaves_gzip_to_httpx() -> None:
    packed = gzip.compress(b'{"answer": 42}')
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed)
    async with upstream(keep_answering(answer)) as (_wire, client):
        assert (await client.get("/")).json() == {"answer": 42}
        async with client.stream("GET", "/") as streamed:
            assert b"".join([part async for part in streamed.aiter_bytes()]) == b'{"answer": 42}'


async def test_lean_transport_streams_a_large_body_intact_under_flow_control() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: past the buffer's high-water mark
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with upstream(keep_answering(answer)) as (wire, client):
        async with client.stream("GET", "/") as response:
            received = b""
            async for part in response.aiter_raw():
                received += part
                await asyncio.sleep(0)  # a slow reader
        assert received == body
        assert (await client.get("/")).content == body
    assert wire.connections == 1


async def test_lean_transport_closes_a_stream_closed_early_instead_of_reusing_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await wire_of(handler).request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(50):
                writer.write(b"6\r\nchunk\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async with upstream(handler) as (wire, client):
        async with client.stream("GET", "/") as response:
            async for _part in response.aiter_bytes():
                break
        async with client.stream("GET", "/") as response:
            assert (await response.aread()).count(b"chunk") == 50
    assert wire.connections == 2


async def test_lean_transport_reuses_a_stream_read_to_its_last_byte_but_not_past_it() -> None:
    """An SSE reader stops at its end marker and closes the stream without asking for more: when
    the body's end came with its last bytes, the connection goes back to the pool (a new TCP and
    TLS handshake per streamed request otherwise)."""
    events = b"data: 1\n\ndata: [DONE]\n\n"
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer += b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)
    async with upstream(keep_answering(answer)) as (wire, client):
        for _ in range(3):
            request = client.build_request("POST", "/v1/chat", content=b"{}")
            response = await client.send(request, stream=True)
            reads = body_reads(response)  # as SSEStream reads a stream
            while b"[DONE]" not in await anext(reads):
                pass
            await close_reads(reads)
            await response.aclose()
    assert wire.connections == 1


async def test_lean_transport_refuses_a_header_with_a_line_break_or_nul() -> None:
    values = [b"x\r\nX-Injected: 1", b"x\nGET / HTTP/1.1", b"x\rY", b"x\x00y"]
    async with upstream(keep_answering()) as (wire, client):
        for value in values:
            request = client.build_request("POST", "/v1/chat", content=b"{}")
            request.headers["x-forwarded-thing"] = value.decode("latin-1")
            with pytest.raises(httpx.LocalProtocolError) as caught:
                await client.send(request)
            assert value.decode("latin-1") not in str(caught.value)
        assert (await client.post("/v1/chat", content=b"{}")).content == b"ok"  # the pool is intact
    assert len(wire.heads) == 1 and b"Injected" not in wire.heads[0]


async def test_lean_transport_refused_connection_is_a_connect_error_mapped_as_unavailable() -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://127.0.0.1:{free_port()}/")
    assert isinstance(transport_error(caught.value, "openai"), UpstreamUnavailable)


async def test_lean_transport_read_timeout_on_headers_and_on_the_body() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire_of(silent).request(reader)
        await asyncio.sleep(3)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire_of(stalls).request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await asyncio.sleep(3)

    async with upstream(silent, read_s=0.2) as (_wire, client):
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.get("/")
        assert isinstance(transport_error(caught.value, "openai"), UpstreamTimeout)
    async with upstream(stalls, read_s=0.2) as (_wire, client), client.stream("GET", "/") as response:
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()


async def test_lean_transport_drops_a_kept_alive_connection_the_server_closed_while_idle() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire_of(once).request(reader)
        writer.write(OK)  # keep-alive by HTTP/1.1's default, then closed anyway

    async with upstream(once) as (wire, client):
        assert (await client.get("/")).content == b"ok"
        await asyncio.sleep(0.05)
        assert (await client.get("/")).content == b"ok"
    assert wire.connections == 2


async def test_lean_transport_retries_once_a_reused_connection_closed_as_the_request_went_out() -> None:
    async def one_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire = wire_of(one_then_hang_up)
        await wire.request(reader)
        writer.write(OK)
        await wire.request(reader)  # the next request is read, then the connection closed unanswered

    async with upstream(one_then_hang_up) as (wire, client):
        await client.get("/")
        # The second request goes out on the kept-alive connection, which the server then closes
        # without a byte of answer: the race a stale keep-alive connection loses.
        assert (await client.get("/")).content == b"ok"
    assert wire.connections == 2 and len(wire.heads) == 3


async def test_lean_transport_does_not_retry_a_fresh_connection_closed_unanswered() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire_of(hang_up).request(reader)

    async with upstream(hang_up) as (wire, client):
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.get("/")
        assert isinstance(transport_error(caught.value, "openai"), UpstreamUnavailable)
    assert wire.connections == 1


async def test_lean_transport_a_body_cut_short_is_an_error_and_one_without_length_ends_with_close() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire_of(cut).request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire_of(until_close).request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, until the end")
        await writer.drain()

    async with upstream(cut) as (_wire, client):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")
    async with upstream(until_close) as (_wire, client):
        assert (await client.get("/")).content == b"hello, until the end"


async def test_lean_transport_head_204_and_304_have_no_body_and_keep_the_connection() -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",  # to HEAD
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n" + OK,  # an interim answer first
        ]
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await wire_of(handler).request(reader) is not None:
            writer.write(next(answers))

    async with upstream(handler) as (wire, client):
        head = await client.head("/")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "1234"
        assert (await client.get("/")).status_code == 204
        assert (await client.get("/")).status_code == 304
        last = await client.get("/")
        assert last.status_code == 200 and last.content == b"ok"
    assert wire.connections == 1


async def test_lean_transport_a_cancelled_request_closes_its_connection() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await wire_of(slow).request(reader) is not None:
            await asyncio.sleep(0.3)
            writer.write(OK)

    async with upstream(slow) as (wire, client):
        call = asyncio.create_task(client.get("/"))
        await until(lambda: len(wire.heads) == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: wire.closed_by_client == 1)  # the server saw the connection close
        assert (await client.get("/")).content == b"ok"
    assert wire.connections == 2


async def test_lean_transport_aclose_closes_every_connection() -> None:
    async with upstream(keep_answering()) as (wire, client):
        await asyncio.gather(*(client.get("/") for _ in range(3)))
        await client.aclose()
        await until(lambda: wire.closed_by_client == wire.connections)


def _self_signed() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for localhost, and a client context trusting it."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file, client = self_signed(Path(directory), "localhost")
        server.load_cert_chain(cert_file, key_file)
    return server, client


async def test_lean_transport_speaks_https_to_a_trusted_certificate_and_refuses_an_untrusted_one() -> None:
    server, client_context = _self_signed()
    async with upstream(keep_answering(), server=server, client=client_context) as (wire, client):
        assert (await client.get("/")).content == b"ok"
        assert (await client.get("/")).content == b"ok"
        assert wire.connections == 1
        untrusted = ssl.create_default_context()  # the system's CAs: not this certificate
        async with httpx.AsyncClient(transport=LeanTransport(ssl_context=untrusted)) as other:
            with pytest.raises(httpx.ConnectError):
                await other.get(wire.url)


_CASES = sorted(name for name in globals() if name.startswith("test_lean_transport_"))


@pytest.mark.parametrize("case", _CASES)
def test_lean_transport_on_uvloop(case: str) -> None:
    """The gateway serves on uvloop, whose transports are not asyncio's classes (the first run of
    this transport under the gateway refused them): every test above again on a uvloop loop."""
    import uvloop

    test = globals()[case]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test())
