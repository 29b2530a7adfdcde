"""The one shared httpx client per upstream, and the one wrapper for every upstream SSE stream.

httpx's own connection pool is the first bottleneck of a Python gateway (docs/performance.md:
three times the throughput with aiohttp's transport underneath), and aiohttp's per-request
machinery was the next one (bench/RESULTS.md), so clients get our own ``LeanTransport``
(providers/transport.py) and keep httpx as the API; through an egress proxy, ``AiohttpTransport``.
Timeouts are explicit: connect, and a read timeout that applies per chunk read, i.e. an idle
timeout for streams.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeGuard

import aiohttp
import httpx
from httpx._client import USE_CLIENT_DEFAULT, UseClientDefault
from httpx._types import (
    AuthTypes,
    CookieTypes,
    HeaderTypes,
    QueryParamTypes,
    RequestContent,
    RequestData,
    RequestExtensions,
    RequestFiles,
    TimeoutTypes,
)
from httpx_aiohttp import AiohttpTransport

from providers.base import StreamChunk
from providers.errors import ProviderError, UpstreamTimeout, UpstreamUnavailable
from providers.sse import SSEEvent, SSEParser
from providers.transport import LeanTransport

# The headers the current request forwards to every upstream it calls (its request id, the
# caller's trace context), set once per request by the gateway (gateway/request_id.py) and read
# by each client as it sends: the adapters never see them, and a background call (a webhook,
# a price reload) made outside a request forwards nothing.
FORWARDED: ContextVar[Sequence[tuple[str, str]]] = ContextVar("tollway_forwarded_headers", default=())


def _text_mapping(mapping: object) -> TypeGuard[dict[str, str]]:
    return isinstance(mapping, dict) and all(type(k) is str and type(v) is str for k, v in mapping.items())


_URLS_KEPT = 512  # paths per upstream (one per route, or per model where the path names it)


class UpstreamClient(httpx.AsyncClient):
    """One upstream's shared httpx client, with a short path through httpx for what the adapters
    send: a relative path, bytes or no body, a dict of headers.

    Profiled under load (bench/RESULTS.md), httpx's own work around the transport took a third
    of the gateway's CPU per chat request: merging the base URL and the headers anew, building
    ``Headers`` three times, the auth and redirect generators, the cookie jar. Here the merged
    URL is kept per path, the headers are put together once as bytes, and a plain send goes
    straight to the transport. Any other call (a full URL object, ``json=``, ``files=``, auth,
    redirects, event hooks added later) takes httpx's own path unchanged.

    Differences from httpx's path, all on purpose: a response's cookies are not kept (one
    client serves every tenant, so an upstream's ``Set-Cookie`` must not ride along on the next
    tenant's call), ``Response.elapsed`` is not set, and the headers of the request being served
    (:data:`FORWARDED`) are added when a request is built rather than by an event hook."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **options: Any) -> None:
        super().__init__(transport=transport, **options)
        self._upstream = transport
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> httpx.Request:
        plain = (
            isinstance(url, str)
            and (content is None or isinstance(content, bytes))
            and data is None
            and files is None
            and json is None
            and cookies is None
            and extensions is None
            and isinstance(timeout, UseClientDefault)
            and (params is None or _text_mapping(params))  # str to str: part of the kept URL's key
            and (headers is None or _text_mapping(headers))
        )
        if not plain:
            request = super().build_request(
                method,
                url,
                content=content,
                data=data,
                files=files,
                json=json,
                params=params,
                headers=headers,
                cookies=cookies,
                timeout=timeout,
                extensions=extensions,
            )
            for name, value in FORWARDED.get():
                request.headers[name] = value
            return request
        assert isinstance(url, str) and (content is None or isinstance(content, bytes))  # for mypy: `plain`
        assert headers is None or _text_mapping(headers)
        return self._plain_request(method.upper(), url, content, params, headers)

    def _plain_request(
        self, method: str, path: str, content: bytes | None, params: Any, headers: dict[str, str] | None
    ) -> httpx.Request:
        query = tuple(params.items()) if params else ()
        full = self._urls.get((path, query))
        if full is None:
            # httpx's own merge, once per path: the same URL its path would have sent to.
            full = super().build_request(method, path, params=params).url
            if len(self._urls) >= _URLS_KEPT:
                self._urls.clear()
            self._urls[(path, query)] = full
        forwarded = FORWARDED.get()
        # Precedence as on httpx's path: the client's headers, then the call's, then the served
        # request's (its hook set them last).
        forwarded_names = {name.lower() for name, _value in forwarded}
        given = [(name, value) for name, value in (headers or {}).items() if name.lower() not in forwarded_names]
        replaced = forwarded_names.union(name.lower() for name, _value in given)
        raw: list[tuple[bytes, bytes]] = [(b"Host", full.netloc)]
        raw += [(name, value) for name, value in self.headers.raw if name.lower().decode("latin-1") not in replaced]
        raw += [(name.encode("ascii"), value.encode("ascii")) for name, value in (*given, *forwarded)]
        if content is not None or method in ("POST", "PUT", "PATCH"):
            raw.append((b"Content-Length", str(len(content or b"")).encode("ascii")))
        request = httpx.Request(
            method,
            full,
            headers=raw,
            stream=httpx.ByteStream(content or b""),
            extensions={"timeout": self.timeout.as_dict()},
        )
        request.read()  # the body is in memory already: the transport sends it with its length
        return request

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        plain = (
            isinstance(auth, UseClientDefault)
            and isinstance(follow_redirects, UseClientDefault)
            and self.auth is None
            and not self.follow_redirects
            and not self.event_hooks["request"]
            and not self.event_hooks["response"]
            and not self.is_closed
        )
        if not plain:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        try:
            response = await self._upstream.handle_async_request(request)
        except httpx.RequestError as error:
            error.request = request  # as httpx's path does: callers may read it
            raise
        response.request = request
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


def build_client(
    base_url: str,
    *,
    headers: Mapping[str, str],
    connect_timeout_s: float,
    read_timeout_s: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
    proxy: str = "",
) -> UpstreamClient:
    """``proxy``: the operator's ``egress_proxy`` URL ("" for none); see :func:`_proxy` for where
    its credentials go (to the proxy alone). Without one, :class:`LeanTransport`; through one,
    aiohttp's (the lean transport speaks no proxy protocol)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    headers = dict(headers)
    if proxy and transport is None:
        aiohttp_proxy, authorization = _proxy(proxy)
        if authorization and not base_url.startswith("https://"):
            # A plain-http upstream is asked through the proxy in absolute form, on the proxy's
            # own connection: its Proxy-Authorization travels with each request (a hop-by-hop
            # header the proxy consumes). aiohttp sends proxy_headers only on a CONNECT, and its
            # proxy_auth, which would do this, is deprecated.
            headers["Proxy-Authorization"] = authorization
        transport = AiohttpTransport(limits=limits, trust_env=False, proxy=aiohttp_proxy)
    return UpstreamClient(
        base_url=base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=5.0),
        limits=limits,
        # trust_env=False: an operator's HTTP(S)_PROXY must not silently reroute provider traffic;
        # a proxy is used only when configured as such (egress_proxy).
        transport=transport or LeanTransport(limits=limits),
        trust_env=False,
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
    # httpx-aiohttp (behind an egress proxy) maps a refused connection (aiohttp.ClientConnectorError)
    # to ConnectTimeout; the aiohttp exception it chains tells the two apart. LeanTransport raises
    # ConnectError for a refusal and ConnectTimeout only for a timeout.
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


def body_reads(response: httpx.Response) -> AsyncIterator[bytes]:
    """A streamed response's body, read by read, for a caller that closes it (:func:`close_reads`).

    An undecoded body (no ``Content-Encoding``, the usual SSE upstream) is read from the
    transport's stream itself: httpx's ``aiter_bytes`` stacks two async generators over it,
    which a stream that stops at its end marker leaves unfinished, and closing the outer one
    does not close the inner ones. Each was then finalised by the event loop (a thread-safe
    wake-up and a task running its ``aclose``): three tasks per streamed request. An encoded
    body, or one already read, takes httpx's path."""
    stream = response.stream
    if (
        response.is_stream_consumed
        or response.is_closed
        or not isinstance(stream, httpx.AsyncByteStream)
        or "content-encoding" in response.headers
    ):
        return response.aiter_bytes()
    response.is_stream_consumed = True  # as aiter_raw marks it: a second read raises StreamConsumed
    return stream.__aiter__()


async def close_reads(reads: AsyncIterator[bytes]) -> None:
    """Close what :func:`body_reads` returned, now rather than when it is collected."""
    aclose = getattr(reads, "aclose", None)
    if aclose is not None:
        await aclose()


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
        reads = body_reads(self._response)
        try:
            async for raw in reads:
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
            try:
                await close_reads(reads)
            finally:
                await self._response.aclose()

    async def batches(self) -> AsyncIterator[list[StreamChunk]]:
        """The same chunks, grouped by the upstream read that completed them (never empty): a
        gateway forwards a group as one write instead of one per event. Chunks translated
        before an error event of the same read come out before the error."""
        parser = SSEParser()
        reads = body_reads(self._response)
        try:
            async for raw in reads:
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
            try:
                await close_reads(reads)
            finally:
                await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()
