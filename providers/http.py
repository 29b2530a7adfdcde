"""The one shared httpx client per upstream, and the one wrapper for every upstream SSE stream.

httpx's own connection pool is the first bottleneck of a Python gateway (docs/performance.md:
three times the throughput with aiohttp's transport underneath), so clients get
``AiohttpTransport`` and keep httpx as the API. Timeouts are explicit: connect, and a read
timeout that applies per chunk read, i.e. an idle timeout for streams.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from providers.base import StreamChunk
from providers.errors import ProviderError, UpstreamTimeout, UpstreamUnavailable
from providers.sse import SSEEvent, SSEParser

# The headers the current request forwards to every upstream it calls (its request id, the
# caller's trace context), set once per request by the gateway (gateway/request_id.py) and read
# by each client as it sends: the adapters never see them, and a background call (a webhook,
# a price reload) made outside a request forwards nothing.
FORWARDED: ContextVar[Sequence[tuple[str, str]]] = ContextVar("tollway_forwarded_headers", default=())


async def _forward_headers(request: httpx.Request) -> None:
    for name, value in FORWARDED.get():
        request.headers[name] = value


def build_client(
    base_url: str,
    *,
    headers: Mapping[str, str],
    connect_timeout_s: float,
    read_timeout_s: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
    proxy: str = "",
) -> httpx.AsyncClient:
    """``proxy``: the operator's ``egress_proxy`` URL ("" for none); see :func:`_proxy` for where
    its credentials go (to the proxy alone)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    headers = dict(headers)
    aiohttp_proxy = None
    if proxy and transport is None:
        aiohttp_proxy, authorization = _proxy(proxy)
        if authorization and not base_url.startswith("https://"):
            # A plain-http upstream is asked through the proxy in absolute form, on the proxy's
            # own connection: its Proxy-Authorization travels with each request (a hop-by-hop
            # header the proxy consumes). aiohttp sends proxy_headers only on a CONNECT, and its
            # proxy_auth, which would do this, is deprecated.
            headers["Proxy-Authorization"] = authorization
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=5.0),
        limits=limits,
        # trust_env=False: an operator's HTTP(S)_PROXY must not silently reroute provider traffic;
        # a proxy is used only when configured as such (egress_proxy).
        transport=transport or AiohttpTransport(limits=limits, trust_env=False, proxy=aiohttp_proxy),
        trust_env=False,
        event_hooks={"request": [_forward_headers]},
    )


def _proxy(url: str) -> tuple[httpx.Proxy, str]:
    """The proxy without credentials in its URL (so no error message can show them), and its
    ``Proxy-Authorization`` value ("" without credentials). As a proxy header it is sent only in
    the CONNECT that opens the tunnel to an https upstream, never inside the tunnel."""
    parsed = httpx.URL(url)
    authorization = ""
    if parsed.username or parsed.password:
        token = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    headers = {"Proxy-Authorization": authorization} if authorization else {}
    return httpx.Proxy(parsed.copy_with(username=None, password=None), headers=headers), authorization


def _timed_out(error: httpx.HTTPError) -> bool:
    # httpx-aiohttp maps a refused connection (aiohttp.ClientConnectorError) to ConnectTimeout;
    # the aiohttp exception it chains tells the two apart.
    cause = error.__cause__
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return True
    if isinstance(cause, aiohttp.ClientConnectorError):
        return False
    return isinstance(error, httpx.TimeoutException)


def transport_error(error: httpx.HTTPError, provider: str) -> ProviderError:
    """Map an httpx failure to our tree by type, never by message."""
    if _timed_out(error):
        return UpstreamTimeout(f"upstream {provider} timed out", provider=provider)
    return UpstreamUnavailable(f"upstream {provider} is unreachable ({type(error).__name__})", provider=provider)


async def open_streaming(
    client: httpx.AsyncClient,
    request: httpx.Request,
    provider: str,
    refusal: Callable[[int, bytes], ProviderError],
) -> httpx.Response:
    """Send ``request`` for a streamed answer; a non-200 is read, closed and raised as
    ``refusal(status, body)`` (with the upstream's retry headers) before any byte reaches the client."""
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as error:
        raise transport_error(error, provider) from error
    if response.status_code != 200:
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        raise refusal(response.status_code, raw).passing_on(response.headers)
    return response


def _nothing() -> Iterable[StreamChunk]:
    return ()


class SSEStream:
    """An upstream's SSE body as OpenAI chunks, for every vendor: the vendor supplies only
    ``translate`` (one SSE event → the chunks to forward, raising a :class:`ProviderError` for
    an error event) and, if the vendor reports something only once the body has ended,
    ``finish``. ``end_marker`` is a ``data`` payload after which nothing more is read (OpenAI's
    ``[DONE]``). The response is closed on every exit, and transport failures mid-stream are
    mapped like any other."""

    def __init__(
        self,
        response: httpx.Response,
        provider: str,
        translate: Callable[[SSEEvent], Iterable[StreamChunk]],
        *,
        finish: Callable[[], Iterable[StreamChunk]] = _nothing,
        end_marker: bytes | None = None,
    ) -> None:
        self._response = response
        self._provider = provider
        self._translate = translate
        self._finish = finish
        self._end_marker = end_marker

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        parser = SSEParser()
        try:
            async for raw in self._response.aiter_bytes():
                for event in parser.feed(raw):
                    if event.data == self._end_marker:
                        return
                    for chunk in self._translate(event):
                        yield chunk
            for event in parser.close():
                if event.data == self._end_marker:
                    return
                for chunk in self._translate(event):
                    yield chunk
            for chunk in self._finish():
                yield chunk
        except httpx.HTTPError as error:
            raise transport_error(error, self._provider) from error
        finally:
            await self._response.aclose()

    async def batches(self) -> AsyncIterator[list[StreamChunk]]:
        """The same chunks, grouped by the upstream read that completed them (never empty): a
        gateway forwards a group as one write instead of one per event. Chunks translated
        before an error event of the same read come out before the error."""
        parser = SSEParser()
        try:
            async for raw in self._response.aiter_bytes():
                batch: list[StreamChunk] = []
                ended = False
                try:
                    for event in parser.feed(raw):
                        if event.data == self._end_marker:
                            ended = True
                            break
                        batch.extend(self._translate(event))
                except ProviderError:
                    if batch:
                        yield batch
                    raise
                if batch:
                    yield batch
                if ended:
                    return
            batch = []
            try:
                for event in parser.close():
                    if event.data == self._end_marker:
                        break
                    batch.extend(self._translate(event))
                else:
                    batch.extend(self._finish())
            except ProviderError:
                if batch:
                    yield batch
                raise
            if batch:
                yield batch
        except httpx.HTTPError as error:
            raise transport_error(error, self._provider) from error
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()
